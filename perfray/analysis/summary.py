"""Per-cell summary from raw request rows (exact percentiles), scaling vs the 1-GPU cell, target verdicts.

Latency percentiles cover ok and timeout rows (a timed-out request was at least that slow); errors and drops
are counted as rates, never hidden. Only rows of measured phases count. In a cell with writes (``load.writes``)
the latency figures are the reads'; the writes have their own (``write_p50_ms`` …, ``freshness_p50_ms`` …),
and rates count every scheduled request, reads and writes.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from perfray.analysis.intervals import PERCENTILES, RATIO_METRICS, judge, percentile_intervals, ratio_interval
from perfray.analysis.quality import quality
from perfray.results.frame import CellFrame
from perfray.schema import FAILURES, WRITE_KINDS

STAGES = ("vector", "graph", "policy", "queue")


def _ms(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) / 1e6 if values.size else float("nan")


def summarize_cell(rows: pa.Table | CellFrame, meta: dict) -> dict:
    """One summary row. ``meta``: cell id, labels, target_qps, measured phase names and window (ns). ``rows``: a
    table or, for a cell of millions of rows, its frame (read a column at a time)."""
    frame = CellFrame.of(rows)
    measured = frame.isin("phase", meta["measured_phases"])
    status = status_masks(frame, measured)
    n = int(measured.sum())
    counts = {s: int(status[s].sum()) for s in ("ok", *FAILURES)}
    writing = frame.isin("op", WRITE_KINDS)[measured]
    timed = (status["ok"] | status["timeout"]) & ~writing
    latency = frame.floats("latency_ns")[measured][timed]
    service = frame.floats("service_ns")[measured][timed]
    sent = ~(status["dropped"] | status["lost"])
    lag = frame.floats("schedule_lag_ns")[measured][sent]
    done = frame.ints("done_ns", fill=2**62)[measured]
    ok_in_window = int((status["ok"] & (done <= meta["window_end_ns"])).sum())
    del done
    window_s = meta["measured_s"]
    recall = frame.floats("recall")[measured]
    recall = recall[~np.isnan(recall)]
    batch = frame.floats("batch_size")[measured][sent]
    achieved = ok_in_window / window_s if window_s > 0 else float("nan")
    p50, p95, p99, p999 = (np.percentile(latency, [50, 95, 99, 99.9]) / 1e6 if latency.size
                           else [float("nan")] * 4)
    target = meta["target_qps"]
    row = {
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
        # every scheduled request is a row, so n is the schedule: error, timeout, dropped and lost all fail it
        "failure_rate": sum(counts[s] for s in FAILURES) / n if n else float("nan"),
        "error_rate": counts["error"] / n if n else float("nan"),
        "timeout_rate": counts["timeout"] / n if n else float("nan"),
        "drop_rate": counts["dropped"] / n if n else float("nan"),
        "lost_rate": counts["lost"] / n if n else float("nan"),
        "p50_ms": float(p50),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "p999_ms": float(p999),
        **percentile_intervals(latency),  # 95% distribution-free intervals: p50_ms_lo, p50_ms_hi, ... and samples
        "max_ms": float(latency.max()) / 1e6 if latency.size else float("nan"),
        "mean_ms": float(latency.mean()) / 1e6 if latency.size else float("nan"),
        "service_p50_ms": _ms(service, 50),
        "service_p99_ms": _ms(service, 99),
        "schedule_lag_p99_ms": _ms(lag, 99),
        # Lag beyond the micro-batch window: the generator's own lateness (a lower bound of it), so a cell whose
        # load actors could not keep up is told apart from a slow system.
        "generator_lag_p99_ms": _ms(np.maximum(lag - meta["labels"].get("batch_window_ms", 0.0) * 1e6, 0.0), 99),
        "recall_mean": float(recall.mean()) if recall.size else float("nan"),
        "recall_min": float(recall.min()) if recall.size else float("nan"),
        "batch_size_mean": float(batch.mean()) if batch.size else float("nan"),
        **_stages(frame, measured, status),
        **_error_window(frame, measured, status, meta.get("start_ns")),
        **_writes(frame, measured, status, writing),
    }
    del service, lag, recall, batch
    labels = meta["labels"]
    batched = labels.get("batch_max", 1) > 1 and labels.get("batch_window_ms", 0.0) > 0
    intended = frame.ints("intended_ns")[measured][sent]
    row.update(quality(intended, frame.ints("sent_ns")[measured][sent], timed[sent], latency, batched))
    return row


def status_masks(frame: CellFrame, where: np.ndarray) -> dict[str, np.ndarray]:
    """Per status name, True where a chosen row (``where``) has it: 1 B/row each, no strings."""
    codes, names = frame.codes("status")
    codes = codes[where]
    return {name: codes == (names.index(name) if name in names else -2) for name in ("ok", *FAILURES)}


def _stages(frame: CellFrame, measured: np.ndarray, status: dict) -> dict:
    """Per-stage span percentiles over ok rows, and the cache hit rate (NaN where a system has neither)."""
    out = {}
    ok = status["ok"]
    for stage in STAGES:
        spans = np.empty(0)
        if frame.has(f"{stage}_ns"):
            spans = frame.floats(f"{stage}_ns")[measured][ok]
            spans = spans[~np.isnan(spans)]
        out[f"{stage}_p50_ms"], out[f"{stage}_p99_ms"] = _ms(spans, 50), _ms(spans, 99)
    out.update(_transport(frame, measured, ok))
    flags = frame.floats("cache_hit")[measured] if frame.has("cache_hit") else np.full(ok.size, np.nan)
    looked = int((~np.isnan(flags)).sum())
    out["cache_hit_rate"] = float(np.nansum(flags)) / looked if looked else float("nan")
    # hits and misses are two populations: their own percentiles, beside the rate that mixes them
    latency = frame.floats("latency_ns")[measured] if looked else np.empty(0)
    for name, want in (("hit", 1.0), ("miss", 0.0)):
        chosen = latency[ok & (flags == want)] if looked else np.empty(0)
        out[f"cache_{name}_p50_ms"], out[f"cache_{name}_p99_ms"] = _ms(chosen, 50), _ms(chosen, 99)
    return out


def _transport(frame: CellFrame, measured: np.ndarray, ok: np.ndarray) -> dict:
    """The call around a search actor's work (gpu_search): service − queue − search, per ok row that has both
    (the Ray call there and back, and a wait for a free call slot in the load actor)."""
    spans = np.empty(0)
    if frame.has("queue_ns"):
        queue = frame.floats("queue_ns")[measured][ok]
        spans = frame.floats("service_ns")[measured][ok] - queue - frame.floats("vector_ns")[measured][ok]
        spans = spans[~np.isnan(spans)]
    return {"transport_p50_ms": _ms(spans, 50), "transport_p99_ms": _ms(spans, 99)}


def _writes(frame: CellFrame, measured: np.ndarray, status: dict, writing: np.ndarray) -> dict:
    """Writes (``load.writes``): how many, their latency (ok rows), freshness over the probed writes the store
    showed (``freshness_samples`` of them), and reads that returned an item after its delete should have shown."""
    ok = status["ok"] & writing
    if not writing.any():
        latency = fresh = np.empty(0)
    else:
        latency = frame.floats("latency_ns")[measured][ok]
        fresh = frame.floats("freshness_ns")[measured][ok]
        fresh = fresh[~np.isnan(fresh)]
    stale = float("nan")
    if frame.has("stale_hits"):
        stale = int((np.nan_to_num(frame.floats("stale_hits")[measured]) > 0).sum())
    return {"writes": int(writing.sum()), "write_p50_ms": _ms(latency, 50), "write_p99_ms": _ms(latency, 99),
            "freshness_p50_ms": _ms(fresh, 50), "freshness_p99_ms": _ms(fresh, 99), "freshness_samples": int(fresh.size),
            # reads that returned an item deleted (acknowledged) longer than load.writes.visibility_ms before
            "stale_reads": stale}


def _error_window(frame: CellFrame, measured: np.ndarray, status: dict, start_ns: int | None) -> dict:
    """When (s after the cell's start, by intended time) the first and the last error or timeout were due:
    a store that died and came back shows as errors between the two, and ok rows after the last."""
    failed = status["error"] | status["timeout"]
    if not failed.any() or not start_ns:
        return {"first_error_s": float("nan"), "last_error_s": float("nan")}
    intended = frame.ints("intended_ns")[measured][failed]
    return {"first_error_s": (int(intended.min()) - start_ns) / 1e9, "last_error_s": (int(intended.max()) - start_ns) / 1e9}


def recovery_s(rows: pa.Table | CellFrame, lo_ns: int, hi_ns: int, steady_p99_ms: float, bucket_s: float = 1.0,
               limit_ms: float | None = None, keep: np.ndarray | None = None) -> float:
    """Seconds from ``lo_ns`` until every later ``bucket_s`` window (by intended time) has no errors and a
    p99 within 1.5x (at least +1 ms) of ``steady_p99_ms`` (or within ``limit_ms``, an SLO); NaN if that never
    happens before ``hi_ns``. ``keep``: only these rows (a mask)."""
    if not np.isfinite(steady_p99_ms) or hi_ns <= lo_ns:
        return float("nan")
    frame = CellFrame.of(rows)
    intended = frame.ints("intended_ns")
    inside = (intended >= lo_ns) & (intended < hi_ns)
    if keep is not None:
        inside &= keep
    codes, names = frame.codes("status")
    codes = codes[inside]
    failed_codes = [i for i, s in enumerate(names) if s in FAILURES]
    ok_code = names.index("ok") if "ok" in names else -2
    latency = frame.floats("latency_ns")[inside] / 1e6
    bucket = ((intended[inside] - lo_ns) // int(bucket_s * 1e9)).astype(np.int64)
    del intended
    limit = limit_ms if limit_ms is not None else max(steady_p99_ms * 1.5, steady_p99_ms + 1.0)
    n_buckets = int(np.ceil((hi_ns - lo_ns) / (bucket_s * 1e9)))
    bad = np.zeros(n_buckets, dtype=bool)
    failed = np.isin(codes, failed_codes)
    np.logical_or.at(bad, bucket, failed)  # any failure in a bucket makes it bad
    ok = codes == ok_code
    order = np.lexsort((latency[ok], bucket[ok]))  # per bucket, its ok latencies sorted: the p99 by index
    b_sorted, l_sorted = bucket[ok][order], latency[ok][order]
    counts = np.bincount(b_sorted, minlength=n_buckets)
    starts = np.cumsum(counts) - counts
    for b in np.flatnonzero(counts):
        bad[b] |= np.percentile(l_sorted[starts[b]:starts[b] + counts[b]], 99) > limit
    if not bad.any():
        return 0.0
    last_bad = int(np.flatnonzero(bad)[-1])
    return float("nan") if last_bad == n_buckets - 1 else (last_bad + 1) * bucket_s


# A cell that served less than this share of the requests it was offered ran at its throughput limit: its
# achieved rate is the system's and can scale with GPUs. Above it, the cell served what it was offered, and its
# throughput is the offered load's.
SATURATED = 0.95


def saturated(row: dict) -> bool:
    ratio = row.get("qps_ratio")
    return ratio is not None and bool(np.isfinite(ratio)) and ratio < SATURATED


def add_scaling(summary: list[dict], scaling_keys: list[tuple]) -> None:
    """Throughput ratio and efficiency of each cell vs the 1-GPU cell with the same other settings, only where
    both ran at their throughput limit (``saturated``): a cell that served all it was offered says how much load
    there was, not how much the GPUs could take (``scaling_basis``: "saturated", else "offered").

    ``scaling_keys[i]`` is cell i's workload without ``n_gpus`` (cells with equal keys form a curve)."""
    base = {}
    for row, key in zip(summary, scaling_keys, strict=True):
        if row["n_gpus"] == 1 and saturated(row):
            base[key] = row["achieved_qps"]
    for row, key in zip(summary, scaling_keys, strict=True):
        one = base.get(key)
        row["scaling_basis"] = "saturated" if saturated(row) else "offered"
        if one and one > 0 and saturated(row):
            row["scaling_qps_ratio"] = row["achieved_qps"] / one
            row["scaling_efficiency"] = row["achieved_qps"] / (one * row["n_gpus"])
        else:
            row["scaling_qps_ratio"] = float("nan")
            row["scaling_efficiency"] = float("nan")


# Two answers whose recalls differ by more than this are different answers: a speedup between them is flagged.
RECALL_MATCH = 0.01


def add_baseline(summary: list[dict], keys: list[str], baseline: str | None) -> None:
    """Speedups of every cell vs a cell running ``baseline`` with the same other settings (``keys[i]``: cell i's
    workload without ``system`` and search parameters). >1 means faster than the baseline. Where the baseline ran
    with several search parameters (a sweep of its ``ef``), a cell is compared with the baseline at its best
    settings at matched recall: its fastest (lowest p99) cell whose recall reaches the cell's less RECALL_MATCH,
    else its highest recall. Every row carries the baseline's recall, the gap, and ``recall_matched`` (False: the
    two recalls differ by more than RECALL_MATCH, so the speedup compares different answers). Each speedup has its
    95% interval (``_lo`` / ``_hi``) from the two cells' percentile intervals, and is judged on it."""
    nan = float("nan")
    groups: dict[str, list[dict]] = {}
    for row, key in zip(summary, keys, strict=True):
        if baseline and row.get("system_name") == baseline:
            groups.setdefault(key, []).append(row)
    for row, key in zip(summary, keys, strict=True):
        refs = groups.get(key)
        if not refs:
            row.update({f"{m}{end}": nan for m in RATIO_METRICS for end in ("", "_lo", "_hi")})
            row.update(qps_ratio_vs_baseline=nan, baseline=None, baseline_name=None, baseline_search_params=None,
                       baseline_recall=nan, recall_gap_vs_baseline=nan, recall_matched=None)
            continue
        ref = row if row.get("system_name") == baseline else _matched(refs, row.get("recall_mean"))
        gap = _finite_or_nan(row.get("recall_mean")) - _finite_or_nan(ref.get("recall_mean"))
        row.update(baseline=ref.get("system"), baseline_name=baseline, speedup_p50_vs_baseline=_ratio(ref["p50_ms"], row["p50_ms"]),
                   speedup_p99_vs_baseline=_ratio(ref["p99_ms"], row["p99_ms"]),
                   qps_ratio_vs_baseline=_ratio(row["achieved_qps"], ref["achieved_qps"]),
                   baseline_search_params=ref.get("search_params", ""), baseline_recall=ref.get("recall_mean", nan),
                   recall_gap_vs_baseline=gap, recall_matched=None if np.isnan(gap) else bool(abs(gap) <= RECALL_MATCH + 1e-9))
        for metric, of in RATIO_METRICS.items():  # the baseline against itself: exactly 1
            row[f"{metric}_lo"], row[f"{metric}_hi"] = (1.0, 1.0) if ref is row else ratio_interval(ref, row, of)


def _finite_or_nan(value) -> float:
    return float(value) if value is not None and np.isfinite(value) else float("nan")


def _matched(refs: list[dict], recall) -> dict:
    """The baseline cell a cell of this recall is compared with (see add_baseline)."""
    def p99(r):
        value = _finite_or_nan(r.get("p99_ms"))
        return value if not np.isnan(value) else float("inf")

    recall = _finite_or_nan(recall)
    scored = [r for r in refs if not np.isnan(_finite_or_nan(r.get("recall_mean")))]
    if np.isnan(recall) or not scored:
        return min(refs, key=p99)  # no recall to match: the baseline at its fastest
    reaching = [r for r in scored if r["recall_mean"] >= recall - RECALL_MATCH]
    return min(reaching, key=p99) if reaching else max(scored, key=lambda r: r["recall_mean"])


def _ratio(a: float, b: float) -> float:
    return a / b if b and b > 0 and not np.isnan(b) else float("nan")


def scaling_curves(summary: list[dict]) -> list[list[dict]]:
    """Summary rows grouped into curves over n_gpus (same workload otherwise), each sorted by GPUs; only
    groups with at least two GPU counts."""
    curves: dict[tuple, list[dict]] = {}
    for row in summary:
        key = (row.get("topology"), row.get("backend"), row.get("k"), row.get("dataset"), row.get("op_mix"),
               row.get("arrival"), row.get("batch_max"), row.get("batch_window_ms"), row.get("load_actors"),
               row.get("repeat", 0))
        if not row.get("scale_with_gpus"):
            key += (row["target_qps"],)
        curves.setdefault(key, []).append(row)
    return [sorted(rows, key=lambda r: r["n_gpus"]) for rows in curves.values()
            if len({r["n_gpus"] for r in rows}) > 1]


def check_targets(summary: list[dict], targets, phases: list[dict] | None = None) -> list[dict]:
    """One verdict per (target, cell). A NaN value fails (nothing measured is not a pass), and so does a target
    whose ``where`` matches no cell. A target whose ``where`` names a ``phase`` is checked on that phase's rows
    (``phases``: per-phase summaries, e.g. p99 during a burst or ``recovery_s`` after it)."""
    verdicts = []
    for target in targets:
        matched = False
        per_phase = bool(target.where and "phase" in target.where)
        for row in (phases or []) if per_phase else summary:
            if target.where and any(row.get(k) != v for k, v in target.where.items()):
                continue
            matched = True
            value = row.get(target.metric, float("nan"))
            value = float("nan") if value is None else float(value)
            limit = target.max if target.max is not None else target.min
            bound = f"<= {target.max:g}" if target.max is not None else f">= {target.min:g}"
            passed = bool(value <= limit) if target.max is not None else bool(value >= limit)
            verdict = {"cell": row["cell"], "metric": target.metric, "bound": bound, "value": value,
                       "passed": passed, "must_pass": target.must_pass}
            if per_phase:
                verdict["phase"] = row["phase"]
            if _has_interval(row, target.metric):
                # a percentile (or a ratio of two) is an estimate: met when its whole 95% interval is, inconclusive
                # when it straddles
                passed, inconclusive, more = judge(row, target.metric, limit, target.max is not None)
                verdict.update(passed=passed, inconclusive=inconclusive, samples=row.get("samples"),
                               interval=[row[f"{target.metric}_lo"], row[f"{target.metric}_hi"]],
                               samples_to_decide=more)
            verdicts.append(verdict)
        if not matched and summary:  # a target that checks nothing is not met (cell -1: none)
            limit = f"<= {target.max:g}" if target.max is not None else f">= {target.min:g}"
            verdicts.append({"cell": -1, "metric": target.metric, "bound": f"{limit} (no cell matched {target.where})",
                             "value": float("nan"), "passed": False, "must_pass": target.must_pass})
    return verdicts


def _has_interval(row: dict, metric: str) -> bool:
    """Whether ``row`` has a 95% interval of ``metric`` to judge it on (a speedup from rows written without the
    cells' pair intervals has none: judged on its value)."""
    if metric in PERCENTILES:
        return f"{metric}_lo" in row
    lo = row.get(f"{metric}_lo") if metric in RATIO_METRICS else None
    return lo is not None and not np.isnan(lo)


def slo_verdicts(summary: list[dict], slos, phases: list[dict] | None = None) -> list[dict]:
    """The verdicts of the config's ``slo:`` entries, judged as targets (goal: must pass; stretch: advisory), each
    tagged ``slo: goal|stretch``."""
    return [{**verdict, "slo": kind} for slo in slos for kind, target in slo.targets()
            for verdict in check_targets(summary, [target], phases)]


def harness_verdicts(summary: list[dict]) -> list[dict]:
    """A must-pass verdict, whatever the targets, for each cell whose load actors died before sending their share
    (``lost`` rows): the harness did not deliver the schedule asked for, so the cell did not measure it."""
    return [{"cell": row["cell"], "metric": "lost_rate", "bound": "<= 0 (built in: every scheduled request sent)",
             "value": float(row["lost_rate"]), "passed": False, "must_pass": True}
            for row in summary if row.get("lost_rate", 0) and row["lost_rate"] > 0]
