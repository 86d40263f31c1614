"""Every live metric, defined once: name, kind, fixed tag keys, histogram boundaries.

Exported names carry Ray's ``ray_`` prefix in both exporters (Ray adds it; the prometheus-client exporter
adds it too), so one Grafana dashboard and one alert file serve both."""

from __future__ import annotations

from dataclasses import dataclass

# Dense between 1 and 20 ms, where the 10 ms (stretch 8.7 ms) p99 objective is decided.
LATENCY_MS_BOUNDARIES = (0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 8.7, 9, 10, 11, 12, 13,
                         14, 15, 16, 18, 20, 25, 30, 40, 50, 75, 100, 150, 250, 500, 1000, 2500, 5000)
LAG_MS_BOUNDARIES = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 50, 100, 250, 1000)
BATCH_BOUNDARIES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
EXPORT_PREFIX = "ray_"


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: str  # counter | gauge | histogram
    description: str
    tag_keys: tuple[str, ...]
    boundaries: tuple[float, ...] | None = None


_CELL = ("run", "cell")
METRICS = {m.name: m for m in (
    MetricDef("perfray_requests", "counter", "Requests by final status (ok, error, timeout, dropped)",
              (*_CELL, "phase", "op", "status")),
    MetricDef("perfray_latency_ms", "histogram", "Latency from the intended send time (ms)",
              (*_CELL, "phase", "op"), LATENCY_MS_BOUNDARIES),
    MetricDef("perfray_schedule_lag_ms", "histogram", "Sent minus intended time (ms): batching wait + lateness",
              _CELL, LAG_MS_BOUNDARIES),
    MetricDef("perfray_batch_size", "histogram", "Requests per micro-batch sent to GPU search actors", _CELL,
              BATCH_BOUNDARIES),
    MetricDef("perfray_target_qps", "gauge", "Offered rate of the running cell (per load actor)",
              (*_CELL, "actor")),
    MetricDef("perfray_achieved_qps", "gauge", "Requests completed ok per second since the last report",
              (*_CELL, "actor")),
    MetricDef("perfray_in_flight", "gauge", "Requests sent and not yet answered", (*_CELL, "actor")),
    MetricDef("perfray_cache_hits", "counter", "Requests answered from the result cache", _CELL),
    MetricDef("perfray_cache_lookups", "counter", "Requests that looked in the result cache", _CELL),
    MetricDef("perfray_pool_connections", "gauge", "Client connection-pool connections by state (active, idle)",
              ("run", "actor", "store", "state")),
    MetricDef("perfray_search_busy_ratio", "gauge", "Share of the last second a search actor spent searching",
              ("run", "gpu", "device")),
    MetricDef("perfray_gpu_utilization_percent", "gauge", "GPU utilisation (NVML)", ("run", "gpu", "device")),
    MetricDef("perfray_gpu_memory_used_bytes", "gauge", "GPU memory in use (NVML)", ("run", "gpu", "device")),
)}
