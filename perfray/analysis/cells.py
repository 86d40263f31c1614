"""Per-cell summaries from a cell's rows: labels, the whole cell and each of its phases (with recovery after
a burst), GPU usage from actor counters, and the keys that pair cells for scaling and baseline comparisons."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from perfray.analysis.summary import recovery_s, summarize_cell
from perfray.config import Workload, phase_rates
from perfray.results.frame import CellFrame


def summarize_phases(rows: pa.Table | CellFrame, cell: Workload, index: int, status: str, start_ns: int,
                     until_ns: int, labels: dict) -> tuple[dict, list[dict]]:
    """(the cell's summary row over its measured phases, one row per phase)."""
    rows = CellFrame.of(rows)
    measured_s, window_end, offset_ns = 0.0, start_ns, 0
    phase_rows: list[dict] = []
    for p in cell.load.phase_plan():
        rate_lo, rate_hi = phase_rates(p, cell.offered_qps)
        lo = start_ns + offset_ns
        offset_ns += int(p.duration_s * 1e9)
        hi = min(start_ns + offset_ns, until_ns)
        ran_s = max(hi - lo, 0) / 1e9
        if p.measured and hi > lo:
            measured_s += ran_s
            window_end = hi
        meta = {"cell": index, "status": status, "start_ns": start_ns, "target_qps": (rate_lo + rate_hi) / 2,
                "measured_phases": [p.name], "measured_s": ran_s, "window_end_ns": hi, "labels": labels}
        row = {"phase": p.name, "measured": p.measured, **summarize_cell(rows, meta)}
        row["recovery_s"] = _recovery(rows, row, phase_rows, lo, hi)
        phase_rows.append(row)
    meta = {"cell": index, "status": status, "start_ns": start_ns, "target_qps": cell.offered_qps,
            "measured_phases": [p.name for p in cell.load.phase_plan() if p.measured],
            "measured_s": measured_s, "window_end_ns": window_end, "labels": labels}
    return summarize_cell(rows, meta), phase_rows


def _recovery(rows: CellFrame, row: dict, before: list[dict], lo_ns: int, hi_ns: int) -> float:
    """After a phase with a higher rate (a burst): seconds into this phase until latency is back to the
    level of the last earlier phase at or below this rate (NaN when no burst came before)."""
    if not before or not before[-1]["target_qps"] > row["target_qps"]:
        return float("nan")
    steady = [r for r in before[:-1] if r["target_qps"] <= row["target_qps"] * 1.001 and r["measured"]]
    if not steady:
        return float("nan")
    return recovery_s(rows, lo_ns, hi_ns, steady[-1]["p99_ms"])



def comparison_keys(cell: Workload) -> tuple[str, str]:
    """(the workload without ``system`` and search parameters: pairs a cell with its baseline-system twins; the
    workload without ``n_gpus``: cells with equal keys form a scaling curve)."""
    key = cell.model_dump(mode="json")
    system = key.pop("system")
    params = key["search"].pop("params")  # the baseline is chosen among its search parameters (add_baseline)
    baseline = json.dumps(key, sort_keys=True)
    key["search"]["params"] = params
    key["search"].pop("n_gpus")
    key["system"] = system
    return baseline, json.dumps(key, sort_keys=True)


def cell_labels(cell: Workload, described: list[dict], entry: dict, ceilings: dict | None = None) -> dict:
    """Labels every summary row of the cell carries: settings, system, GPU usage means, and the client path its
    load actors used with that path's calibrated ceiling on this host (``ceilings``: path -> req/s)."""
    stats = entry.get("actor_stats") or [{}]
    path = stats[0].get("client_path", "gpu")
    late = [s["generator_lateness_p99_ns"] / 1e6 for s in stats if "generator_lateness_p99_ns" in s]
    worst = [s["generator_lateness_max_ns"] / 1e6 for s in stats if "generator_lateness_max_ns" in s]
    return {**_labels(cell, described), "system": (entry.get("system") or {}).get("label", cell.system),
            "system_name": cell.system, **_usage_means(entry), "client_path": path,
            "generator_ceiling_qps": (ceilings or {}).get(path, float("nan")),
            # the pacers' own lateness (the slowest load actor): the generator fell behind, not the system
            "generator_lateness_p99_ms": max(late) if late else float("nan"),
            "generator_lateness_max_ms": max(worst) if worst else float("nan")}


def progress_label(cell: Workload, described: list[dict], system_label: str | None) -> str:
    """How the progress display names a running cell."""
    if system_label is not None:
        return (f"{system_label} k={cell.search.k} | {cell.offered_qps:,.0f} QPS {cell.load.arrival} "
                f"x{cell.load.actors} actors x{cell.load.concurrency} clients")
    sim = " (simulated GPUs)" if any(d["simulated"] for d in described) else ""
    return (f"{cell.search.n_gpus} GPU{sim} {cell.search.topology} {described[0]['backend']} "
            f"k={cell.search.k} | {cell.offered_qps:,.0f} QPS {cell.load.arrival} x{cell.load.actors} "
            f"actors | batch<={cell.load.batch_max} window {cell.load.batch_window_ms:g} ms")


def _labels(cell: Workload, described: list[dict]) -> dict:
    return {
        "n_gpus": cell.search.n_gpus, "k": cell.search.k, "topology": cell.search.topology,
        "backend": (described[0]["backend"] if described else cell.search.backend),
        "simulated": bool(described and any(d["simulated"] for d in described)),
        "load_actors": cell.load.actors, "concurrency": cell.load.concurrency, "arrival": cell.load.arrival,
        "query_skew": cell.load.query_skew,
        # the share of the items a query may return (1.0: no filter); recall per selectivity groups on it
        "filter_selectivity": cell.filter.selectivity if cell.filter is not None else 1.0,
        "filter_field": cell.filter.field if cell.filter is not None else "",  # attr (a range) or genre (a label)
        "search_params": search_params_label(cell.search.params),  # e.g. "ef=40"; "" for none
        "op_mix": cell.load.op_mix, "hops": cell.hybrid.hops, "cache": cell.hybrid.cache,
        "scale_with_gpus": cell.load.scale_with_gpus,
        "batch_max": cell.load.batch_max, "batch_window_ms": cell.load.batch_window_ms,
        "dataset": json.dumps(cell.dataset.model_dump(mode="json"), sort_keys=True),
    }


def search_params_label(params: dict) -> str:
    return ",".join(f"{name}={value}" for name, value in sorted(params.items()))


def gpu_usage(before: list, after: list) -> list[dict]:
    """Per GPU actor over a cell: share of wall time spent searching, NVML utilisation if sampled, and how
    many search calls (and query rows) it answered."""
    usage = []
    for b, a in zip(before, after, strict=True):
        if isinstance(b, Exception) or isinstance(a, Exception):
            usage.append({"busy": None, "busy_s": None, "nvml_util_percent": None, "calls": None, "rows": None,
                          "searches": None})
            continue
        samples = a["util_samples"] - b["util_samples"]
        usage.append({"busy": (a["busy_ns"] - b["busy_ns"]) / max(a["t_ns"] - b["t_ns"], 1),
                      "busy_s": (a["busy_ns"] - b["busy_ns"]) / 1e9,  # searching: what a request costs the actor
                      "nvml_util_percent": (a["util_sum"] - b["util_sum"]) / samples if samples else None,
                      "calls": a["calls"] - b["calls"], "rows": a["rows"] - b["rows"],
                      "searches": a.get("searches", 0) - b.get("searches", 0)})
    return usage


def _usage_means(entry: dict) -> dict:
    usage = entry.get("gpu_usage") or []
    busy = [u["busy"] for u in usage if u["busy"] is not None]
    util = [u["nvml_util_percent"] for u in usage if u["nvml_util_percent"] is not None]
    return {"gpu_busy_mean": sum(busy) / len(busy) if busy else float("nan"),
            "gpu_util_mean": sum(util) / len(util) if util else float("nan")}


def loss_recovery_s(rows: pa.Table | CellFrame, loss_ns: int, end_ns: int, dead_actors: list[int],
                    slo_p99_ms: float | None) -> float:
    """Seconds from a node's loss until the surviving load actors' requests are back within the SLO (a p99 target,
    else 1.5x the p99 before the loss) and free of errors, for good; NaN when that never happens in the cell."""
    frame = CellFrame.of(rows)
    survivors = ~np.isin(frame.ints("actor"), dead_actors)
    if slo_p99_ms is None:
        before = survivors & (frame.ints("intended_ns") < loss_ns) & frame.isin("status", ["ok"])
        if not before.any():
            return float("nan")
        steady = float(np.percentile(frame.floats("latency_ns")[before] / 1e6, 99))
        return recovery_s(frame, loss_ns, end_ns, steady, keep=survivors)
    return recovery_s(frame, loss_ns, end_ns, slo_p99_ms, limit_ms=slo_p99_ms, keep=survivors)
