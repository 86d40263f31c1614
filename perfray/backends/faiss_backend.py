"""FAISS exact flat index: on GPU when FAISS sees one, else on CPU."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from perfray.backends.base import check_build_input, check_search_input, drop_excluded


class FaissBackend:
    """``IndexFlatL2``; moved to GPU 0 of this process when ``faiss.get_num_gpus() > 0``."""

    name: ClassVar[str] = "faiss"
    exact: ClassVar[bool] = True
    extra: ClassVar[str] = "faiss"

    def __init__(self) -> None:
        self._index = None
        self._on_gpu = False
        self._resources = None
        self._by_attr = self._attr_sorted = None

    @classmethod
    def is_available(cls) -> bool:
        try:
            import faiss  # noqa: F401
        except ImportError:
            return False
        return True

    @classmethod
    def uses_gpu(cls) -> bool:
        try:
            import faiss
        except ImportError:
            return False
        return getattr(faiss, "get_num_gpus", lambda: 0)() > 0

    def build(self, vectors: np.ndarray, attr: np.ndarray | None = None) -> None:
        import faiss

        base = check_build_input(vectors)
        self._by_attr = np.argsort(attr).astype(np.int64) if attr is not None else None  # ids in attribute order
        self._attr_sorted = attr[self._by_attr] if attr is not None else None
        index = faiss.IndexFlatL2(base.shape[1])
        if self.uses_gpu():
            self._resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._resources, 0, index)
            self._on_gpu = True
        index.add(base)
        self._index = index

    def search(self, queries: np.ndarray, k: int, windows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k per query; with ``windows``, among the items whose ``attr`` is inside the query's window (FAISS's
        ID selector, one search per query: a selector belongs to a search call)."""
        if self._index is None:
            raise RuntimeError("build() must be called before search()")
        q = check_search_input(queries, self._index.d, k, self._index.ntotal)
        if windows is None:
            dists, ids = self._index.search(q, k)
            return ids.astype(np.int64, copy=False), dists
        import faiss

        ids = np.full((q.shape[0], k), -1, dtype=np.int64)
        dists = np.full((q.shape[0], k), np.inf, dtype=np.float32)
        lo, hi = np.searchsorted(self._attr_sorted, windows[:, 0]), np.searchsorted(self._attr_sorted, windows[:, 1])
        for i in range(q.shape[0]):
            allowed = self._by_attr[lo[i]:hi[i]]
            selector = faiss.IDSelectorBatch(allowed.size, faiss.swig_ptr(allowed))
            d, found = self._index.search(q[i:i + 1], k, params=faiss.SearchParameters(sel=selector))
            ids[i], dists[i] = found[0], d[0]
        return drop_excluded(ids, dists)

    def synchronize(self) -> None:
        # FAISS returns host arrays, so search() has already waited for the device.
        return None

    def device_name(self) -> str:
        return "gpu (faiss)" if self._on_gpu else "cpu (faiss)"
