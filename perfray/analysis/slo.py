"""The report's service-level objectives: the config's ``slo:`` goals and stretch goals, judged per cell (or per
phase) on intervals as targets are. No ``slo:`` in the config, no table: the report never invents goals."""

from __future__ import annotations

from perfray.analysis.intervals import measured_text


def _mark(verdict: dict | None) -> str:
    if verdict is None:
        return "–"
    return "✓" if verdict["passed"] else ("?" if verdict.get("inconclusive") else "✗")


def slo_section(verdicts: list[dict]) -> list[str]:
    """A row per (cell or phase, metric): measured with its interval, the goal and the stretch goal, each met (✓),
    missed (✗) or inconclusive (?)."""
    judged = [v for v in verdicts if v.get("slo")]
    if not judged:
        return []
    lines = ["", "## Service-level objectives (goal / stretch)", "",
             "| cell | phase | metric | measured | goal | | stretch | |", "|---|---|---|---|---|---|---|---|"]
    pending: dict[tuple, dict] = {}
    for v in judged:
        key = (v.get("cell"), v.get("phase") or "", v["metric"])
        pending.setdefault(key, {})[v["slo"]] = v
    for (cell, phase, metric), kinds in pending.items():
        goal, stretch = kinds.get("goal"), kinds.get("stretch")
        first = goal or stretch
        lines.append(f"| {cell if cell != -1 else 'none matched'} | {phase} | {metric} | {measured_text(first)} | "
                     f"{goal['bound'] if goal else '–'} | {_mark(goal)} | {stretch['bound'] if stretch else '–'} | "
                     f"{_mark(stretch)} |")
    lines += ["", "A goal is met only when its whole 95% interval meets it (`?`: the interval straddles the bound, "
              "counted as not met). A missed goal fails the run, like a must-pass target; a stretch goal is "
              "reported only."]
    return lines
