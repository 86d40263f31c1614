"""Per-request rows for one cell, held in preallocated columns and drained as Arrow record batches."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from perfray.schema import REQUEST_SCHEMA, STAGES, STATUS_CODE, STATUSES

NULL_NS = 0


class Recorder:
    """One row per scheduled request; a row leaves (``drain``) once its status is final."""

    def __init__(self, cell: int, actor: int, seq: np.ndarray, intended_ns: np.ndarray, phase: np.ndarray,
                 op: np.ndarray, op_k: np.ndarray, op_queries: np.ndarray, phase_names: list[str],
                 op_names: list[str]) -> None:
        n = seq.size
        self.cell, self.actor = cell, actor
        self.seq, self.intended_ns, self.phase, self.op = seq, intended_ns, phase, op
        self.k = op_k[op].astype(np.int32)
        self.n_queries = op_queries[op].astype(np.int32)
        self.phase_names, self.op_names = phase_names, op_names
        self.status = np.zeros(n, dtype=np.int16)
        self.error = np.full(n, -1, dtype=np.int16)
        self.sent_ns = np.zeros(n, dtype=np.int64)
        self.done_ns = np.zeros(n, dtype=np.int64)
        self.batch_id = np.full(n, -1, dtype=np.int64)
        self.batch_size = np.zeros(n, dtype=np.int32)
        self.batch_queries = np.zeros(n, dtype=np.int32)
        self.endpoint = np.full(n, -1, dtype=np.int16)
        self.recall = np.full(n, np.nan, dtype=np.float32)
        self.stage_ns = {name: np.full(n, -1, dtype=np.int64) for name in STAGES}
        self.cache_hit = np.full(n, -1, dtype=np.int8)
        self.error_names: list[str] = []
        self._final: list[tuple[int, int]] = []
        self.counts = dict.fromkeys(STATUSES[1:], 0)

    @classmethod
    def warm_up(cls) -> None:
        """Build one throwaway batch: pyarrow's first use costs ~0.2 s, which must not land mid-cell."""
        one = np.zeros(1, dtype=np.int64)
        rec = cls(0, 0, one, one, one.astype(np.int16), one.astype(np.int16), np.ones(1), np.ones(1), ["w"], ["w"])
        rec.finish(0, 1, "error", done_ns=1, error="warmup")
        rec.drain()

    def __len__(self) -> int:
        return self.seq.size

    def sent(self, a: int, b: int, sent_ns: int, batch_id: int, n_queries: int) -> None:
        self.sent_ns[a:b] = sent_ns
        self.batch_id[a:b] = batch_id
        self.batch_size[a:b] = b - a
        self.batch_queries[a:b] = n_queries

    def started(self, a: int, b: int, sent_ns: int) -> None:
        """When the system's client actually began the call (after perfray's hand-off to a client thread)."""
        self.sent_ns[a:b] = np.maximum(self.sent_ns[a:b], sent_ns)

    def finish(self, a: int, b: int, status: str, done_ns: int = NULL_NS, endpoint: int = -1,
               recall: np.ndarray | None = None, error: str | None = None, stages: dict | None = None) -> None:
        """Give rows ``[a, b)`` their final status; from here on they are drained. ``stages`` holds the
        call's per-stage spans (``vector_ns`` …) and ``cache_hit``, when the system reports them."""
        self.status[a:b] = STATUS_CODE[status]
        self.done_ns[a:b] = done_ns
        self.endpoint[a:b] = endpoint
        if recall is not None:
            self.recall[a:b] = recall
        if error is not None:
            if error not in self.error_names:
                self.error_names.append(error)
            self.error[a:b] = self.error_names.index(error)
        if stages:
            for name, value in stages.items():
                if name == "cache_hit":
                    self.cache_hit[a:b] = int(value)
                elif value is not None:
                    self.stage_ns[name][a:b] = value
        self.counts[status] += b - a
        self._final.append((a, b))

    def pending(self) -> int:
        return len(self) - sum(self.counts.values())

    def drain(self) -> pa.RecordBatch | None:
        """Rows finished since the last drain, as one record batch (None if there are none)."""
        if not self._final:
            return None
        ranges, self._final = sorted(self._final), []
        merged = [list(ranges[0])]
        for a, b in ranges[1:]:
            if a == merged[-1][1]:
                merged[-1][1] = b
            else:
                merged.append([a, b])
        if len(merged) == 1:  # the usual case: a slice, so columns are views, not gathers
            return self._batch(slice(*merged[0]))
        return self._batch(np.concatenate([np.arange(a, b) for a, b in merged]))

    def _batch(self, idx: np.ndarray | slice) -> pa.RecordBatch:
        sent, done, intended = self.sent_ns[idx], self.done_ns[idx], self.intended_ns[idx]
        no_sent, no_done = sent == NULL_NS, done == NULL_NS
        err = self.error[idx]
        recall = self.recall[idx]

        def ns(values: np.ndarray, mask: np.ndarray) -> pa.Array:
            return pa.array(values, type=pa.int64(), mask=mask)

        def labels(codes: np.ndarray, names: list[str], mask: np.ndarray | None = None) -> pa.Array:
            indices = pa.array(codes.astype(np.int16), mask=mask)
            return pa.DictionaryArray.from_arrays(indices, pa.array(names, type=pa.string()))

        size = intended.size
        columns = [
            pa.array(np.full(size, self.cell, dtype=np.int32)),
            pa.array(np.full(size, self.actor, dtype=np.int16)),
            pa.array(self.seq[idx]),
            labels(self.phase[idx], self.phase_names),
            labels(self.op[idx], self.op_names),
            pa.array(self.k[idx]),
            pa.array(self.n_queries[idx]),
            labels(self.status[idx], list(STATUSES)),
            labels(np.maximum(err, 0), self.error_names or [""], mask=err < 0),
            pa.array(intended),
            ns(sent, no_sent),
            ns(done, no_done),
            ns(done - intended, no_done),
            ns(done - sent, no_done | no_sent),
            ns(sent - intended, no_sent),
            pa.array(self.batch_id[idx], mask=self.batch_id[idx] < 0),
            pa.array(self.batch_size[idx], mask=no_sent),
            pa.array(self.batch_queries[idx], mask=no_sent),
            pa.array(self.endpoint[idx], mask=no_sent),
            pa.array(recall, mask=np.isnan(recall)),
            *(pa.array(self.stage_ns[name][idx], mask=self.stage_ns[name][idx] < 0) for name in STAGES),
            pa.array(self.cache_hit[idx] == 1, mask=self.cache_hit[idx] < 0),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=REQUEST_SCHEMA)
