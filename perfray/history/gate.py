"""A CI gate on a run's history: is a new run outside the noise of the runs before it, by more than a set magnitude?

For each of the new run's cells (or capacity searches) the series is the earlier runs of the same workload on the
same hardware (``perfray history``'s keys). On the log of the metric, the new value must lie beyond the one-sided
prediction bound of those runs (mean + t(1 - alpha', n - 1) · sd · sqrt(1 + 1/n): where a further run of the same
build falls with probability 1 - alpha' when run-to-run noise is lognormal), where alpha' is ``alpha`` shared
among every series and metric the gate judges (Bonferroni: the rate is per gate, not per cell); AND differ from the
series' geometric mean by at least ``magnitude``; AND, where the run carries a 95% interval (a percentile's), the
whole interval must lie beyond that mean. Only then is it a regression (exit 1) or an improvement (said, exit 0).
A series with fewer than ``min_runs`` earlier runs is not judged, and says so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from perfray.errors import UsageError
from perfray.history.index import index_runs, per_run, run_rows
from perfray.schema import HIGHER_IS_BETTER

ALPHA = 0.01  # false alarms per gate (all its series and metrics together), when the noise is lognormal
MAGNITUDE = 0.05
MIN_RUNS = 5


def predict(baseline: np.ndarray, new: float, alpha: float, higher_is_better: bool) -> dict:
    """How ``new`` sits against ``baseline`` (earlier runs' values): the geometric mean, the one-sided prediction
    bound on the side of a regression, the ratio and whether ``new`` lies beyond the bound."""
    logs = np.log(baseline)
    n, mean, sd = logs.size, float(logs.mean()), float(logs.std(ddof=1))
    width = float(stats.t.ppf(1 - alpha, n - 1)) * sd * math.sqrt(1 + 1 / n)
    worse = -1.0 if higher_is_better else 1.0
    bound = math.exp(mean + worse * width)
    other = math.exp(mean - worse * width)
    beyond = (math.log(new) - mean) * worse > width
    better = (math.log(new) - mean) * -worse > width
    return {"n": n, "geomean": math.exp(mean), "bound": bound, "other_bound": other, "ratio": new / math.exp(mean),
            "beyond": beyond, "better": better}


def gate(results: Path, run: Path, metrics: tuple[str, ...] = ("p99_ms",), alpha: float = ALPHA,
         magnitude: float = MAGNITUDE, min_runs: int = MIN_RUNS) -> list[dict]:
    """A verdict per (series of the new run, metric): regression / improvement / within noise / too few runs."""
    manifest_path = Path(run) / "manifest.json"
    if not manifest_path.is_file():
        raise UsageError(f"{run}: not a run directory (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    new_rows = run_rows(Path(run), manifest)
    if not new_rows:
        raise UsageError(f"{run}: no summary to judge (status {manifest.get('status')})")
    history = [r for r in index_runs(Path(results)).to_pylist() if r.get("run_id") != manifest.get("run_id")
               and (r.get("time_unix_s") or 0) <= (manifest.get("created_unix_s") or math.inf)]
    judged = [(row, m) for m in metrics for row in per_run(new_rows, m)]  # repeats: one value, their spread
    share = alpha / max(len(judged), 1)
    verdicts = []
    for row, metric in judged:
        same = [r for r in per_run(history, metric) if r.get("workload") == row["workload"]
                and r.get("hardware") == row["hardware"] and r[metric] > 0]
        verdict = {"label": row.get("label"), "cell": row.get("cell"), "search": row.get("search"), "metric": metric,
                   "value": row[metric], "runs": len(same), "alpha": share}
        if len(same) < min_runs or row[metric] <= 0:
            verdicts.append({**verdict, "verdict": "too few runs"})
            continue
        higher = metric in HIGHER_IS_BETTER or metric == "capacity_qps"
        fit = predict(np.array([r[metric] for r in same]), row[metric], share, higher)
        big = abs(fit["ratio"] - 1) >= magnitude
        lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
        clear = not (_finite(lo) and _finite(hi)) or not (lo <= fit["geomean"] <= hi)
        if fit["beyond"] and big and clear:
            kind = "regression"
        elif fit["better"] and big and clear:
            kind = "improvement"
        else:
            kind = "within noise"
        verdicts.append({**verdict, **fit, "verdict": kind})
    return verdicts


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
