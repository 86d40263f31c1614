"""``python -m perfray history RESULTS_DIR``: every series of the indexed runs (a workload on a hardware), its
values over time with their intervals, and the change points that survive the noise, each with the commit range
it happened in; ``history.md``, ``history.parquet`` and a trend figure per series."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from perfray.errors import UsageError, make_dir
from perfray.history.changes import ALPHA, MAGNITUDE, change_points
from perfray.history.index import METRICS, index_runs, per_run


def _where(table: pa.Table, where: list[str], since: str | None) -> list[dict]:
    rows = table.to_pylist()
    for clause in where:
        key, sep, value = clause.partition("=")
        if not sep or not key:
            raise UsageError(f"--where {clause!r}: expected KEY=VALUE (e.g. name=smoke)")
        if rows and key not in rows[0]:
            raise UsageError(f"--where {clause!r}: no column {key!r} (columns: {', '.join(sorted(rows[0]))})")
        rows = [r for r in rows if str(r.get(key)) == value]
    if since is not None:
        try:
            cutoff = time.mktime(time.strptime(since, "%Y-%m-%d"))
        except ValueError:
            raise UsageError(f"--since {since!r}: expected a date, YYYY-MM-DD") from None
        rows = [r for r in rows if (r.get("time_unix_s") or 0) >= cutoff]
    return rows


def series(rows: list[dict], metric: str) -> list[dict]:
    """Runs grouped by (workload, hardware), oldest first, with the metric's values, intervals and change points."""
    groups: dict[tuple, list[dict]] = {}
    for row in per_run(rows, metric):  # a run's repeats are one point, with their spread as its interval
        groups.setdefault((row["workload"], row["hardware"]), []).append(row)
    out = []
    for (workload, hardware), runs in groups.items():
        runs.sort(key=lambda r: (r.get("time_unix_s") or 0, r["run_id"]))
        values = np.array([_f(r.get(metric)) for r in runs])
        lo = np.array([_f(r.get(f"{metric}_lo")) for r in runs])
        hi = np.array([_f(r.get(f"{metric}_hi")) for r in runs])
        found = change_points(values, lo if np.isfinite(lo).any() else None, hi if np.isfinite(hi).any() else None)
        for step in found:
            step["commits"] = (runs[step["index"] - 1].get("git_commit"), runs[step["index"]].get("git_commit"))
            step["runs"] = (runs[step["index"] - 1]["run_id"], runs[step["index"]]["run_id"])
        out.append({"workload": workload, "hardware": hardware, "label": runs[0].get("label"), "runs": runs,
                    "values": values, "lo": lo, "hi": hi, "changes": found})
    return sorted(out, key=lambda s: (-len(s["runs"]), s["label"] or ""))


def _f(value) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def trend_figure(s: dict, metric: str, out: Path) -> Path:
    from perfray.analysis.figures import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    x = np.arange(len(s["runs"]))
    lo, hi, v = s["lo"], s["hi"], s["values"]
    has = np.isfinite(lo) & np.isfinite(hi)
    ax.errorbar(x[has], v[has], yerr=[v[has] - lo[has], hi[has] - v[has]], fmt="o", ms=4, capsize=2,
                label=f"{metric} (95% interval)")
    ax.plot(x[~has], v[~has], "o", ms=4)
    for step in s["changes"]:
        ax.axvline(step["index"] - 0.5, color="red", ls="--", lw=1)
        ax.annotate(f"{step['change']:+.0%}", (step["index"] - 0.5, 1), xycoords=("data", "axes fraction"),
                    fontsize=8, color="red", va="top")
    ax.set(xlabel="run (oldest first)", ylabel=metric, title=f"{s['label']} [{s['workload']}]"[:90])
    ax.legend(fontsize=7)
    return _save(fig, out, f"trend-{s['workload']}-{s['hardware']}-{metric}.png")


def write_history(results: Path, metric: str = "p99_ms", where: list[str] | None = None, since: str | None = None,
                  out: Path | None = None) -> tuple[Path, list[dict]]:
    if metric not in METRICS:
        raise UsageError(f"--metric {metric!r}: one of {', '.join(METRICS)}")
    table = index_runs(results)
    rows = _where(table, where or [], since) if table.num_rows else []
    out = make_dir(out or results, "--out")
    found = series(rows, metric)
    if out != Path(results):
        pq.write_table(pa.Table.from_pylist(rows) if rows else table.slice(0, 0), out / "history.parquet")
    lines = ["# History", "", f"{len(rows)} cells of {len({r['run_id'] for r in rows})} runs under `{results}`; "
             f"metric `{metric}`. A change point is reported only when the runs on its two sides differ by at least "
             f"{MAGNITUDE:.0%}, with a permutation p below {ALPHA:g} against the best cut of the same runs shuffled, "
             "and beyond the runs' own 95% intervals.", ""]
    for s in found:
        path = trend_figure(s, metric, out)
        lines += [f"## {s['label']} — `{s['workload']}` on `{s['hardware']}`", "",
                  f"{len(s['runs'])} runs, median {np.nanmedian(s['values']):.4g}; "
                  f"{len(s['changes'])} change point(s).", ""]
        for step in s["changes"]:
            lines.append(f"- at run {step['index']} ({step['runs'][1]}): {step['before']:.4g} → {step['after']:.4g} "
                         f"({step['change']:+.1%}, p = {step['p_value']:.3g}); commits {step['commits'][0]} → "
                         f"{step['commits'][1]}")
        lines += ["", f"![trend]({path.name})", ""]
    page = out / "history.md"
    page.write_text("\n".join(lines))
    return page, found
