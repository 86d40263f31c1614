"""The evidence sections of a campaign's ``validation.md``, each from its sub-runs' recorded requests and summaries:

- **burst recovery**: a cell's load phases side by side (rate, p99 with its interval, failures) and the seconds
  after a burst until every one-second window is back within the steady phase's level;
- **sustained stability**: the p99 of each window of a cell's ``sustained`` phase (a minute when it runs 5 minutes
  or more, a tenth of it otherwise) and a drift test on them: Kendall's trend test and the Theil–Sen slope with its
  95% interval; "drifts" only when the trend is significant (p < 0.05) and moves p99 by >= 10% over the phase;
- **speedup vs the baseline at matched recall**, with its 95% interval (``RATIO_METRICS``);
- **where the p99 budget goes**: per stage (the wait before the request was sent, the search actor's queue, the
  vector search, the graph, the policy store, and the rest: the call around them), its p50 and p99 and its mean
  share of the slowest 1% of requests, whose parts add up; with the stage that grew most from the lowest offered
  rate to the cell that broke (a capacity search's first broken step), i.e. the one that breaks first."""

from __future__ import annotations

import math

import numpy as np

from perfray.analysis.runs import Run
from perfray.schema import FAILURES

DRIFT_P = 0.05  # Kendall's trend test
DRIFT_MAGNITUDE = 0.10  # and the Theil-Sen change over the phase, relative to the windows' median p99
MIN_WINDOWS = 5
WINDOW_S = 60.0  # per minute, when the phase runs at least MIN_WINDOWS minutes
# (row column or None for the rest, name): the parts of a request's latency, in the order they happen
STAGES = (("schedule_lag_ns", "wait before send (batch window, load actor)"), ("queue_ns", "search actor queue"),
          ("vector_ns", "vector search"), ("graph_ns", "graph (Neo4j)"), ("policy_ns", "policy (PostgreSQL)"),
          (None, "the call around them (network, Ray, client)"))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _num(value, fmt: str = ".3g") -> str:
    return format(value, fmt) if _finite(value) else "–"


def phase_seconds(run: Run, cell: int, phase: str) -> float:
    """How long the cell's ``phase`` was planned to run (its load's phase plan)."""
    from perfray.config import Workload

    plan = Workload.model_validate(run.manifest["cells"][cell]["workload"]).load.phase_plan()
    return next((p.duration_s for p in plan if p.name == phase), math.nan)


def _with_interval(row: dict, metric: str) -> str:
    lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    text = _num(row.get(metric))
    return text + (f" ({_num(lo)}–{_num(hi)})" if _finite(row.get(metric)) and lo is not None and hi is not None
                   else "")


# ---------------------------------------------------------------------------------------------------- bursts

def burst_lines(title: str, run: Run) -> list[str]:
    """A table per cell whose measured phases ran at more than one rate: each phase's rate, p99 (95% interval),
    failures, and the recovery after a faster phase."""
    lines = []
    by_cell: dict[int, list[dict]] = {}
    for row in run.phases or []:
        if row.get("measured"):
            by_cell.setdefault(row["cell"], []).append(row)
    for cell, rows in sorted(by_cell.items()):
        if len({round(r["target_qps"], 6) for r in rows}) < 2:
            continue
        lines += ["", f"**{title}, cell {cell}**", "", "| phase | offered QPS | p99 ms (95% CI) | failed | "
                  "recovery |", "|---|---|---|---|---|"]
        for i, r in enumerate(rows):
            faster_before = i > 0 and rows[i - 1]["target_qps"] > r["target_qps"]
            recovery = ("–" if not faster_before else f"{r['recovery_s']:.0f} s" if _finite(r.get("recovery_s"))
                        else f"not within the phase ({phase_seconds(run, cell, r['phase']):.0f} s)")
            lines.append(f"| {r['phase']} | {_num(r.get('offered_qps'), ',.0f')} | {_with_interval(r, 'p99_ms')} | "
                         f"{_num(r.get('failure_rate'), '.2%')} | {recovery} |")
    return lines


# ---------------------------------------------------------------------------------------------- stability

def drift(at_s: np.ndarray, latency_ms: np.ndarray, failed: np.ndarray, span_s: float) -> dict:
    """The p99 of each window of a phase (``at_s``: seconds since its start, by intended time; ``latency_ms`` of its
    answered requests, NaN for a failed one) and a drift test on them."""
    from scipy.stats import kendalltau, theilslopes

    window = WINDOW_S if span_s >= MIN_WINDOWS * WINDOW_S else span_s / 10
    n = max(int(math.floor(span_s / window + 1e-9)), 1) if window > 0 else 0
    index = np.minimum((at_s // window).astype(np.int64), n - 1) if n else np.empty(0, dtype=np.int64)
    p99, fail = [], []
    for w in range(n):
        inside = index == w
        answered = latency_ms[inside & ~failed & ~np.isnan(latency_ms)]
        p99.append(float(np.percentile(answered, 99)) if answered.size else math.nan)
        fail.append(float(failed[inside].mean()) if inside.any() else math.nan)
    out = {"window_s": window, "p99_ms": p99, "failure_rate": fail, "verdict": "too short to test"}
    values = np.array(p99)
    mid = (np.arange(n) + 0.5) * window
    keep = np.isfinite(values)
    if keep.sum() < MIN_WINDOWS:
        return out
    slope, _, low, high = theilslopes(values[keep], mid[keep], alpha=0.95)
    tau = kendalltau(mid[keep], values[keep])
    change = slope * span_s / float(np.median(values[keep]))
    out.update(slope_ms_per_min=slope * 60, slope_ci=[low * 60, high * 60], tau=float(tau.statistic),
               p_value=float(tau.pvalue), change=change)
    if tau.pvalue < DRIFT_P and abs(change) >= DRIFT_MAGNITUDE:
        out["verdict"] = "drifts up" if slope > 0 else "drifts down"
    else:
        out["verdict"] = "stable"
    return out


def stability_lines(title: str, run: Run, phase: str = "sustained") -> list[str]:
    """The drift test of every cell's ``phase`` in a run of one cell (a sweep's cells are other questions)."""
    if len(run.summary) != 1 or not any(r.get("phase") == phase for r in run.phases or []):
        return []
    cell = run.summary[0]["cell"]
    frame = run.frame(cell)
    inside = frame.isin("phase", [phase])
    intended = frame.ints("intended_ns")[inside]
    if intended.size == 0:
        return []
    first = int(intended.min())
    status_failed = frame.isin("status", FAILURES)[inside]
    latency = frame.floats("latency_ns")[inside] / 1e6
    result = drift((intended - first) / 1e9, latency, status_failed, phase_seconds(run, cell, phase))
    unit = "minute" if result["window_s"] == WINDOW_S else f"{result['window_s']:.3g} s"
    lines = ["", f"**{title}, cell {cell}, phase {phase}: {result['verdict']}**", "",
             f"- p99 ms per {unit}: " + ", ".join(_num(v) for v in result["p99_ms"]),
             f"- failed per {unit}: " + ", ".join(_num(v, '.1%') for v in result["failure_rate"])]
    if "slope_ms_per_min" in result:
        lo, hi = result["slope_ci"]
        lines.append(f"- Theil–Sen slope {result['slope_ms_per_min']:+.3g} ms/min (95% CI {lo:+.3g} to {hi:+.3g}), "
                     f"{result['change']:+.0%} over the phase; Kendall τ {result['tau']:+.2f}, p = "
                     f"{result['p_value']:.3g}.")
    return lines


# ----------------------------------------------------------------------------------------------- speedups

def speedup_lines(title: str, run: Run) -> list[str]:
    """Each cell compared with its baseline at matched recall: p99 both sides, the speedup with its interval."""
    rows = [r for r in run.summary if _finite(r.get("speedup_p99_vs_baseline"))
            and r.get("system_name") != r.get("baseline_name")]
    if not rows:
        return []
    refs = {r["cell"]: r for r in run.summary}
    lines = ["", f"**{title}**", "", "| cell | system | baseline at | p99 ms | baseline p99 ms | speedup p99 (95% CI) | "
             "recall / baseline's |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        matched = {True: "matched", False: "⚠ not matched", None: ""}[r.get("recall_matched")]
        base = next((b for b in refs.values() if b.get("system_name") == r.get("baseline_name")
                     and b.get("search_params", "") == r.get("baseline_search_params")), {})
        lines.append(f"| {r['cell']} | {r.get('system_name')} | {r.get('baseline_search_params') or '–'} | "
                     f"{_with_interval(r, 'p99_ms')} | {_with_interval(base, 'p99_ms')} | "
                     f"{_with_interval(r, 'speedup_p99_vs_baseline')}x | {_num(r.get('recall_mean'), '.3f')} / "
                     f"{_num(r.get('baseline_recall'), '.3f')} {matched} |")
    return lines


# ------------------------------------------------------------------------------------------------- budget

def stage_budget(latency_ns: np.ndarray, parts: dict[str, np.ndarray]) -> dict:
    """Per part (``parts``: its span per request, NaN where the request had none; the rest is computed): p50, p99
    and the mean over the slowest 1% of requests (those at or above the p99), whose parts add up to their mean."""
    keep = np.isfinite(latency_ns)
    latency = latency_ns[keep]
    spans = {name: np.nan_to_num(v[keep]) for name, v in parts.items()}
    spans["rest"] = np.maximum(latency - sum(spans.values(), np.zeros_like(latency)), 0.0)
    if latency.size == 0:
        return {"requests": 0}
    tail = latency >= np.percentile(latency, 99)
    out = {"requests": int(latency.size), "p99_ms": float(np.percentile(latency, 99)) / 1e6,
           "tail_ms": float(latency[tail].mean()) / 1e6, "stages": {}}
    for name, v in spans.items():
        out["stages"][name] = {"p50_ms": float(np.percentile(v, 50)) / 1e6, "p99_ms": float(np.percentile(v, 99)) / 1e6,
                               "tail_ms": float(v[tail].mean()) / 1e6}
    return out


def cell_budget(run: Run, cell: int) -> dict:
    """``stage_budget`` of a cell's measured ok requests that ran every stage (cache hits ran none)."""
    frame, measured = run.measured(cell)
    ok = measured & frame.isin("status", ("ok",))
    present = [column for column, _ in STAGES if column and frame.has(column)]
    spans = {c: frame.floats(c)[ok] for c in present}
    ran = np.ones(int(ok.sum()), dtype=bool)
    for c in present:
        if c != "schedule_lag_ns" and not np.isnan(spans[c]).all():
            ran &= ~np.isnan(spans[c])
    return stage_budget(frame.floats("latency_ns")[ok][ran], {c: v[ran] for c, v in spans.items()})


def _rate(run: Run, cell: int) -> float:
    row = next((r for r in run.summary if r["cell"] == cell), {})
    return row.get("offered_qps", math.nan)


def budget_cells(run: Run) -> tuple[int | None, int | None]:
    """(the cell whose budget is shown, the cell at the lowest rate to compare it with): for a capacity search the
    first step that broke (else its fastest) against its first step; otherwise the cell with the highest p99
    against the one with the lowest offered rate."""
    capacity = run.manifest.get("capacity")
    if capacity:
        searches = [search["steps"] for search in capacity.get("searches", []) if search.get("steps")]
        if not searches:
            return None, None
        steps = next((steps for steps in searches if any(s.get("outcome") == "breaks" for s in steps)), searches[-1])
        broke = next((s for s in steps if s.get("outcome") == "breaks"), max(steps, key=lambda s: s["qps"]))
        return broke["cell"], min(steps, key=lambda s: s["qps"])["cell"]
    rows = [r for r in run.summary if _finite(r.get("p99_ms"))]
    if not rows:
        return None, None
    return max(rows, key=lambda r: r["p99_ms"])["cell"], min(rows, key=lambda r: r.get("offered_qps", 0))["cell"]


def budget_lines(title: str, run: Run, goal_ms: float | None) -> list[str]:
    """The per-stage budget of the cell closest to breaking, and the stage that grew most as the rate rose."""
    shown, low = budget_cells(run)
    if shown is None:
        return []
    budget = cell_budget(run, shown)
    if not budget.get("requests") or len(budget["stages"]) < 3:  # the wait and the rest alone: no stages
        return []
    names = dict(STAGES)
    goal = f" (goal {goal_ms:g} ms)" if goal_ms else ""
    lines = ["", f"**{title}, cell {shown} at {_num(_rate(run, shown), ',.0f')} QPS: p99 "
             f"{budget['p99_ms']:.3g} ms{goal}; the slowest 1% took {budget['tail_ms']:.3g} ms on average**", "",
             "| stage | p50 ms | p99 ms | in the slowest 1%: ms | share |", "|---|---|---|---|---|"]
    for name, s in budget["stages"].items():
        share = s["tail_ms"] / budget["tail_ms"] if budget["tail_ms"] > 0 else math.nan
        lines.append(f"| {names.get(name, names[None])} | {s['p50_ms']:.3g} | {s['p99_ms']:.3g} | "
                     f"{s['tail_ms']:.3g} | {_num(share, '.0%')} |")
    largest = max(budget["stages"], key=lambda n: budget["stages"][n]["tail_ms"])
    lines.append("")
    if low is not None and low != shown and _rate(run, low) < _rate(run, shown):
        base = cell_budget(run, low)
        if base.get("requests"):
            grew = {n: s["tail_ms"] - base["stages"].get(n, {}).get("tail_ms", 0.0) for n, s in budget["stages"].items()}
            first = max(grew, key=grew.get)
            lines.append(f"Breaks first: **{names.get(first, names[None])}**: its share of the slowest 1% grew by "
                         f"{grew[first]:.3g} ms from {_num(_rate(run, low), ',.0f')} QPS (cell {low}) to "
                         f"{_num(_rate(run, shown), ',.0f')} QPS, more than any other stage.")
            return lines
    lines.append(f"The largest part of the slowest 1%: **{names.get(largest, names[None])}** (which stage breaks "
                 "first needs a lower rate that held: a capacity search from below the break).")
    return lines


def evidence_lines(subruns: list[tuple[str, Run]], goal_ms: dict[str, float | None]) -> list[str]:
    """The sections after the verdict, over the campaign's sub-runs (``(title, run)``; ``goal_ms``: each title's
    p99 goal), each only where some sub-run has what it needs."""
    sections = (("Burst recovery", "A phase's load phases at more than one rate: p99 (95% CI), failures, and "
                 "the seconds after a faster phase until every 1 s window is back within 1.5x (+1 ms) of the steady "
                 "p99 with no failure", burst_lines),
                ("Sustained stability", f"The p99 per window of a one-cell phase's `sustained` phase and a drift test: "
                 f"drifts when Kendall's trend test gives p < {DRIFT_P:g} and the Theil–Sen slope moves p99 by "
                 f">= {DRIFT_MAGNITUDE:.0%} over the phase", stability_lines),
                ("Speedup vs the baseline at matched recall", "The p99 of the baseline at its fastest setting whose "
                 "recall comes within 0.01 of the cell's, over the cell's; the interval holds both cells' p99 "
                 "intervals at once (95%)", speedup_lines),
                ("Where the p99 budget goes", "Per stage, over the ok requests that ran every stage: p50, p99 and "
                 "the mean over the slowest 1% (those parts add up to their latency; stage p99s do not add)",
                 lambda t, r: budget_lines(t, r, goal_ms.get(t))))
    out = []
    for heading, what, build in sections:
        body = [line for title, run in subruns for line in build(title, run)]
        if body:
            out += ["", f"## {heading}", "", what + "."] + body
    return out
