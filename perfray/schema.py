"""Arrow schemas of what perfray writes. Raw request rows are the source of truth for every report."""

from __future__ import annotations

import math

import pyarrow as pa

from perfray import SCHEMA_VERSION

STATUSES = ("pending", "ok", "error", "timeout", "dropped", "lost")  # lost: scheduled, its load actor died first
FAILURES = ("error", "timeout", "dropped", "lost")  # what failure_rate counts
STATUS_CODE = {name: i for i, name in enumerate(STATUSES)}
STAGES = ("vector_ns", "graph_ns", "policy_ns", "queue_ns")
WRITE_KINDS = ("insert", "upsert", "delete")  # the ops of load.writes' rows (reads are named knn_k<k>_q<n>)

_dict = pa.dictionary(pa.int16(), pa.string())

REQUEST_SCHEMA = pa.schema(
    [
        pa.field("cell", pa.int32(), nullable=False),
        pa.field("actor", pa.int16(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),  # request index within the cell, across actors
        pa.field("phase", _dict, nullable=False),
        pa.field("op", _dict, nullable=False),
        pa.field("k", pa.int32(), nullable=False),
        pa.field("n_queries", pa.int32(), nullable=False),
        pa.field("status", _dict, nullable=False),
        pa.field("error", _dict),
        pa.field("intended_ns", pa.int64(), nullable=False),  # Unix-epoch ns, from the schedule
        pa.field("sent_ns", pa.int64()),  # null when dropped
        pa.field("done_ns", pa.int64()),  # null when dropped
        pa.field("latency_ns", pa.int64()),  # done - intended: includes queueing (open loop)
        pa.field("service_ns", pa.int64()),  # done - sent
        pa.field("schedule_lag_ns", pa.int64()),  # sent - intended: batching window + generator lateness
        pa.field("batch_id", pa.int64()),
        pa.field("batch_size", pa.int32()),  # requests in the micro-batch
        pa.field("batch_queries", pa.int32()),  # query vectors in the micro-batch
        pa.field("endpoint", pa.int16()),  # GPU actor that answered; -1 = every shard
        pa.field("recall", pa.float32()),  # mean recall@k over the request's queries
        # Per-stage spans of a multi-store request (null where the system has no such stage); v2+.
        pa.field("vector_ns", pa.int64()),
        pa.field("graph_ns", pa.int64()),
        pa.field("policy_ns", pa.int64()),
        # Time a request waited in its GPU search actor before its search began (gpu_search; vector_ns is the
        # search itself, and service - queue - vector the Ray call there and back); v5+.
        pa.field("queue_ns", pa.int64()),
        pa.field("cache_hit", pa.bool_()),
        # A write followed by probe searches (load.writes): its ack -> the first search that showed it; v3+.
        pa.field("freshness_ns", pa.int64()),
        # A scored read in a cell with writes: deleted items it returned after their delete should have shown; v3+.
        pa.field("stale_hits", pa.int16()),
        # The Ray node (id) of the load actor that sent the request and of the search actor that answered it (null
        # for every shard at once, or a system outside Ray); filled by the driver as it gathers rows; v4+.
        pa.field("load_node", _dict),
        pa.field("search_node", _dict),
    ],
    metadata={b"perfray.schema_version": str(SCHEMA_VERSION).encode()},
)

MICROBENCH_SCHEMA = pa.schema(
    [
        pa.field("gpu", pa.int16()),
        pa.field("device", pa.string()),
        pa.field("backend", pa.string()),
        pa.field("dataset", pa.string()),
        pa.field("n", pa.int64()),
        pa.field("dim", pa.int32()),
        pa.field("batch", pa.int32()),
        pa.field("k", pa.int32()),
        pa.field("repeat", pa.int32()),
        pa.field("batch_ns", pa.int64()),  # one search call, host timer after a device sync
        pa.field("qps", pa.float64()),  # batch / batch time: throughput, not a per-query latency
        pa.field("simulated", pa.bool_()),
    ],
    metadata={b"perfray.schema_version": str(SCHEMA_VERSION).encode()},
)

# When the generator, not the system, limited a cell: schedule lag p99 beyond the micro-batch window above this,
# or each load actor offered more than this share of its client path's calibrated ceiling (perfray calibrate).
GENERATOR_LAG_LIMIT_MS = 1.0
GENERATOR_SHARE_LIMIT = 0.5

# Summary metrics for which more is better (an slo: goal is a minimum); every other metric's goal is a maximum.
HIGHER_IS_BETTER = frozenset({
    "achieved_qps", "offered_qps", "qps_ratio", "recall_mean", "recall_min", "batch_size_mean", "scaling_qps_ratio",
    "scaling_efficiency", "gpu_busy_mean", "gpu_util_mean", "cache_hit_rate", "writes", "freshness_samples",
    "speedup_p50_vs_baseline", "speedup_p99_vs_baseline", "qps_ratio_vs_baseline", "baseline_recall"})

# The values a summary metric can take, so that a target no system could pass is refused: shares in [0, 1], GPU
# utilisation in percent, the recall gap to the baseline in [-1, 1], latencies above 0, every other metric >= 0.
SHARE_METRICS = frozenset({
    "failure_rate", "error_rate", "timeout_rate", "drop_rate", "lost_rate", "recall_mean", "recall_min",
    "baseline_recall", "cache_hit_rate", "host_busy_share"})


def metric_range(metric: str) -> tuple[float, float, bool]:
    """(least, greatest, whether the least itself occurs) of a summary metric's values."""
    if metric in SHARE_METRICS:
        return 0.0, 1.0, True
    if metric == "gpu_util_mean":
        return 0.0, 100.0, True
    if metric == "recall_gap_vs_baseline":
        return -1.0, 1.0, True
    return 0.0, math.inf, not metric.endswith("_ms")  # a request never takes no time


# The metrics a summary row carries (targets name them).
SUMMARY_METRICS = (
    "p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms", "service_p50_ms", "service_p99_ms",
    "schedule_lag_p99_ms", "generator_lag_p99_ms", "achieved_qps", "offered_qps", "qps_ratio", "failure_rate",
    "error_rate", "timeout_rate", "drop_rate", "lost_rate", "recall_mean", "recall_min", "batch_size_mean",
    "scaling_qps_ratio", "scaling_efficiency",  # NaN unless saturated (scaling_basis)
    "gpu_busy_mean", "gpu_util_mean",
    "vector_p50_ms", "vector_p99_ms", "graph_p50_ms", "graph_p99_ms", "policy_p50_ms", "policy_p99_ms",
    "queue_p50_ms", "queue_p99_ms", "transport_p50_ms", "transport_p99_ms",
    "cache_hit_rate", "first_error_s", "last_error_s", "recovery_s", "slow_nodes", "harness_cores", "host_busy_share",
    "writes", "write_p50_ms", "write_p99_ms", "freshness_p50_ms", "freshness_p99_ms", "freshness_samples",
    "stale_reads",
    "speedup_p50_vs_baseline", "speedup_p99_vs_baseline", "qps_ratio_vs_baseline", "baseline_recall",
    "recall_gap_vs_baseline",
)
