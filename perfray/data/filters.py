"""Filtered search: which items each query may return.

Every item gets a seeded integer attribute ``attr``, a permutation of ``0 … n-1`` drawn from the dataset's
fingerprint (so every store, actor and ground-truth run derives the same one). A filter of selectivity ``s``
gives each query-pool row its own window ``lo <= attr < lo + m`` with ``m = round(s · n)`` (at least 1) and ``lo``
seeded per row: exactly ``m`` items pass for every query, as with VectorDBBench's integer filter, while different
queries see different subsets (a recommendation's filter depends on its user). Stores apply the window
natively (``WHERE attr >= lo AND attr < hi``, a filter expression, a mask on the GPU); ground truth is the exact
top-k among the items that pass.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


def item_attr(dataset) -> np.ndarray:
    """(n,) int64: each item's attribute, a permutation of 0 … n-1 seeded by the dataset's content."""
    rng = np.random.default_rng(int(dataset.fingerprint[:16], 16) ^ 0x5EED)
    return rng.permutation(dataset.n).astype(np.int64)


@dataclass(frozen=True)
class QueryFilters:
    """One selectivity's windows: ``windows[row] = (lo, hi)`` per query-pool row, over ``attr``."""

    selectivity: float
    width: int
    windows: np.ndarray  # (n_pool, 2) int64

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.windows.tobytes()).hexdigest()[:16]


def query_filters(dataset, selectivity: float) -> QueryFilters:
    """Each pool row's window of ``round(selectivity · n)`` attribute values (seeded by the dataset and
    selectivity: the same for every actor, store and ground-truth run)."""
    if not 0 < selectivity <= 1:
        raise ValueError(f"filter selectivity: expected a number in (0, 1], got {selectivity!r}")
    n, n_pool = dataset.n, dataset.queries.shape[0]
    width = max(1, int(round(selectivity * n)))
    seed = int(dataset.fingerprint[:16], 16) ^ int(round(selectivity * 1e9))
    lo = np.random.default_rng(seed).integers(0, n - width + 1, size=n_pool, dtype=np.int64)
    return QueryFilters(float(selectivity), width, np.stack([lo, lo + width], axis=1))


def windows_of(filters: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    """The windows of the requests asking pool ``rows`` (None when the cell has no filter)."""
    return None if filters is None else filters[np.asarray(rows, dtype=np.int64)]


def pool_windows(workload, dataset) -> np.ndarray | None:
    """The filter windows of ``dataset``'s query pool for ``workload.filter`` (None without a filter)."""
    spec = getattr(workload, "filter", None)
    return query_filters(dataset, spec.selectivity).windows if spec is not None else None
