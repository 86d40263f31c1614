"""FAISS exact flat index: on GPU when FAISS sees one, else on CPU."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from perfray.backends.base import check_build_input, check_search_input


class FaissBackend:
    """``IndexFlatL2``; moved to GPU 0 of this process when ``faiss.get_num_gpus() > 0``."""

    name: ClassVar[str] = "faiss"
    exact: ClassVar[bool] = True
    extra: ClassVar[str] = "faiss"

    def __init__(self) -> None:
        self._index = None
        self._on_gpu = False
        self._resources = None

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

    def build(self, vectors: np.ndarray) -> None:
        import faiss

        base = check_build_input(vectors)
        index = faiss.IndexFlatL2(base.shape[1])
        if self.uses_gpu():
            self._resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._resources, 0, index)
            self._on_gpu = True
        index.add(base)
        self._index = index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            raise RuntimeError("build() must be called before search()")
        q = check_search_input(queries, self._index.d, k, self._index.ntotal)
        dists, ids = self._index.search(q, k)
        return ids.astype(np.int64, copy=False), dists

    def synchronize(self) -> None:
        # FAISS returns host arrays, so search() has already waited for the device.
        return None

    def device_name(self) -> str:
        return "gpu (faiss)" if self._on_gpu else "cpu (faiss)"
