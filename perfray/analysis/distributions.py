"""Two runs compared on their whole latency distributions, not one scalar: quantile by quantile (p50 … p99.9), each
run's quantile with its distribution-free interval (order statistics), at a level that holds for all the quantiles
of both runs at once (Bonferroni). A quantile moved when the two intervals do not overlap and the ratio clears a
minimum magnitude, so a p99.9 regression under a flat p50 is found, and a p50 that did not move says so.

Within one run each request is a sample, so this sees what the rows can resolve, not run-to-run noise: use it
beside ``compare``'s between-repeats intervals (``--repeat``), not instead of them."""

from __future__ import annotations

import math

import numpy as np

from perfray.analysis.intervals import CONFIDENCE, order_statistic_indices

QUANTILES = (0.5, 0.9, 0.99, 0.999)
MAGNITUDE = 0.05


def _interval(values: np.ndarray, q: float, confidence: float) -> tuple[float, float, float]:
    """(estimate, lo, hi) of the q-quantile of ``values`` (sorted); an end that does not exist is ±inf."""
    lo, hi = order_statistic_indices(values.size, q, confidence)
    return (float(np.quantile(values, q)), float(values[lo]) if lo is not None else -math.inf,
            float(values[hi]) if hi is not None else math.inf)


def quantile_shifts(base: np.ndarray, new: np.ndarray, quantiles=QUANTILES, confidence: float = CONFIDENCE,
                    magnitude: float = MAGNITUDE) -> list[dict]:
    """Per quantile: both runs' values and intervals, the ratio new / base and a verdict: ``slower`` (the new
    interval lies wholly above the base one, by at least ``magnitude``), ``faster`` (the reverse), ``no difference``
    (the intervals overlap), or ``undecided`` (too few samples for an interval's end at this level)."""
    base, new = np.sort(np.asarray(base, dtype=np.float64)), np.sort(np.asarray(new, dtype=np.float64))
    if base.size == 0 or new.size == 0:
        return []
    level = 1 - (1 - confidence) / (2 * len(quantiles))  # every interval of both runs holds together
    out = []
    for q in quantiles:
        b, n = _interval(base, q, level), _interval(new, q, level)
        ratio = n[0] / b[0] if b[0] > 0 else math.nan
        if not all(math.isfinite(v) for v in (*b, *n)):
            verdict = "undecided"
        elif n[1] > b[2] and ratio >= 1 + magnitude:
            verdict = "slower"
        elif n[2] < b[1] and ratio <= 1 / (1 + magnitude):
            verdict = "faster"
        else:
            verdict = "no difference"
        out.append({"q": q, "base": b[0], "base_ci": [b[1], b[2]], "new": n[0], "new_ci": [n[1], n[2]],
                    "ratio": ratio, "verdict": verdict})
    return out


def shifts_text(shifts: list[dict]) -> str:
    """One line: each quantile's ratio and verdict."""
    return "; ".join(f"p{s['q'] * 100:g} {s['ratio']:.2f}x {s['verdict']}" for s in shifts) or "no rows"


def distribution_section(pairs: list[tuple[int, list[dict]]]) -> list[str]:
    """The comparison's table: per cell and quantile, both values with their intervals, ratio and verdict."""
    if not pairs:
        return []
    lines = ["", "## Whole distributions", "",
             "Each quantile of each run with its distribution-free interval, at a level that holds for all of them "
             f"at once ({CONFIDENCE:.0%} together); a quantile moved when the intervals do not overlap and it "
             f"changed by at least {MAGNITUDE:.0%}. Within one run: run-to-run noise is not in these intervals.", "",
             "| cell | quantile | baseline ms | candidate ms | ratio | |", "|---|---|---|---|---|---|"]
    for cell, shifts in pairs:
        for s in shifts:
            lines.append(f"| {cell} | p{s['q'] * 100:g} | {s['base']:.4g} ({s['base_ci'][0]:.4g}–{s['base_ci'][1]:.4g}) | "
                         f"{s['new']:.4g} ({s['new_ci'][0]:.4g}–{s['new_ci'][1]:.4g}) | {s['ratio']:.3f} | "
                         f"{s['verdict']} |")
    return lines
