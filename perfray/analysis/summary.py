"""Per-cell summary from raw request rows (exact percentiles), scaling vs the 1-GPU cell, target verdicts.

Latency percentiles cover ok and timeout rows (a timed-out request was at least that slow); errors and drops
are counted as rates, never hidden. Only rows of measured phases count.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SUMMARY_METRICS = (
    "p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms", "service_p50_ms", "service_p99_ms",
    "schedule_lag_p99_ms", "achieved_qps", "offered_qps", "qps_ratio", "error_rate", "timeout_rate",
    "drop_rate", "recall_mean", "recall_min", "batch_size_mean", "scaling_qps_ratio", "scaling_efficiency",
    "gpu_busy_mean", "gpu_util_mean",
)


def _ms(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) / 1e6 if values.size else float("nan")


def summarize_cell(rows: pa.Table, meta: dict) -> dict:
    """One summary row. ``meta``: cell id, labels, target_qps, measured phase names and window (ns)."""
    measured = rows.filter(pc.is_in(pc.cast(rows["phase"], pa.string()),
                                    value_set=pa.array(meta["measured_phases"], pa.string())))
    status = pc.cast(measured["status"], pa.string()).to_numpy(zero_copy_only=False)
    n = int(measured.num_rows)
    counts = {s: int((status == s).sum()) for s in ("ok", "error", "timeout", "dropped")}
    timed = (status == "ok") | (status == "timeout")
    latency = measured["latency_ns"].to_numpy(zero_copy_only=False)[timed].astype(np.float64)
    service = measured["service_ns"].to_numpy(zero_copy_only=False)[timed].astype(np.float64)
    lag = measured["schedule_lag_ns"].to_numpy(zero_copy_only=False)
    lag = lag[status != "dropped"].astype(np.float64)
    done = measured["done_ns"].to_numpy(zero_copy_only=False)
    ok_in_window = int(((status == "ok") & (done <= meta["window_end_ns"])).sum())
    window_s = meta["measured_s"]
    recall = measured["recall"].to_numpy(zero_copy_only=False)
    recall = recall[~np.isnan(recall)] if recall.size else recall
    batch = measured["batch_size"].to_numpy(zero_copy_only=False)
    batch = batch[status != "dropped"]
    achieved = ok_in_window / window_s if window_s > 0 else float("nan")
    p50, p95, p99, p999 = (np.percentile(latency, [50, 95, 99, 99.9]) / 1e6 if latency.size
                           else [float("nan")] * 4)
    target = meta["target_qps"]
    return {
        **meta["labels"],
        "cell": meta["cell"],
        "status": meta.get("status", "complete"),
        "requests": n,
        **counts,
        "target_qps": target,
        "offered_qps": n / window_s if window_s > 0 else float("nan"),
        "achieved_qps": achieved,
        # vs the offered rate (the requests actually scheduled): Poisson count noise is not a shortfall.
        "qps_ratio": achieved * window_s / n if n else float("nan"),
        "error_rate": counts["error"] / n if n else float("nan"),
        "timeout_rate": counts["timeout"] / n if n else float("nan"),
        "drop_rate": counts["dropped"] / n if n else float("nan"),
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "p999_ms": float(p999),
        "max_ms": float(latency.max()) / 1e6 if latency.size else float("nan"),
        "mean_ms": float(latency.mean()) / 1e6 if latency.size else float("nan"),
        "service_p50_ms": _ms(service, 50),
        "service_p99_ms": _ms(service, 99),
        "schedule_lag_p99_ms": _ms(lag, 99),
        "recall_mean": float(recall.mean()) if recall.size else float("nan"),
        "recall_min": float(recall.min()) if recall.size else float("nan"),
        "batch_size_mean": float(batch.mean()) if batch.size else float("nan"),
    }


def add_scaling(summary: list[dict], scaling_keys: list[tuple]) -> None:
    """Throughput ratio and efficiency of each cell vs the 1-GPU cell with the same other settings.

    ``scaling_keys[i]`` is cell i's workload without ``n_gpus`` (cells with equal keys form a curve)."""
    base = {}
    for row, key in zip(summary, scaling_keys, strict=True):
        if row["n_gpus"] == 1:
            base[key] = row["achieved_qps"]
    for row, key in zip(summary, scaling_keys, strict=True):
        one = base.get(key)
        if one and one > 0:
            row["scaling_qps_ratio"] = row["achieved_qps"] / one
            row["scaling_efficiency"] = row["achieved_qps"] / (one * row["n_gpus"])
        else:
            row["scaling_qps_ratio"] = float("nan")
            row["scaling_efficiency"] = float("nan")


def scaling_curves(summary: list[dict]) -> list[list[dict]]:
    """Summary rows grouped into curves over n_gpus (same workload otherwise), each sorted by GPUs; only
    groups with at least two GPU counts."""
    curves: dict[tuple, list[dict]] = {}
    for row in summary:
        key = (row.get("topology"), row.get("backend"), row.get("k"), row.get("dataset"), row.get("op_mix"),
               row.get("arrival"), row.get("batch_max"), row.get("batch_window_ms"), row.get("load_actors"))
        if not row.get("scale_with_gpus"):
            key += (row["target_qps"],)
        curves.setdefault(key, []).append(row)
    return [sorted(rows, key=lambda r: r["n_gpus"]) for rows in curves.values()
            if len({r["n_gpus"] for r in rows}) > 1]


def check_targets(summary: list[dict], targets) -> list[dict]:
    """One verdict per (target, cell). A NaN value fails (nothing measured is not a pass)."""
    verdicts = []
    for target in targets:
        for row in summary:
            value = row.get(target.metric, float("nan"))
            value = float("nan") if value is None else float(value)
            if target.max is not None:
                passed = bool(value <= target.max)
                bound = f"<= {target.max:g}"
            else:
                passed = bool(value >= target.min)
                bound = f">= {target.min:g}"
            verdicts.append({"cell": row["cell"], "metric": target.metric, "bound": bound, "value": value,
                             "passed": passed, "must_pass": target.must_pass})
    return verdicts
