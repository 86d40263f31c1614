"""CuPy brute force: cuBLAS GEMM for q·x, fused norm + multi-stage exact top-k (see ``cupy_topk``)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from perfray.backends import cupy_topk
from perfray.backends.base import check_build_input, check_search_input, chunked_topk, drop_excluded

# Upper bound on one materialised distance block (bytes); the index is scanned in column chunks.
DIST_BLOCK_BYTES = 1 << 30
# The same for k above the kernel's MAX_K, where each block is also sorted (its order array counted too).
SORT_BLOCK_BYTES = 1 << 28


class CupyBackend:
    """Exact squared-L2 search on the current CUDA device."""

    name: ClassVar[str] = "cupy"
    exact: ClassVar[bool] = True
    extra: ClassVar[str] = "gpu"

    def __init__(self) -> None:
        self._base = None
        self._norms = None
        self._attr = None
        self._n = 0
        self._dim = 0

    @classmethod
    def is_available(cls) -> bool:
        try:
            import cupy as cp

            return cp.cuda.runtime.getDeviceCount() > 0
        except Exception:  # ImportError, or a CUDA runtime without a device/driver
            return False

    @classmethod
    def uses_gpu(cls) -> bool:
        return cls.is_available()

    def build(self, vectors: np.ndarray, attr: np.ndarray | None = None) -> None:
        import cupy as cp

        base = check_build_input(vectors)
        self._base = cp.asarray(base)
        self._attr = cp.asarray(attr) if attr is not None else None
        self._norms = cp.einsum("ij,ij->i", self._base, self._base)
        self._n, self._dim = base.shape
        self.synchronize()

    def search(self, queries: np.ndarray, k: int, windows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k per query; with ``windows``, among the items whose ``attr`` is inside the query's window (a mask
        on the device: excluded items get distance +inf, and ids past the items that passed are -1)."""
        ids, dists = self.search_device(check_search_input(queries, self._dim, k, self._n), k, windows)
        return drop_excluded(ids.get(), dists.get())

    def search_device(self, queries, k: int, windows=None):
        """Search with device arrays in and out (for kernel microbenchmarks); not synchronised."""
        import cupy as cp

        if self._base is None:
            raise RuntimeError("build() must be called before search()")
        q = cp.asarray(queries, dtype=cp.float32)
        rows = q.shape[0]
        w = cp.asarray(windows) if windows is not None else None
        if k > cupy_topk.MAX_K:
            return self._search_sorted(q, k, w)
        chunk = max(k, min(self._n, DIST_BLOCK_BYTES // (4 * rows)))
        n_chunks = -(-self._n // chunk)
        t1 = cupy_topk.threads_for(rows, chunk, k)
        cand_vals = cp.empty((rows, n_chunks * t1 * k), dtype=cp.float32)
        cand_ids = cp.empty((rows, n_chunks * t1 * k), dtype=cp.int64)
        for c in range(n_chunks):
            lo = c * chunk
            hi = min(self._n, lo + chunk)
            dots = q @ self._base[lo:hi].T
            if w is not None:  # distance = norm - 2·dot: a dot of -inf puts an excluded item at +inf
                dots = cp.where(self._outside(w, lo, hi), -cp.inf, dots).astype(cp.float32, copy=False)
            cupy_topk.launch_stage(
                dots, None, self._norms[lo:hi], -2.0, rows, hi - lo, hi - lo, t1, k, lo,
                cand_vals, cand_ids, c * t1 * k,
            )
        if n_chunks * t1 == 1:
            ids, vals = cand_ids, cand_vals
        else:
            ids, vals = cupy_topk.reduce_candidates(cand_vals, cand_ids, k)
        q_norms = cp.einsum("ij,ij->i", q, q)[:, None]
        return ids, cp.maximum(vals + q_norms, 0.0)

    def _outside(self, w, lo: int, hi: int):
        attr = self._attr[lo:hi][None, :]
        return (attr < w[:, :1]) | (attr >= w[:, 1:])

    def _search_sorted(self, q, k: int, w=None):
        """k above the kernel's MAX_K: column blocks of the distance matrix, each stably sorted and merged with
        the best so far (``chunked_topk``): exact, ties by id, memory bounded by ``SORT_BLOCK_BYTES``."""
        import cupy as cp

        rows = q.shape[0]
        chunk = max(k, min(self._n, SORT_BLOCK_BYTES // (12 * rows)))  # float32 distances + int64 order

        def block(lo: int, hi: int):
            d = self._norms[None, lo:hi] - 2.0 * (q @ self._base[lo:hi].T)
            return d if w is None else cp.where(self._outside(w, lo, hi), cp.inf, d)

        ids, d = chunked_topk(cp, block, self._n, k, chunk)
        return ids, cp.maximum(d + cp.einsum("ij,ij->i", q, q)[:, None], 0.0)

    def set_attr(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Change some items' filter attribute in place (a deleted item: -1, outside every window)."""
        import cupy as cp

        self._attr[cp.asarray(rows)] = cp.asarray(values, dtype=self._attr.dtype)

    def synchronize(self) -> None:
        import cupy as cp

        cp.cuda.get_current_stream().synchronize()

    def device_name(self) -> str:
        import cupy as cp

        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
