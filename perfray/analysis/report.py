"""``perfray report RUN_DIR``: report.md + PNG figures beside it, and the verdict table.

Exit 0 when every must-pass target is met, 1 when one is not (like a failing test), 2 on bad input."""

from __future__ import annotations

import math
from pathlib import Path

from perfray.analysis import figures
from perfray.analysis.runs import Run, open_run
from perfray.analysis.summary import check_targets
from perfray.config import TargetSpec

# The seed's service-level objectives: (metric, bound, goal, stretch, higher is better).
SLOS = (
    ("p99_ms", "p99 latency (ms)", 10.0, 8.7, False),
    ("achieved_qps", "sustained QPS", 7_000.0, 10_000.0, True),
    ("error_rate", "error rate", 0.01, 0.001, False),
)


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _meets(value: float, bound: float, higher: bool) -> bool:
    if value is None or math.isnan(value):
        return False
    return value >= bound if higher else value < bound


def verdicts(run: Run) -> list[dict]:
    targets = [TargetSpec.model_validate(t) for t in run.manifest.get("config", {}).get("targets", [])]
    return check_targets(run.summary, targets)


def render(run: Run, figure_paths: list[Path]) -> str:
    m = run.manifest
    gpus = m.get("gpus", {})
    simulated = gpus.get("simulated")
    lines = [f"# perfray report: {m.get('run_id', run.path.name)}", ""]
    if simulated:
        lines += ["> **Simulated GPUs.** This run used Ray logical GPUs served by a CPU backend: its latency "
                  "and scaling figures describe this machine, not GPU hardware.", ""]
    lines += [
        "| | |", "|---|---|",
        f"| status | {m.get('status')} |",
        f"| config | {m.get('name')} ({len(m.get('cells', []))} cells) |",
        f"| GPUs | {', '.join(f'{n} x {d}' for d, n in (gpus.get('models') or {}).items()) or '–'}"
        f"{' (simulated)' if simulated else ''} |",
        f"| Ray | {'embedded' if m.get('ray', {}).get('embedded') else m.get('ray', {}).get('address')}, "
        f"resources {m.get('ray', {}).get('resources', {}).get('CPU', '–')} CPU / "
        f"{m.get('ray', {}).get('resources', {}).get('GPU', '–')} GPU |",
        f"| host | {m.get('host', {}).get('hostname')} ({m.get('host', {}).get('cpus')} CPUs) |",
        "| versions | " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()) + " |",
        f"| git commit | {m.get('git_commit') or '–'} |",
        f"| request rows | {run.rows.num_rows:,} |",
        "",
    ]
    if m.get("failures"):
        lines += ["**Failures during the run:** " + "; ".join(
            f"{f['role']} actor {f['actor']} in cell {f['cell']} ({f['error']})" for f in m["failures"]), ""]
    checks = verdicts(run)
    lines += ["## Targets", ""]
    if checks:
        lines += ["| cell | metric | want | measured | | must pass |", "|---|---|---|---|---|---|"]
        lines += [f"| {v['cell']} | {v['metric']} | {v['bound']} | {_fmt(v['value'])} | "
                  f"{'✓' if v['passed'] else '✗'} | {'yes' if v['must_pass'] else 'no'} |" for v in checks]
    else:
        lines += ["No targets configured."]
    lines += ["", "## Service-level objectives (goal / stretch)", "",
              "| cell | " + " | ".join(f"{title}: goal | stretch" for _, title, *_ in SLOS) + " |",
              "|---|" + "---|---|" * len(SLOS)]
    for row in run.summary:
        cells = []
        for metric, _, goal, stretch, higher in SLOS:
            value = row.get(metric)
            cells.append(f"{'✓' if _meets(value, goal, higher) else '✗'} {_fmt(value)}")
            cells.append("✓" if _meets(value, stretch, higher) else "✗")
        lines.append(f"| {row['cell']} | " + " | ".join(cells) + " |")
    lines += ["", "## Cells", "",
              "| cell | GPUs | topology | backend | target QPS | achieved QPS | p50 ms | p99 ms | p99.9 ms | "
              "max ms | errors | drops | recall | lag p99 ms | scaling eff. | status |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in run.summary:
        lines.append(
            f"| {r['cell']} | {r['n_gpus']}{' (sim)' if r.get('simulated') else ''} | {r.get('topology')} | "
            f"{r.get('backend')} | {_fmt(r['target_qps'])} | {_fmt(r['achieved_qps'])} | {_fmt(r['p50_ms'])} | "
            f"{_fmt(r['p99_ms'])} | {_fmt(r['p999_ms'])} | {_fmt(r['max_ms'])} | {r['error_rate']:.2%} | "
            f"{r['drop_rate']:.2%} | {_fmt(r['recall_mean'], 4)} | {_fmt(r['schedule_lag_p99_ms'])} | "
            f"{_fmt(r.get('scaling_efficiency'))} | {r.get('status')} |")
    lines += ["", "Latency is measured from each request's intended send time (open loop); percentiles are exact, "
              "over the raw rows of measured phases (ok and timeout rows).", "", "## Figures", ""]
    lines += [f"![{p.stem}]({p.name})" for p in figure_paths]
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path) -> tuple[Path, list[dict]]:
    """Write report.md and figures into the run directory; return the report path and target verdicts."""
    run = open_run(run_dir)
    paths = [p for p in (fig(run, run.path) for fig in figures.ALL) if p is not None]
    report = run.path / "report.md"
    report.write_text(render(run, paths))
    return report, verdicts(run)
