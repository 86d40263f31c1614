"""The yardstick for targets: a system that answers every request at once and exactly (each pool row's exact
top-k over the catalogue's vectors, computed before load starts; no store, no network). A target shipped in a
config must be one this system meets (``tests/integration/test_shipped_targets.py`` runs every config's own
targets against it)."""

from __future__ import annotations

import numpy as np

from perfray.backends.numpy_backend import NumpyBackend
from perfray.data.filters import item_attr, pool_windows
from perfray.sut.base import Answer, PerRow, SystemUnderTest


class InstantSystem(SystemUnderTest):
    name = "instant"
    supported_ops = frozenset({"knn", "hybrid", "expand", "rank"})
    async_native = True
    filterable = True

    def label(self) -> str:
        return "instant (exact answers at once)"

    def prepare(self, catalogue, gpu_handles: list | None = None) -> None:
        super().prepare(catalogue)
        self.engine = NumpyBackend(dtype=np.float64)
        self.windows = pool_windows(self.workload, catalogue.dataset)
        self.engine.build(catalogue.dataset.base, item_attr(catalogue.dataset) if self.windows is not None else None)
        self.requests = PerRow(self._exact)

    def _exact(self, vector: np.ndarray, row: int, k: int) -> np.ndarray:
        windows = self.windows[row:row + 1] if self.windows is not None else None
        return self.engine.search(vector[None, :].astype(np.float64), k, windows)[0][0]

    async def warm(self, queries: np.ndarray, k: int) -> None:
        self.requests.fill(queries, k)

    def execute(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        ids = np.stack([self.requests.get(row, k, queries[i]) for i, row in enumerate(rows.tolist())])
        return Answer(ids=ids, items=list(ids))

    async def execute_async(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        return self.execute(queries, k, rows)
