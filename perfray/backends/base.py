"""The array-backend protocol and the exact top-k helpers every backend shares.

Distances are squared L2. Ties are broken by the smaller id, so any exact backend, and any split of an
index into shards, returns the same ids.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import numpy as np


class ArrayBackend(Protocol):
    """What a search backend provides. A timing that ends before ``synchronize()`` is wrong."""

    name: ClassVar[str]
    exact: ClassVar[bool]
    extra: ClassVar[str]  # the pip extra that installs it

    @classmethod
    def is_available(cls) -> bool: ...

    @classmethod
    def uses_gpu(cls) -> bool:
        """Whether search would run on a GPU in this process."""
        ...

    def build(self, vectors: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def synchronize(self) -> None: ...

    def device_name(self) -> str: ...


def order_topk(ids: np.ndarray, dists: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k smallest (dist, id) pairs in ascending order (for narrow candidate lists)."""
    order = np.lexsort((ids, dists), axis=1)[:, : min(k, ids.shape[1])]
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(dists, order, axis=1)


# select_smallest samples every SAMPLE_STRIDE-th column to bound the k-th smallest value.
SAMPLE_STRIDE = 16


def select_smallest(dists: np.ndarray, k: int, id_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-row k smallest of a dense distance block, ids = column + ``id_offset``; ties by id.

    The k-th smallest of a column sample bounds the true k-th from above, so ``dists <= bound`` keeps every
    true neighbour (and every tie) while one vectorised compare discards ~all other columns; only the few
    survivors are sorted. Much cheaper than a per-row ``argpartition`` over the whole block."""
    rows, cols = dists.shape
    k = min(k, cols)
    sample = dists[:, ::SAMPLE_STRIDE] if cols // SAMPLE_STRIDE >= k else dists
    bound = np.partition(sample, k - 1, axis=1)[:, k - 1 : k]
    loose = ~np.isfinite(bound[:, 0])
    if loose.any() and sample is not dists:  # a filter left the sample short of k finite values: the row's own k-th
        bound[loose] = np.partition(dists[loose], k - 1, axis=1)[:, k - 1 : k]
        loose = ~np.isfinite(bound[:, 0])
    bound[loose] = -np.inf  # fewer than k finite distances: such a row is ordered on its own, below
    flat = np.flatnonzero(dists <= bound)
    r, c = np.divmod(flat, cols)
    v = dists.reshape(-1)[flat]
    order = np.lexsort((c, v, r))
    r, c, v = r[order], c[order], v[order]
    starts = np.searchsorted(r, np.arange(rows))
    short = np.flatnonzero(np.bincount(r, minlength=rows) < k)  # fewer than k finite distances (NaN bound)
    take = np.minimum(starts[:, None] + np.arange(k), max(flat.size - 1, 0))
    ids, vals = (c[take].astype(np.int64), v[take]) if flat.size else (np.zeros((rows, k), np.int64),
                                                                         np.zeros((rows, k), dists.dtype))
    for row in short:  # finite first (by distance, ties by id), then inf, then NaN (each by id)
        d = dists[row]
        order = np.flatnonzero(np.isfinite(d))
        order = order[np.lexsort((order, d[order]))]
        if order.size < k:
            rest = np.flatnonzero(~np.isfinite(d))
            rest = rest[np.lexsort((rest, np.isnan(d[rest])))]
            order = np.concatenate([order, rest])
        ids[row], vals[row] = order[:k], d[order[:k]]
    return ids + id_offset, vals


def chunked_topk(xp, block, n: int, k: int, chunk: int):
    """Exact top-k, in (distance, id) order, of every row of a distance matrix that is never whole: ``block(lo,
    hi)`` gives its columns ``lo:hi`` (items ``lo … hi-1``), ``chunk`` at a time, so memory stays at rows × (chunk +
    2k) whatever k and n are. Each block is stably sorted (equal distances keep id order) and merged with the
    best so far, whose ids are all smaller: a stable sort of the pair keeps ties in id order too. ``xp``: numpy
    or cupy (both sort stably and put NaN last). Returns (ids int64, distances)."""
    best_d = best_i = None
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        d = block(lo, hi)
        order = xp.argsort(d, axis=1, kind="stable")[:, :k]
        cand_d, cand_i = xp.take_along_axis(d, order, axis=1), order.astype(xp.int64) + lo
        if best_d is not None:
            cand_d, cand_i = xp.concatenate([best_d, cand_d], axis=1), xp.concatenate([best_i, cand_i], axis=1)
            order = xp.argsort(cand_d, axis=1, kind="stable")[:, :k]
            cand_d, cand_i = xp.take_along_axis(cand_d, order, axis=1), xp.take_along_axis(cand_i, order, axis=1)
        best_d, best_i = cand_d, cand_i
    return best_i, best_d


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact merge of per-shard top-k results (ids already global)."""
    if len(parts) == 1:
        return parts[0]
    ids = np.concatenate([p[0] for p in parts], axis=1)
    dists = np.concatenate([p[1] for p in parts], axis=1)
    return order_topk(ids, dists, k)


def take_waiting(waiting: list, max_rows: int) -> tuple[list, np.ndarray | None, int, np.ndarray | None]:
    """Pop the oldest waiting ``(queries, k, answer future, filter windows or None)`` batches, up to ``max_rows``
    query rows (at least one), skipping callers that gave up; returns them, their queries stacked, the largest k
    and their windows stacked (None when none has a filter; an unfiltered batch among filtered ones passes all)."""
    taken, rows = [], 0
    while waiting and (not taken or rows + len(waiting[0][0]) <= max_rows):
        item = waiting.pop(0)
        if not item[2].done():
            taken.append(item)
            rows += len(item[0])
    if not taken:
        return taken, None, 0, None
    if len(taken) == 1:
        return taken, taken[0][0], taken[0][1], taken[0][3]
    queries = np.concatenate([item[0] for item in taken])
    return taken, queries, max(item[1] for item in taken), stack_windows([(len(i[0]), i[3]) for i in taken])


def answer_each(taken: list, result: tuple | None, error: BaseException | None) -> None:
    """Each batch of a merged search gets its own rows and its own k (rows are sorted by distance, ties by id,
    so the first k of a larger k are exactly the top-k), or the search's error. What follows ids and distances
    in ``result`` (the search actor's time spans) is the whole call's: every batch gets it as it is."""
    offset = 0
    for q, k, answer, _ in taken:
        if not answer.done():
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result((result[0][offset:offset + len(q), :k], result[1][offset:offset + len(q), :k],
                                   *result[2:]))
        offset += len(q)


ALL_ITEMS = (0, np.iinfo(np.int64).max)  # the filter window of a request without a filter


def stack_windows(parts: list[tuple[int, np.ndarray | None]]) -> np.ndarray | None:
    """The filter windows of merged batches, ``(rows, windows or None)`` each: None when none filters; a batch
    without a filter among filtered ones passes every item."""
    if all(windows is None for _, windows in parts):
        return None
    return np.concatenate([windows if windows is not None else np.tile(ALL_ITEMS, (rows, 1))
                           for rows, windows in parts])


def mask_outside(dists: np.ndarray, attr: np.ndarray, windows: np.ndarray | None) -> np.ndarray:
    """``dists`` (queries × items, items carrying ``attr``) with every item outside its query's window set to
    +inf, in place; ``windows`` None leaves it as it is."""
    if windows is not None:
        outside = (attr[None, :] < windows[:, :1]) | (attr[None, :] >= windows[:, 1:])
        dists[outside] = np.inf
    return dists


def drop_excluded(ids: np.ndarray, dists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Results past the items that passed (distance +inf) become id -1: fewer than k items may pass."""
    excluded = ~np.isfinite(dists)
    if excluded.any():
        ids = np.where(excluded, -1, ids)
    return ids, dists


def check_build_input(vectors: np.ndarray) -> np.ndarray:
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"index vectors must be a non-empty 2-D array, got shape {vectors.shape}")
    return np.ascontiguousarray(vectors, dtype=np.float32)


def check_search_input(queries: np.ndarray, dim: int, k: int, n: int) -> np.ndarray:
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim == 1:
        queries = queries[None, :]
    if queries.shape[1] != dim:
        raise ValueError(f"queries have dim {queries.shape[1]}, index has dim {dim}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (index size), got {k}")
    return np.ascontiguousarray(queries)
