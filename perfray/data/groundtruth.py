"""Exact ground truth (float64, chunked) cached by dataset fingerprint, and recall against it.

A query pool larger than ``TRUTH_ROWS_MAX`` (e.g. 100,000 queries for realistic popularity) gets exact ground
truth for a seeded sample of that many rows only: the other rows' truth rows hold id -1, and requests that ask
them are not scored (recall NaN), so recall is measured on an unbiased sample of the requests instead of
paying an exact search of every pool row before the first request."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from perfray.backends.numpy_backend import NumpyBackend
from perfray.data.filters import item_attr

# Neighbours whose exact distance is within this relative margin of the k-th are accepted as correct:
# float32 search cannot order them reliably, and neither can any GPU.
RECALL_REL_TOL = 1e-5
EXTRA_NEIGHBOURS = 8
QUERY_CHUNK = 256
TRUTH_ROWS_MAX = 20_000


def truth_rows(dataset) -> np.ndarray | None:
    """The pool rows that get exact ground truth: all (None), or a seeded sample of ``TRUTH_ROWS_MAX``."""
    n = dataset.queries.shape[0]
    if n <= TRUTH_ROWS_MAX:
        return None
    rng = np.random.default_rng(int(dataset.fingerprint[:12], 16))
    return np.sort(rng.choice(n, TRUTH_ROWS_MAX, replace=False))


def ground_truth(dataset, k: int, cache_dir: Path | None, filters=None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, squared distances) of the exact ``k + EXTRA_NEIGHBOURS`` nearest neighbours of every query (of the
    sampled rows of a large pool: the others hold id -1 and distance NaN). With ``filters``
    (``perfray.data.filters.QueryFilters``), among the items inside each row's window only; a row whose window
    holds fewer items ends in id -1, distance +inf."""
    k_gt = min(dataset.n, k + EXTRA_NEIGHBOURS)
    key = dataset.fingerprint[:24] + (f"-f{filters.fingerprint}" if filters is not None else "")
    if cache_dir is not None:
        cached = _from_cache(Path(cache_dir), key, k_gt)
        if cached is not None:
            return cached
    rows = truth_rows(dataset)
    queries = dataset.queries if rows is None else dataset.queries[rows]
    windows = None if filters is None else (filters.windows if rows is None else filters.windows[rows])
    engine = NumpyBackend(dtype=np.float64)
    engine.build(dataset.base, attr=item_attr(dataset) if filters is not None else None)
    ids = np.empty((queries.shape[0], k_gt), dtype=np.int64)
    dists = np.empty((queries.shape[0], k_gt), dtype=np.float64)
    for lo in range(0, queries.shape[0], QUERY_CHUNK):
        hi = lo + QUERY_CHUNK
        q = queries[lo:hi].astype(np.float64)
        chunk_ids, _ = engine.search(q, k_gt, None if windows is None else windows[lo:hi])
        ids[lo:hi] = chunk_ids
        # Recompute the chosen distances directly (no norm-expansion cancellation).
        diff = dataset.base[np.maximum(chunk_ids, 0)].astype(np.float64) - q[:, None, :]
        dists[lo:hi] = np.where(chunk_ids >= 0, np.einsum("qkd,qkd->qk", diff, diff), np.inf)
    order = np.lexsort((ids, dists), axis=1)
    ids = np.take_along_axis(ids, order, axis=1)
    dists = np.take_along_axis(dists, order, axis=1)
    if rows is not None:  # the whole pool's shape: rows without truth are marked, not scored
        all_ids = np.full((dataset.queries.shape[0], k_gt), -1, dtype=np.int64)
        all_dists = np.full((dataset.queries.shape[0], k_gt), np.nan)
        all_ids[rows], all_dists[rows] = ids, dists
        ids, dists = all_ids, all_dists
    if cache_dir is not None:
        _to_cache(Path(cache_dir), key, ids, dists)
    return ids, dists


def truth_coverage(gt_ids: np.ndarray) -> dict:
    """What the manifest says about a dataset's ground truth."""
    rows = int((gt_ids[:, 0] >= 0).sum())
    total = int(gt_ids.shape[0])
    return {"rows": rows, "of": total, "how": "exact, every pool row" if rows == total else
            f"exact, a seeded sample of {rows:,} of {total:,} pool rows (requests asking the others are not scored)"}


def _from_cache(cache_dir: Path, key: str, k_gt: int):
    for path in sorted(cache_dir.glob(f"gt-{key}-k*.npz")):
        k_cached = int(path.stem.rsplit("-k", 1)[1])
        if k_cached >= k_gt:
            with np.load(path) as z:
                return z["ids"][:, :k_gt].copy(), z["dists"][:, :k_gt].copy()
    return None


def _to_cache(cache_dir: Path, key: str, ids: np.ndarray, dists: np.ndarray) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / f"gt-{key}-k{ids.shape[1]}.npz"
    tmp = final.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, ids=ids, dists=dists)
    os.replace(tmp, final)


def recall(found_ids: np.ndarray, gt_ids: np.ndarray, gt_dists: np.ndarray, k: int,
           ignore: np.ndarray | None = None) -> np.ndarray:
    """Per query: share of the k returned ids that are true k-nearest neighbours (within tolerance). Each id
    counts once however often a reply repeats it; -1 and ids outside the dataset are misses. Where a filter
    lets fewer than k items through, the share is of those (all of them found: 1.0). ``ignore`` (sorted ids:
    the items a cell's writes touch, whose truth ``stable_truth`` left out) are neither hits nor misses: a reply
    holding r of them is scored on its other k - r ids, which must be the truth's first k - r."""
    found = found_ids[:, :k]
    threshold = gt_dists[:, k - 1 : k] * (1 + RECALL_REL_TOL) + 1e-12
    accepted = (gt_dists <= threshold) & (gt_ids >= 0)
    hits = ((found[:, :, None] == gt_ids[:, None, :]) & accepted[:, None, :]).any(axis=2)
    possible = np.minimum((gt_ids[:, :k] >= 0).sum(axis=1), k)
    if ignore is not None:
        possible = possible - (np.isin(found, ignore) & _first_occurrence(found)).sum(axis=1)
    return (hits & _first_occurrence(found)).sum(axis=1) / np.maximum(possible, 1)


def stable_truth(gt_ids: np.ndarray, gt_dists: np.ndarray, touched: np.ndarray):
    """The truth without the items ``touched`` by a cell's writes: (ids, dists, depth), each row's remaining
    neighbours moved to the front (-1 / inf behind them); ``depth``: how many remain per row (a row left with
    fewer than k cannot be scored at k)."""
    gone = np.isin(gt_ids, touched)
    order = np.argsort(gone, axis=1, kind="stable")
    ids = np.take_along_axis(gt_ids, order, axis=1)
    dists = np.take_along_axis(gt_dists, order, axis=1).astype(np.float64)
    moved = np.take_along_axis(gone, order, axis=1)
    ids[moved], dists[moved] = -1, np.inf
    return ids, dists, (~gone & (gt_ids >= 0)).sum(axis=1)


def _first_occurrence(found: np.ndarray) -> np.ndarray:
    """True where an id appears in its row for the first time."""
    order = np.argsort(found, axis=1, kind="stable")
    ranked = np.take_along_axis(found, order, axis=1)
    repeat = np.zeros(found.shape, dtype=bool)
    repeat[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
    first = np.empty(found.shape, dtype=bool)
    np.put_along_axis(first, order, ~repeat, axis=1)
    return first
