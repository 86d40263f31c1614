"""Change points in a series of runs that survive the noise: candidates from ``ruptures`` (PELT on the log of the
values, its penalty set from the series' own run-to-run noise), each kept only when the step clears a significance
level AND a minimum magnitude AND the runs' own uncertainty:

1. significance: Welch's t between the runs on either side of it (up to the neighbouring change points), against
   the largest t that any cut of the same runs shuffled reaches (a permutation test of the maximum: the cut was
   chosen as the best, so it is judged against the best of chance): p < ``alpha``;
2. the medians on either side differ by at least ``magnitude`` (relative);
3. where runs carry a 95% interval (a percentile's, a capacity's bracket), the median of one side lies outside
   the median interval of the other: a step smaller than what one run can resolve is not one.

Thresholds on single values raise false alarms or hide real steps; this asks the whole segment."""

from __future__ import annotations

import math

import numpy as np

ALPHA = 0.01
MAGNITUDE = 0.05
MIN_SEGMENT = 3  # runs on each side of a step
PERMUTATIONS = 499


def _welch_all(x: np.ndarray, min_size: int) -> np.ndarray:
    """|Welch t| of every cut of each row of ``x`` (shape: series × runs) with at least ``min_size`` on a side."""
    n = x.shape[-1]
    k = np.arange(min_size, n - min_size + 1)
    c1, c2 = np.cumsum(x, axis=-1), np.cumsum(x * x, axis=-1)
    s_a, q_a = c1[..., k - 1], c2[..., k - 1]
    s_b, q_b = c1[..., -1:] - s_a, c2[..., -1:] - q_a
    na, nb = k, n - k
    var_a = np.maximum(q_a - s_a**2 / na, 0) / (na - 1)
    var_b = np.maximum(q_b - s_b**2 / nb, 0) / (nb - 1)
    return np.abs(s_a / na - s_b / nb) / np.sqrt(var_a / na + var_b / nb + 1e-300)


def max_t_p(segment: np.ndarray, cut: int, min_size: int = 2, permutations: int = PERMUTATIONS) -> float:
    """How often the best cut of the shuffled segment reaches this cut's |t|: a permutation p-value."""
    n = segment.size
    if n < 2 * min_size or np.ptp(segment) == 0:
        return 1.0
    observed = _welch_all(segment[None, :], min_size)[0][cut - min_size]
    rng = np.random.default_rng(0)  # the same series always gets the same answer
    shuffled = np.array([rng.permutation(segment) for _ in range(permutations)])
    best = _welch_all(shuffled, min_size).max(axis=1)
    return float((1 + (best >= observed - 1e-12).sum()) / (1 + permutations))


def _noise(logs: np.ndarray) -> float:
    """Run-to-run noise (standard deviation of log values) from first differences, robust to the steps."""
    diffs = np.diff(logs)
    if diffs.size < 2:
        return 0.0
    return float(1.4826 * np.median(np.abs(diffs - np.median(diffs))) / math.sqrt(2))


def candidates(logs: np.ndarray, min_size: int = MIN_SEGMENT) -> list[int]:
    """Indices where a new segment starts, by PELT (l2 cost) with a BIC-like penalty on the series' noise."""
    import ruptures

    n = logs.size
    if n < 2 * min_size:
        return []
    sigma = max(_noise(logs), 1e-6 * max(float(np.abs(logs).mean()), 1e-12))
    ends = ruptures.Pelt(model="l2", min_size=min_size, jump=1).fit(logs.reshape(-1, 1)).predict(
        pen=2.0 * sigma**2 * math.log(n))
    return [e for e in ends if e < n]


def _judge(values, logs, lo, hi, start, cut, end, alpha, magnitude, min_size) -> dict:
    """The step at ``cut`` between the runs ``[start, end)``: its figures and whether it passes all three tests."""
    m_before, m_after = float(np.median(values[start:cut])), float(np.median(values[cut:end]))
    change = m_after / m_before - 1 if m_before else math.inf
    p = max_t_p(logs[start:end], cut - start, min_size)
    resolved = True
    if lo is not None and hi is not None:
        ok = ~(np.isnan(lo) | np.isnan(hi))
        if ok[start:cut].any() and ok[cut:end].any():
            b_lo, b_hi = np.median(lo[start:cut][ok[start:cut]]), np.median(hi[start:cut][ok[start:cut]])
            a_lo, a_hi = np.median(lo[cut:end][ok[cut:end]]), np.median(hi[cut:end][ok[cut:end]])
            resolved = not (b_lo <= m_after <= b_hi) and not (a_lo <= m_before <= a_hi)
    return {"index": cut, "before": m_before, "after": m_after, "change": change, "p_value": p,
            "passed": p < alpha and abs(change) >= magnitude and resolved}


def change_points(values, lo=None, hi=None, alpha: float = ALPHA, magnitude: float = MAGNITUDE,
                  min_size: int = MIN_SEGMENT) -> list[dict]:
    """The steps of ``values`` (one per run, in time order; NaN runs are skipped) that survive the three tests;
    ``index``: the first run after the step, in the input's positions."""
    values = np.asarray(values, dtype=np.float64)
    keep = np.flatnonzero(np.isfinite(values) & (values > 0))
    x = values[keep]
    lo_k = None if lo is None else np.asarray(lo, dtype=np.float64)[keep]
    hi_k = None if hi is None else np.asarray(hi, dtype=np.float64)[keep]
    logs = np.log(x)
    cuts = candidates(logs, min_size)
    judged: list[dict] = []
    while cuts:  # the weakest failing candidate goes, and the rest are judged again between their neighbours
        bounds = [0, *cuts, x.size]
        judged = [_judge(x, logs, lo_k, hi_k, bounds[i], bounds[i + 1], bounds[i + 2], alpha, magnitude, min_size)
                  for i in range(len(cuts))]
        failing = [j for j in judged if not j["passed"]]
        if not failing:
            break
        weakest = max(failing, key=lambda j: (j["p_value"], -abs(j["change"])))
        cuts = [c for c in cuts if c != weakest["index"]]
        judged = []
    return [{**{k: v for k, v in j.items() if k != "passed"}, "index": int(keep[j["index"]])} for j in judged]
