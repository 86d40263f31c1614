"""Filtered search: which items each query may return.

Every item gets a seeded integer attribute ``attr``, a permutation of ``0 … n-1`` drawn from the dataset's
fingerprint (so every store, actor and ground-truth run derives the same one). A filter of selectivity ``s``
gives each query-pool row its own window ``lo <= attr < lo + m`` with ``m = round(s · n)`` (at least 1) and ``lo``
seeded per row: exactly ``m`` items pass for every query, as with VectorDBBench's integer filter, while different
queries see different subsets (a recommendation's filter depends on its user). Stores apply the window
natively (``WHERE attr >= lo AND attr < hi``, a filter expression, a mask on the GPU); ground truth is the exact
top-k among the items that pass.

``field: genre`` filters by label instead, like VectorDBBench's label filter: every item carries a genre label
(``genre_label``) whose shares are ``GENRE_SHARES`` (50% … 0.1%, the rest "other"), and a filter of selectivity
``s`` asks every query for the genre holding exactly ``round(s · n)`` items (``genre_label = g`` in the stores).
The labels are cut from ``attr`` (genre ``g`` = the items whose ``attr`` lies in ``[start_g, end_g)``), so the
GPU mask and ground truth use the same windows as a range filter and stay exact.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


def item_attr(dataset) -> np.ndarray:
    """(n,) int64: each item's attribute, a permutation of 0 … n-1 seeded by the dataset's content."""
    rng = np.random.default_rng(int(dataset.fingerprint[:16], 16) ^ 0x5EED)
    return rng.permutation(dataset.n).astype(np.int64)


# The genre labels' shares of the items (label i), most to least common; the items left over are "other".
GENRE_SHARES = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
FILTER_FIELDS = ("attr", "genre")


def genre_bounds(n: int) -> np.ndarray:
    """(len(GENRE_SHARES) + 2,) int64: genre ``g`` is the items whose ``attr`` is in ``[bounds[g], bounds[g+1])``;
    the last range is "other". A dataset too small for every genre leaves the rarest ones empty."""
    sizes = [max(1, int(round(share * n))) for share in GENRE_SHARES]
    return np.minimum(np.concatenate([[0], np.cumsum(sizes), [n]]), n).astype(np.int64)


def item_genre_label(dataset) -> np.ndarray:
    """(n,) int64: each item's genre label, ``0 … len(GENRE_SHARES)`` (the last: "other")."""
    return np.searchsorted(genre_bounds(dataset.n), item_attr(dataset), side="right").astype(np.int64) - 1


def genre_of_selectivity(selectivity: float) -> int:
    """The genre label whose share is ``selectivity`` (ValueError naming the shares there are)."""
    for label, share in enumerate(GENRE_SHARES):
        if abs(share - selectivity) <= 1e-9:
            return label
    raise ValueError(f"filter.selectivity {selectivity!r} with field genre: expected one of the genre shares "
                     f"{', '.join(f'{s:g}' for s in GENRE_SHARES)}")


@dataclass(frozen=True)
class QueryFilters:
    """One filter's windows: ``windows[row] = (lo, hi)`` per query-pool row, over ``attr``; with ``field`` genre,
    ``labels[row]`` is the genre label a row asks for (its window is that genre's ``attr`` range)."""

    selectivity: float
    width: int
    windows: np.ndarray  # (n_pool, 2) int64
    field: str = "attr"
    labels: np.ndarray | None = None  # (n_pool,) int64, field genre only

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.windows.tobytes()).hexdigest()[:16]


def query_filters(dataset, selectivity: float, field: str = "attr") -> QueryFilters:
    """Each pool row's window of ``round(selectivity · n)`` attribute values (seeded by the dataset and
    selectivity: the same for every actor, store and ground-truth run); with ``field`` genre, every row asks
    for the genre of that share."""
    if not 0 < selectivity <= 1:
        raise ValueError(f"filter selectivity: expected a number in (0, 1], got {selectivity!r}")
    n, n_pool = dataset.n, dataset.queries.shape[0]
    if field == "genre":
        label = genre_of_selectivity(selectivity)
        lo, hi = genre_bounds(n)[label:label + 2]
        if hi <= lo:
            raise ValueError(f"filter.selectivity {selectivity:g} with field genre: the dataset's {n:,} items are "
                             "too few for a genre of that share")
        windows = np.tile(np.array([[lo, hi]], dtype=np.int64), (n_pool, 1))
        return QueryFilters(float(selectivity), int(hi - lo), windows, "genre", np.full(n_pool, label, np.int64))
    if field != "attr":
        raise ValueError(f"filter.field {field!r}: expected one of {', '.join(FILTER_FIELDS)}")
    width = max(1, int(round(selectivity * n)))
    seed = int(dataset.fingerprint[:16], 16) ^ int(round(selectivity * 1e9))
    lo = np.random.default_rng(seed).integers(0, n - width + 1, size=n_pool, dtype=np.int64)
    return QueryFilters(float(selectivity), width, np.stack([lo, lo + width], axis=1))


def windows_of(filters: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    """The windows of the requests asking pool ``rows`` (None when the cell has no filter)."""
    return None if filters is None else filters[np.asarray(rows, dtype=np.int64)]


def pool_filters(workload, dataset) -> QueryFilters | None:
    """``dataset``'s query-pool filters for ``workload.filter`` (None without a filter)."""
    spec = getattr(workload, "filter", None)
    return query_filters(dataset, spec.selectivity, spec.field) if spec is not None else None


def pool_windows(workload, dataset) -> np.ndarray | None:
    """The filter windows of ``dataset``'s query pool for ``workload.filter`` (None without a filter)."""
    filters = pool_filters(workload, dataset)
    return filters.windows if filters is not None else None
