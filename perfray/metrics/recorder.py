"""Turn drained request rows into metric updates (once per drain, off the request path)."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _codes(batch: pa.RecordBatch, name: str) -> tuple[np.ndarray, list[str]]:
    """Dictionary indices and the labels they stand for."""
    column = batch.column(name)
    return column.indices.to_numpy(zero_copy_only=False).astype(np.int64), column.dictionary.to_pylist()


# Ray's metrics API takes one value per call (~10 µs each): a drain of thousands of rows observed at once
# would hold the load actor's loop for tens of ms. Histograms get a uniform sample of at most this many values
# per series and drain (their quantiles stay unbiased; exact counts are ``perfray_requests``), observed a
# slice at a time by ``observe_some`` between the loop's other work.
HISTOGRAM_SAMPLE_MAX = 256
OBSERVE_SLICE = 32


class MetricsRecorder:
    """Per load actor: counts by status, latency / lag / batch histograms, QPS and in-flight gauges."""

    def __init__(self, sink, run: str, actor: int, defer_histograms: bool = False) -> None:
        self.sink, self.run, self.actor = sink, run, actor
        self.defer_histograms = defer_histograms  # True: ``observe_some`` hands them on, a slice at a time
        self._last = time.monotonic()
        self._to_observe: list[tuple[str, list, dict]] = []
        self._rng = np.random.default_rng(actor)

    def _observe(self, name: str, values: np.ndarray, tags: dict) -> None:
        if values.size > HISTOGRAM_SAMPLE_MAX:
            values = values[self._rng.integers(0, values.size, HISTOGRAM_SAMPLE_MAX)]
        if values.size:
            self._to_observe.append((name, values.tolist(), tags))
            if not self.defer_histograms:
                self.observe_some(HISTOGRAM_SAMPLE_MAX)

    def observe_some(self, limit: int = OBSERVE_SLICE) -> int:
        """Hand up to ``limit`` queued histogram values to the sink; returns how many are still queued."""
        while limit > 0 and self._to_observe:
            name, values, tags = self._to_observe[-1]
            take, rest = values[:limit], values[limit:]
            self.sink.observe(name, take, tags)
            limit -= len(take)
            if rest:
                self._to_observe[-1] = (name, rest, tags)
            else:
                self._to_observe.pop()
        return sum(len(values) for _, values, _ in self._to_observe)

    def cell_started(self, cell: int, target_qps: float) -> None:
        self.sink.set("perfray_target_qps", target_qps, {"run": self.run, "cell": str(cell), "actor": str(self.actor)})
        self._last = time.monotonic()

    def rows(self, batch: pa.RecordBatch | None, cell: int, in_flight: int) -> None:
        now = time.monotonic()
        elapsed, self._last = max(now - self._last, 1e-3), now
        cell_tags = {"run": self.run, "cell": str(cell)}
        actor_tags = {**cell_tags, "actor": str(self.actor)}
        self.sink.set("perfray_in_flight", in_flight, actor_tags)
        if batch is None or batch.num_rows == 0:
            self.sink.set("perfray_achieved_qps", 0.0, actor_tags)
            return
        (phase, phases), (op, ops), (code, statuses) = (_codes(batch, c) for c in ("phase", "op", "status"))
        status = np.asarray(statuses, dtype=object)[code]
        n_op, n_status = max(len(ops), 1), max(len(statuses), 1)
        keys, counts = np.unique((phase * n_op + op) * n_status + code, return_counts=True)
        for key, count in zip(keys, counts, strict=True):
            p, rest = divmod(int(key), n_op * n_status)
            o, s = divmod(rest, n_status)
            self.sink.inc("perfray_requests", int(count),
                          {**cell_tags, "phase": phases[p], "op": ops[o], "status": statuses[s]})
        latency = batch.column("latency_ns").to_numpy(zero_copy_only=False)
        timed = (status == "ok") | (status == "timeout")
        pair = phase * n_op + op
        for key in np.unique(pair[timed]):
            p, o = divmod(int(key), n_op)
            self._observe("perfray_latency_ms", latency[timed & (pair == key)] / 1e6,
                              {**cell_tags, "phase": phases[p], "op": ops[o]})
        sent = status != "dropped"
        self._observe("perfray_schedule_lag_ms",
                          batch.column("schedule_lag_ns").to_numpy(zero_copy_only=False)[sent] / 1e6, cell_tags)
        batch_ids = batch.column("batch_id").to_numpy(zero_copy_only=False)[sent]
        sizes = batch.column("batch_size").to_numpy(zero_copy_only=False)[sent]
        _, first = np.unique(batch_ids, return_index=True)
        self._observe("perfray_batch_size", sizes[first], cell_tags)
        self.sink.set("perfray_achieved_qps", float((status == "ok").sum()) / elapsed, actor_tags)
        if "cache_hit" in batch.schema.names:
            hit = batch.column("cache_hit")
            if hit.null_count < batch.num_rows:  # null: the system has no cache
                self.sink.inc("perfray_cache_lookups", batch.num_rows - hit.null_count, cell_tags)
                self.sink.inc("perfray_cache_hits", int(pc.sum(hit).as_py() or 0), cell_tags)

    def pools(self, stats: dict[str, dict[str, int]]) -> None:
        """Connection-pool gauges of this actor's clients, per store and state."""
        for store, states in stats.items():
            for state in ("active", "idle"):
                if state in states:
                    self.sink.set("perfray_pool_connections", states[state],
                                  {"run": self.run, "actor": str(self.actor), "store": store, "state": state})
