"""Operation mixes: what each request asks for (k and queries per request), as data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perfray.traffic_config import parse_skew


@dataclass(frozen=True)
class OpSpec:
    """One kind of request: ``n_queries`` query vectors, ``k`` neighbours each."""

    name: str
    weight: float
    k: int
    n_queries: int


# (weight, k multiplier, queries per request) relative to the cell's k.
MIXES: dict[str, tuple[tuple[float, int, int], ...]] = {
    "simple": ((1.0, 1, 1),),
    "mixed": ((0.7, 1, 1), (0.2, 5, 1), (0.1, 1, 8)),
    "complex": ((0.4, 1, 1), (0.3, 10, 1), (0.2, 1, 16), (0.1, 5, 8)),
}


def op_mix(name: str, k: int, max_k: int) -> list[OpSpec]:
    """The ops of mix ``name`` for a cell searching ``k`` neighbours (capped at ``max_k``)."""
    ops = []
    for weight, k_mult, n_queries in MIXES[name]:
        op_k = min(k * k_mult, max_k)
        ops.append(OpSpec(f"knn_k{op_k}_q{n_queries}", weight, op_k, n_queries))
    return ops


def assign_ops(n: int, ops: list[OpSpec], rng: np.random.Generator) -> np.ndarray:
    """Op index per request, drawn by weight."""
    weights = np.array([op.weight for op in ops], dtype=np.float64)
    if len(ops) == 1:
        return np.zeros(n, dtype=np.int16)
    return rng.choice(len(ops), size=n, p=weights / weights.sum()).astype(np.int16)


def query_rows(n_requests: int, n_pool: int, skew: str, rng: np.random.Generator) -> np.ndarray:
    """Which query-pool row each request asks: uniform, or Zipf(s) popularity over a seeded permutation of the
    pool (rank r asked with weight 1 / r**s), so the popular rows are spread over the pool."""
    s = parse_skew(skew)
    if s == 0.0:
        return rng.integers(0, n_pool, size=n_requests)
    weights = 1.0 / np.arange(1, n_pool + 1, dtype=np.float64) ** s
    cdf = np.cumsum(weights)
    ranks = np.minimum(np.searchsorted(cdf, rng.uniform(0.0, cdf[-1], size=n_requests), side="right"), n_pool - 1)
    return rng.permutation(n_pool)[ranks]
