"""Run-to-run variance: the spread of a cell's figures between its repeats (``repeat: N`` / ``--repeat N``),
and speedup intervals built from it.

Rows of one run are not independent of the run: the machine, the Ray placement, a neighbour on the VM all
move every row of a run together (identical smoke runs moved p99 2–3x). A bootstrap over rows sees none of
that, so a verdict on a tail percentile needs repeats: the interval is then a Welch t interval on the log of
the metric over the repeats of each run."""

from __future__ import annotations

import math

import numpy as np

SPREAD_METRICS = ("p50_ms", "p99_ms", "p999_ms", "achieved_qps")
TAIL_METRICS = ("p95_ms", "p99_ms", "p999_ms")
MIN_REPEATS = 3  # per run, for a verdict on a tail percentile


def by_base(summary: list[dict]) -> dict[int, list[dict]]:
    """Summary rows grouped by the grid cell they repeat (a run without repeats: one row per cell)."""
    groups: dict[int, list[dict]] = {}
    for row in summary:
        groups.setdefault(int(row.get("base_cell", row["cell"])), []).append(row)
    return groups


def add_repeat_spread(summary: list[dict]) -> None:
    """Every row gets ``repeats`` (how many of its grid cell ran) and ``{metric}_repeat_sd`` / ``_repeat_cv``
    (between repeats; NaN with one)."""
    for rows in by_base(summary).values():
        for metric in SPREAD_METRICS:
            values = np.array([r.get(metric, math.nan) for r in rows], dtype=np.float64)
            sd = float(np.std(values, ddof=1)) if len(rows) > 1 else math.nan
            mean = float(np.mean(values))
            for r in rows:
                r[f"{metric}_repeat_sd"] = sd
                r[f"{metric}_repeat_cv"] = sd / mean if mean else math.nan
        for r in rows:
            r["repeats"] = len(rows)


def between_runs(baseline: list[float], candidate: list[float], higher_is_better: bool,
                 confidence: float = 0.95) -> dict:
    """Speedup (> 1: the candidate is better) as the ratio of geometric means over repeats, with a Welch t
    interval on the difference of the logs."""
    from scipy.stats import t as student

    x, y = np.log(np.asarray(baseline, dtype=np.float64)), np.log(np.asarray(candidate, dtype=np.float64))
    diff = (y.mean() - x.mean()) if higher_is_better else (x.mean() - y.mean())
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(vx + vy)
    if se == 0 or not math.isfinite(se):
        return {"point": math.exp(diff), "low": math.exp(diff), "high": math.exp(diff)}
    df = (vx + vy) ** 2 / (vx ** 2 / (x.size - 1) + vy ** 2 / (y.size - 1))
    half = float(student.ppf(1 - (1 - confidence) / 2, df)) * se
    return {"point": math.exp(diff), "low": math.exp(diff - half), "high": math.exp(diff + half)}
