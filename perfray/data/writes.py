"""Writes while searching (``load.writes``): what each of a cell's writes does, seeded by the cell, so every load
actor, the driver (which undoes them once the cell is over) and the recall scoring agree.

Write ``j`` of a cell (in schedule order): an **insert** adds item ``n + j`` with a new vector, a base item's
vector moved by a small seeded step (a new point among the data, found as its own nearest neighbour when it is
searched for); an **upsert** gives an existing item (a seeded draw, each item at most once per cell) such a new
vector; a **delete** removes an existing item. ``touched`` are the items a write changes: a search's answer
about them depends on when it ran relative to the writes, so recall in a cell with writes is scored over the
other items (their exact neighbours do not move), and what the writes did is measured by freshness: probe
searches at a written vector until the store shows the write.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEP = 0.05  # an inserted / upserted vector: a base vector plus Gaussian noise of this share of the data's spread


@dataclass(frozen=True)
class WriteSet:
    """A cell's writes: ``ids[j]`` and ``vectors[j]`` of write ``j`` (for a delete, the deleted item's vector:
    what its probe searches at); ``probe[j]``: followed by freshness probes."""

    kind: str
    ids: np.ndarray  # (n_writes,) int64
    vectors: np.ndarray  # (n_writes, dim) float32
    probe: np.ndarray  # (n_writes,) bool
    n_items: int  # the dataset's items before any write
    probe_interval_ns: int
    probe_limit_ns: int
    visibility_ns: int = 0

    def __len__(self) -> int:
        return int(self.ids.size)

    @property
    def touched(self) -> np.ndarray:
        """Sorted ids of the items the writes change (for inserts: the new items)."""
        return np.unique(self.ids)


def cell_writes(dataset, spec, n_writes: int, seed: int, cell: int) -> WriteSet:
    """The ``n_writes`` writes of one cell for ``load.writes`` ``spec`` (a ``WriteSpec``)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, cell, 0x3717E6]))
    n, base = dataset.n, dataset.base
    if spec.kind == "insert":
        ids = n + np.arange(n_writes, dtype=np.int64)
    elif n_writes > n:
        raise ValueError(f"load.writes: {n_writes:,} {spec.kind}s in one cell, but the dataset has {n:,} items "
                         "(each is written at most once per cell): lower load.writes.rate or the cell's duration")
    else:
        ids = rng.choice(n, n_writes, replace=False).astype(np.int64)
    if spec.kind == "delete":
        vectors = base[ids]
    else:
        source = rng.integers(0, n, n_writes)
        noise = rng.normal(0.0, STEP * float(base.std()), size=(n_writes, base.shape[1]))
        vectors = (base[source] + noise).astype(np.float32)
    probe = np.zeros(n_writes, dtype=bool)
    if n_writes and spec.freshness_sample:
        probe[np.unique(np.linspace(0, n_writes - 1, min(spec.freshness_sample, n_writes)).round().astype(int))] = True
    return WriteSet(spec.kind, ids, np.ascontiguousarray(vectors, dtype=np.float32), probe, n,
                    int(spec.probe_interval_ms * 1e6), int(spec.probe_limit_ms * 1e6), int(spec.visibility_ms * 1e6))


def shown(writes: WriteSet, j: int, top_id: int) -> bool:
    """Whether a search at write ``j``'s vector whose nearest item was ``top_id`` shows the write: an insert or
    upsert found, a delete gone."""
    item = int(writes.ids[j])
    return top_id != item if writes.kind == "delete" else top_id == item
