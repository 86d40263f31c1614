"""Per-request rows for one cell, held in preallocated columns and drained as Arrow record batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from perfray.data.groundtruth import recall as recall_of
from perfray.data.groundtruth import stable_truth
from perfray.schema import REQUEST_SCHEMA, STAGES, STATUS_CODE, STATUSES

NODE_TYPE = REQUEST_SCHEMA.field("load_node").type

NULL_NS = 0


class Recorder:
    """One row per scheduled request; a row leaves (``drain``) once its status is final. Single-row calls
    (the per-request path) write scalars, not slices; recall is computed at drain time, vectorised over every
    reply since the last drain, so scoring a reply costs the hot path nothing but keeping its ids."""

    def __init__(self, cell: int, actor: int, seq: np.ndarray, intended_ns: np.ndarray, phase: np.ndarray,
                 op: np.ndarray, op_k: np.ndarray, op_queries: np.ndarray, phase_names: list[str],
                 op_names: list[str]) -> None:
        n = seq.size
        self.cell, self.actor = cell, actor
        self.seq, self.intended_ns, self.phase, self.op = seq, intended_ns, phase, op
        self.k = op_k[op].astype(np.int32)
        self.n_queries = op_queries[op].astype(np.int32)
        self.phase_names, self.op_names = phase_names, op_names
        # np.full, not np.zeros: every page is touched now, before the first request, so no first-touch page
        # fault lands in a measured send or reply and the actor's memory is flat through the cell (np.zeros
        # pages were committed as the cell advanced: ~26 B a request, read as growth by benchmarks/soak.py)
        self.status = np.full(n, 0, dtype=np.int16)
        self.error = np.full(n, -1, dtype=np.int16)
        self.sent_ns = np.full(n, 0, dtype=np.int64)
        self.done_ns = np.full(n, 0, dtype=np.int64)
        self.batch_id = np.full(n, -1, dtype=np.int64)
        self.batch_size = np.full(n, 0, dtype=np.int32)
        self.batch_queries = np.full(n, 0, dtype=np.int32)
        self.endpoint = np.full(n, -1, dtype=np.int16)
        self.recall = np.full(n, np.nan, dtype=np.float32)
        self.stage_ns = {name: np.full(n, -1, dtype=np.int64) for name in STAGES}
        self.cache_hit = np.full(n, -1, dtype=np.int8)
        self.freshness_ns = np.full(n, -1, dtype=np.int64)  # a probed write: ack -> first search showing it
        self.stale_hits = np.full(n, -1, dtype=np.int16)  # a scored read in a cell with writes: deleted ids returned
        self.error_names: list[str] = []
        self._final: list[tuple[int, int]] = []  # finished ranges of several rows
        self._final_rows: list[int] = []  # finished single rows (the per-request path): ints, not tuples
        self._to_score: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # (a, b, found ids, pool rows)
        self._truth: tuple[np.ndarray, np.ndarray] | None = None
        self._ignore: np.ndarray | None = None
        self._depth: np.ndarray | None = None
        self._deleted: list[tuple[int, int]] = []  # (item, when its delete was acknowledged)
        self.visibility_ns = 0  # load.writes.visibility_ms: how long a store may take to show a write
        self.counts = dict.fromkeys(STATUSES[1:], 0)

    def score_against(self, gt_ids: np.ndarray | None, gt_dists: np.ndarray | None,
                      ignore: np.ndarray | None = None) -> None:
        """Exact neighbours of the query pool: replies passed to ``finish(found_ids=...)`` get their recall. With
        ``ignore`` (the items a cell's writes touch), over the other items (``groundtruth.stable_truth``)."""
        self._truth, self._ignore, self._depth = None if gt_ids is None else (gt_ids, gt_dists), None, None
        if gt_ids is not None and ignore is not None:
            ids, dists, self._depth = stable_truth(gt_ids, gt_dists, ignore)
            self._truth, self._ignore = (ids, dists), ignore

    def deleted(self, item: int, acked_ns: int) -> None:
        """A delete was acknowledged: a read sent more than ``visibility_ns`` later that returns the item counts it
        as a stale hit (``stale_hits``)."""
        self._deleted.append((item, acked_ns))

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
        if b == a + 1:
            self.sent_ns[a] = sent_ns
            self.batch_id[a] = batch_id
            self.batch_size[a] = 1
            self.batch_queries[a] = n_queries
            return
        self.sent_ns[a:b] = sent_ns
        self.batch_id[a:b] = batch_id
        self.batch_size[a:b] = b - a
        self.batch_queries[a:b] = n_queries

    def started(self, a: int, b: int, sent_ns: int) -> None:
        """When the system's client actually began the call (after perfray's hand-off to a client thread)."""
        if b == a + 1:
            if sent_ns > self.sent_ns[a]:
                self.sent_ns[a] = sent_ns
            return
        self.sent_ns[a:b] = np.maximum(self.sent_ns[a:b], sent_ns)

    def finish(self, a: int, b: int, status: str, done_ns: int = NULL_NS, endpoint: int = -1,
               recall: np.ndarray | None = None, error: str | None = None, stages: dict | None = None,
               found_ids: np.ndarray | None = None, q_index: np.ndarray | None = None,
               freshness_ns: int | None = None) -> None:
        """Give rows ``[a, b)`` their final status; from here on they are drained. ``stages`` holds the
        call's per-stage spans (``vector_ns`` …) and ``cache_hit``, when the system reports them;
        ``found_ids`` (one row of ids per query, pool rows ``q_index``; or a callable that returns them, so a
        reply is decoded off the hot path) is scored against the truth at drain."""
        if b == a + 1:
            self.status[a] = STATUS_CODE[status]
            self.done_ns[a] = done_ns
            self.endpoint[a] = endpoint
        else:
            self.status[a:b] = STATUS_CODE[status]
            self.done_ns[a:b] = done_ns
            self.endpoint[a:b] = endpoint
        if found_ids is not None and self._truth is not None:
            self._to_score.append((a, b, found_ids, q_index))
        if recall is not None:
            self.recall[a:b] = recall
        if freshness_ns is not None:
            self.freshness_ns[a:b] = freshness_ns
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
        if b == a + 1:
            self._final_rows.append(a)
        else:
            self._final.append((a, b))

    def pending(self) -> int:
        return len(self) - sum(self.counts.values())

    def drain(self) -> pa.RecordBatch | None:
        """Rows finished since the last drain, as one record batch (None if there are none)."""
        rows = self.drain_rows()
        return rows.to_batch() if rows is not None else None

    def drain_rows(self) -> DrainedRows | None:
        """Rows finished since the last drain, as plain columns (None if there are none): what a generator
        process hands its load actor, which builds the Arrow batch (``to_batch``) off the generator's core."""
        if not self._final and not self._final_rows:
            return None
        self.score()
        idx = np.array(self._final_rows, dtype=np.int64)
        if self._final:
            idx = np.concatenate([idx, _expand(self._final)])
        self._final, self._final_rows = [], []
        idx.sort()
        if idx[-1] - idx[0] + 1 == idx.size:  # the usual case: a slice, so columns are views, not gathers
            idx = slice(int(idx[0]), int(idx[-1]) + 1)
        return DrainedRows(
            self.cell, self.actor, self.seq[idx], self.phase[idx], list(self.phase_names), self.op[idx],
            list(self.op_names), self.k[idx], self.n_queries[idx], self.status[idx], self.error[idx],
            list(self.error_names), self.intended_ns[idx], self.sent_ns[idx], self.done_ns[idx],
            self.batch_id[idx], self.batch_size[idx], self.batch_queries[idx], self.endpoint[idx],
            self.recall[idx], {name: self.stage_ns[name][idx] for name in STAGES}, self.cache_hit[idx],
            self.freshness_ns[idx], self.stale_hits[idx])

    def score(self, limit: int | None = None) -> int:
        """Recall of up to ``limit`` replies kept since the last drain (all when None), one vectorised pass
        per distinct k; returns how many are still waiting (``drain`` scores the rest)."""
        todo = self._to_score if limit is None else self._to_score[:limit]
        self._to_score = self._to_score[len(todo):]
        ranges, found_rows, q_parts = [], [], []
        for a, b, ids, q in todo:
            got = ids() if callable(ids) else ids
            if got is not None:
                ranges.append((a, b))
                found_rows.extend(got)
                q_parts.append(q)
        if ranges:
            self._score_rows(_expand(ranges), found_rows, np.concatenate(q_parts))
        return len(self._to_score)

    def _score_rows(self, requests: np.ndarray, found_rows: list, q_index: np.ndarray) -> None:
        counts = self.n_queries[requests]
        per_query_k = np.repeat(self.k[requests], counts)
        found = _id_matrix(found_rows)
        gt_ids, gt_dists = self._truth
        per_query = np.empty(q_index.size, dtype=np.float64)
        for k in np.unique(per_query_k):
            rows = per_query_k == k
            per_query[rows] = recall_of(found[rows], gt_ids[q_index[rows]], gt_dists[q_index[rows]], int(k),
                                        self._ignore)
        per_query[gt_ids[q_index, 0] < 0] = np.nan  # a row outside a large pool's sampled truth: not scored
        if self._depth is not None:  # writes touched so many of its neighbours that its top-k is not known
            per_query[self._depth[q_index] < per_query_k] = np.nan
        starts = np.cumsum(counts) - counts
        self.recall[requests] = (np.add.reduceat(per_query, starts) / counts).astype(np.float32)
        if self._ignore is not None:  # a cell with writes: deleted items returned after their delete showed
            self.stale_hits[requests] = np.add.reduceat(self._stale(requests, counts, found), starts)

    def _stale(self, requests: np.ndarray, counts: np.ndarray, found: np.ndarray) -> np.ndarray:
        """Per query of ``requests``: how many of its ids were deleted (acknowledged) more than ``visibility_ns``
        before the request was sent."""
        if not self._deleted:
            return np.zeros(found.shape[0], dtype=np.int64)
        items, acked = (np.array(column, dtype=np.int64) for column in zip(*self._deleted, strict=True))
        order = np.argsort(items)
        items, acked = items[order], acked[order]
        at = np.clip(np.searchsorted(items, found), 0, items.size - 1)
        sent = np.repeat(self.sent_ns[requests], counts)[:, None]
        return ((items[at] == found) & (acked[at] + self.visibility_ns < sent)).sum(axis=1)


@dataclass
class DrainedRows:
    """Finished rows as plain numpy columns (cheap to gather and to pickle); ``to_batch`` builds the Arrow batch.
    Rows are final once drained, so columns may be views into the recorder's."""

    cell: int
    actor: int
    seq: np.ndarray
    phase: np.ndarray
    phase_names: list[str]
    op: np.ndarray
    op_names: list[str]
    k: np.ndarray
    n_queries: np.ndarray
    status: np.ndarray
    error: np.ndarray
    error_names: list[str]
    intended_ns: np.ndarray
    sent_ns: np.ndarray
    done_ns: np.ndarray
    batch_id: np.ndarray
    batch_size: np.ndarray
    batch_queries: np.ndarray
    endpoint: np.ndarray
    recall: np.ndarray
    stage_ns: dict[str, np.ndarray]
    cache_hit: np.ndarray
    freshness_ns: np.ndarray
    stale_hits: np.ndarray

    def __len__(self) -> int:
        return self.seq.size

    def to_batch(self) -> pa.RecordBatch:
        sent, done, intended = self.sent_ns, self.done_ns, self.intended_ns
        no_sent, no_done = sent == NULL_NS, done == NULL_NS
        err, recall = self.error, self.recall

        def ns(values: np.ndarray, mask: np.ndarray) -> pa.Array:
            return pa.array(values, type=pa.int64(), mask=mask)

        def labels(codes: np.ndarray, names: list[str], mask: np.ndarray | None = None) -> pa.Array:
            indices = pa.array(codes.astype(np.int16), mask=mask)
            return pa.DictionaryArray.from_arrays(indices, pa.array(names, type=pa.string()))

        size = intended.size
        columns = [
            pa.array(np.full(size, self.cell, dtype=np.int32)),
            pa.array(np.full(size, self.actor, dtype=np.int16)),
            pa.array(self.seq),
            labels(self.phase, self.phase_names),
            labels(self.op, self.op_names),
            pa.array(self.k),
            pa.array(self.n_queries),
            labels(self.status, list(STATUSES)),
            labels(np.maximum(err, 0), self.error_names or [""], mask=err < 0),
            pa.array(intended),
            ns(sent, no_sent),
            ns(done, no_done),
            ns(done - intended, no_done),
            ns(done - sent, no_done | no_sent),
            ns(sent - intended, no_sent),
            pa.array(self.batch_id, mask=self.batch_id < 0),
            pa.array(self.batch_size, mask=no_sent),
            pa.array(self.batch_queries, mask=no_sent),
            pa.array(self.endpoint, mask=no_sent),
            pa.array(recall, mask=np.isnan(recall)),
            *(pa.array(self.stage_ns[name], mask=self.stage_ns[name] < 0) for name in STAGES),
            pa.array(self.cache_hit == 1, mask=self.cache_hit < 0),
            ns(self.freshness_ns, self.freshness_ns < 0),
            pa.array(self.stale_hits, mask=self.stale_hits < 0),
            pa.nulls(size, NODE_TYPE),  # load_node, search_node: the driver knows them (RowGatherer)
            pa.nulls(size, NODE_TYPE),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=REQUEST_SCHEMA)


def _expand(ranges: list[tuple[int, int]]) -> np.ndarray:
    """Row indices of ``[a, b)`` ranges, in the given order, without a Python loop over rows."""
    bounds = np.array(ranges, dtype=np.int64).reshape(-1, 2)
    lengths = bounds[:, 1] - bounds[:, 0]
    if (lengths == 1).all():
        return bounds[:, 0]
    return np.repeat(bounds[:, 0] - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())


def _id_matrix(rows: list) -> np.ndarray:
    """Per-query id lists or arrays as one matrix, padded with -1 (a miss); ids that are not integers too."""
    widths = [len(row) for row in rows]
    width = max(widths, default=0)
    if widths and min(widths) == width:
        try:
            return np.array(rows, dtype=np.int64).reshape(len(rows), width)
        except (TypeError, ValueError, OverflowError):
            pass
    found = np.full((len(rows), width), -1, dtype=np.int64)
    for i, row in enumerate(rows):
        try:
            found[i, : len(row)] = row
        except (TypeError, ValueError, OverflowError):
            continue
    return found
