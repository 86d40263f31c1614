"""Reference backend: exact brute force with numpy (BLAS GEMM + partial selection), chunked."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from perfray.backends.base import (
    check_build_input,
    check_search_input,
    drop_excluded,
    mask_outside,
    merge_topk,
    select_smallest,
)

# Distance block size (elements): bounds memory and keeps blocks cache-friendly.
BLOCK_ELEMENTS = 1 << 23


class NumpyBackend:
    """Exact squared-L2 search; ``dtype=float64`` makes it the ground-truth engine."""

    name: ClassVar[str] = "numpy"
    exact: ClassVar[bool] = True
    extra: ClassVar[str] = ""

    def __init__(self, dtype: type = np.float32) -> None:
        self.dtype = np.dtype(dtype)
        self._base: np.ndarray | None = None
        self._norms: np.ndarray | None = None
        self._base_t_m2: np.ndarray | None = None
        self._attr: np.ndarray | None = None

    @classmethod
    def is_available(cls) -> bool:
        return True

    @classmethod
    def uses_gpu(cls) -> bool:
        return False

    def build(self, vectors: np.ndarray, attr: np.ndarray | None = None) -> None:
        base = check_build_input(vectors).astype(self.dtype, copy=False)
        self._base, self._attr = base, attr
        self._norms = np.einsum("ij,ij->i", base, base)
        # -2·xᵀ, contiguous: the GEMM then yields -2 q·x directly and one in-place add finishes ‖x‖² - 2 q·x.
        self._base_t_m2 = np.ascontiguousarray(-2.0 * base.T)

    def search(self, queries: np.ndarray, k: int, windows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k per query; with ``windows`` (per query ``(lo, hi)`` over the ``attr`` given to ``build``), among
        the items whose attribute is inside the query's window only (id -1 where fewer than k are)."""
        base, norms = self._base, self._norms
        if base is None or norms is None:
            raise RuntimeError("build() must be called before search()")
        q = check_search_input(queries, base.shape[1], k, base.shape[0]).astype(self.dtype, copy=False)
        n = base.shape[0]
        cols = max(k, BLOCK_ELEMENTS // max(1, q.shape[0]))
        parts = []
        for lo in range(0, n, cols):
            hi = min(n, lo + cols)
            d = q @ self._base_t_m2[:, lo:hi]
            d += norms[lo:hi]
            if windows is not None:
                mask_outside(d, self._attr[lo:hi], windows)
            parts.append(select_smallest(d, k, lo))
        ids, dists = merge_topk(parts, k)
        # ‖q‖² is the same for a whole row, so it is added after selection.
        dists = np.maximum(dists + np.einsum("ij,ij->i", q, q)[:, None], 0.0)
        return drop_excluded(ids, dists.astype(self.dtype if windows is not None else np.float32, copy=False))

    def set_attr(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Change some items' filter attribute in place (a deleted item: -1, outside every window)."""
        self._attr[rows] = values

    def synchronize(self) -> None:
        return None

    def device_name(self) -> str:
        return "cpu (numpy)"
