"""Distribution-free confidence intervals of latency percentiles (order statistics: no assumption about the
latency distribution), and what a target on a percentile can conclude from one.

For the q-quantile of n samples, the number of samples below it is Binomial(n, q); the interval is the pair of
order statistics that bracket it with the given confidence. With too few samples an end does not exist (e.g.
no 95% upper bound of p99 below 368 samples): it is infinite, and a verdict against it is inconclusive."""

from __future__ import annotations

import math

import numpy as np

CONFIDENCE = 0.95
PERCENTILES = {"p50_ms": 0.5, "p99_ms": 0.99, "p999_ms": 0.999}
# Two independent samples' intervals each at this level hold together with 95%: the ends of a ratio of their
# percentiles (a speedup vs a baseline cell) come from them.
PAIR_CONFIDENCE = math.sqrt(CONFIDENCE)
# Ratios of two cells' percentiles: their 95% interval is [baseline lo / cell hi, baseline hi / cell lo] of the
# cells' PAIR_CONFIDENCE intervals (``{metric}_lo`` / ``_hi`` in a summary row), judged as a percentile is.
RATIO_METRICS = {"speedup_p50_vs_baseline": "p50_ms", "speedup_p99_vs_baseline": "p99_ms"}


def order_statistic_indices(n: int, q: float, confidence: float = CONFIDENCE) -> tuple[int | None, int | None]:
    """0-based indices (in sorted order) of the interval's ends; None where that end does not exist."""
    from scipy.stats import binom

    if n <= 0:
        return None, None
    alpha = 1.0 - confidence
    lower = int(binom.ppf(alpha / 2, n, q))  # 1-based order statistic X_(lower): P(B <= lower-1) <= alpha/2
    upper = int(binom.ppf(1 - alpha / 2, n, q))  # 0-based index of X_(upper+1): P(B <= upper) >= 1 - alpha/2
    return (lower - 1 if lower >= 1 else None), (upper if upper < n else None)


def percentile_intervals(values: np.ndarray, scale: float = 1e-6) -> dict[str, float]:
    """``{metric}_lo`` / ``{metric}_hi`` for p50/p99/p99.9 of ``values`` (times ``scale``), and ``samples``; and
    ``{metric}_pair_lo`` / ``_pair_hi`` for p50/p99 at ``PAIR_CONFIDENCE`` (for ratios between two cells)."""
    n = int(values.size)
    ends = {metric: order_statistic_indices(n, q) for metric, q in PERCENTILES.items()}
    ends |= {f"{metric}_pair": order_statistic_indices(n, PERCENTILES[metric], PAIR_CONFIDENCE)
             for metric in RATIO_METRICS.values()}
    wanted = sorted({i for pair in ends.values() for i in pair if i is not None})
    picked = np.partition(values, wanted) if wanted else values
    out: dict[str, float] = {"samples": n}
    for metric, (lo, hi) in ends.items():
        out[f"{metric}_lo"] = float(picked[lo]) * scale if lo is not None else -math.inf if n else math.nan
        out[f"{metric}_hi"] = float(picked[hi]) * scale if hi is not None else math.inf if n else math.nan
    return out


def ratio_interval(reference: dict, row: dict, metric: str) -> tuple[float, float]:
    """The 95% interval of reference's ``metric`` over row's (a speedup: > 1, row is faster), from the two rows'
    ``PAIR_CONFIDENCE`` intervals; (nan, nan) where a row has none."""
    ref_lo, ref_hi = reference.get(f"{metric}_pair_lo", math.nan), reference.get(f"{metric}_pair_hi", math.nan)
    lo, hi = row.get(f"{metric}_pair_lo", math.nan), row.get(f"{metric}_pair_hi", math.nan)
    if any(v is None or math.isnan(v) for v in (ref_lo, ref_hi, lo, hi)):
        return math.nan, math.nan
    # an end that does not exist (too few samples) leaves the ratio's end open: 0 or inf, undecided
    low = ref_lo / hi if ref_lo > 0 and 0 < hi < math.inf else 0.0
    high = ref_hi / lo if lo > 0 else math.inf
    return float(low), float(high)


def judge(row: dict, metric: str, bound: float, upper_bound: bool) -> tuple[bool, bool, float | None]:
    """(passed, inconclusive, samples that would decide it) for a target on a percentile with an interval in
    ``row``: met only when the whole interval meets the bound, missed when none of it does."""
    lo, hi, value = row.get(f"{metric}_lo"), row.get(f"{metric}_hi"), row.get(metric)
    if lo is None or hi is None or value is None or math.isnan(lo) or math.isnan(hi):
        return False, False, None
    inside, outside = (hi <= bound, lo > bound) if upper_bound else (lo >= bound, hi < bound)
    if inside or outside:
        return bool(inside), False, None
    if metric not in PERCENTILES:  # a ratio of two cells' percentiles: more samples in both would decide it
        return False, True, None
    return False, True, _samples_to_decide(int(row.get("samples", 0)), PERCENTILES[metric], value, bound, lo, hi)


def _samples_to_decide(n: int, q: float, value: float, bound: float, lo: float, hi: float) -> float:
    """About how many samples would make the interval clear the bound, if the distribution stays as measured."""
    alpha = 1.0 - CONFIDENCE
    if math.isinf(hi) or math.isinf(lo):  # an end does not exist yet: at least this many samples for it to
        p = q if math.isinf(hi) else 1 - q  # (all n samples below the q-quantile has probability q**n)
        return float(math.ceil(math.log(alpha / 2) / math.log(p)))
    gap = abs(value - bound)
    if gap == 0:
        return math.inf
    return float(math.ceil(n * ((hi - lo) / 2 / gap) ** 2))


def measured_text(verdict: dict) -> str:
    """A verdict's measured value for people: with its interval and, when inconclusive, what would decide it."""
    text = f"{verdict['value']:.4g}"
    if "interval" in verdict:
        lo, hi = verdict["interval"]
        text += f" (95% CI {lo:.4g}–{hi:.4g}, {verdict.get('samples', 0):,} samples)"
    if verdict.get("inconclusive"):
        more = verdict.get("samples_to_decide")
        text += " inconclusive" + (f": ~{more:,.0f} samples would decide it" if more and math.isfinite(more) else "")
    return text
