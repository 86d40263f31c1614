"""Checks on the measurement itself, per cell (after Lancet, USENIX ATC'19): did the generator send the
intended arrival process, was the system in a steady state across the cell, and was the warm-up long enough.
Each check gives the number behind it and ``pass`` or ``warn``; a cell with a warning is reported, not failed.

- **Arrival fit**: the gaps between the requests' actual send times against the gaps of the intended schedule
  (the same requests): Wasserstein-1 distance as a share of the mean gap (warn above ``ARRIVAL_W1_LIMIT``),
  with the two-sample Kolmogorov–Smirnov statistic beside it. Micro-batched cells send grouped by design: n/a.
- **Stationarity**: latency p50 of the measured window's last third against its first third; a change beyond
  ``DRIFT_LIMIT`` that also exceeds the noise between time slices of the same cell is a drift ("not steady").
- **Warm-up**: p99 of the first slice of the measured window against the p99 of the rest (warn above
  ``WARMUP_RATIO_LIMIT``: the measured window began before the system was warm).
"""

from __future__ import annotations

import math

import numpy as np

from perfray.schema import GENERATOR_LAG_LIMIT_MS

ARRIVAL_W1_LIMIT = 0.10
DRIFT_LIMIT = 0.20
WARMUP_RATIO_LIMIT = 2.0
SLICES = 12  # time slices of the measured window (the first is the warm-up check's)
MIN_SAMPLES = 60  # per check: fewer rows say nothing either way


def arrival_fit(intended_ns: np.ndarray, sent_ns: np.ndarray, batched: bool) -> dict:
    """``arrival_w1``: the sent gaps' distance from the intended gaps, in mean gaps; ``arrival_ks``: KS D.

    Both samples have the same size, so W1 is the mean distance between their sorted values and D is found at
    their own points: a few arrays of n, in place (scipy's concatenates and argsorts: ~190 MB per million rows)."""
    if batched or intended_ns.size < MIN_SAMPLES:
        return {"arrival_w1": math.nan, "arrival_ks": math.nan, "arrival_check": "n/a"}
    want = np.diff(np.sort(intended_ns)).astype(np.float64)  # int64 gaps first: ns timestamps exceed float64's
    got = np.diff(np.sort(sent_ns)).astype(np.float64)
    want.sort()
    got.sort()
    mean = want.mean()
    w1 = float(np.abs(got - want).mean() / mean) if mean > 0 else math.nan
    ks = max(_cdf_gap(got, want, at=got), _cdf_gap(got, want, at=want))
    return {"arrival_w1": w1, "arrival_ks": ks, "arrival_check": "pass" if w1 <= ARRIVAL_W1_LIMIT else "warn"}


def _cdf_gap(a: np.ndarray, b: np.ndarray, at: np.ndarray) -> float:
    """max |F_a(x) - F_b(x)| over x in ``at`` (sorted samples ``a``, ``b`` of one size; right-continuous CDFs)."""
    gap = np.searchsorted(a, at, side="right")
    gap -= np.searchsorted(b, at, side="right")
    return float(np.abs(gap).max() / a.size)


def _slices(intended_ns: np.ndarray, latency_ns: np.ndarray) -> list[np.ndarray]:
    lo, hi = intended_ns.min(), intended_ns.max() + 1
    edges = np.linspace(lo, hi, SLICES + 1)
    which = np.clip(np.searchsorted(edges, intended_ns, side="right") - 1, 0, SLICES - 1)
    return [latency_ns[which == i] for i in range(SLICES)]


def stationarity(intended_ns: np.ndarray, latency_ns: np.ndarray) -> dict:
    """``drift``: (last third's p50 − first third's) / first third's; ``steady`` False when it exceeds both
    ``DRIFT_LIMIT`` and 3× the median change between neighbouring slices (the cell's own noise)."""
    if latency_ns.size < MIN_SAMPLES:
        return {"drift": math.nan, "drift_check": "n/a"}
    slices = _slices(intended_ns, latency_ns.astype(np.float64))
    third = SLICES // 3
    first = np.concatenate(slices[:third])
    last = np.concatenate(slices[-third:])
    if first.size == 0 or last.size == 0:
        return {"drift": math.nan, "drift_check": "n/a"}
    a, b = np.median(first), np.median(last)
    drift = float((b - a) / a) if a > 0 else math.nan
    medians = np.array([np.median(s) for s in slices if s.size])
    noise = float(np.median(np.abs(np.diff(medians))) / a) if medians.size > 2 and a > 0 else 0.0
    steady = not (abs(drift) > DRIFT_LIMIT and abs(drift) > 3 * noise)
    return {"drift": drift, "drift_check": "pass" if steady else "warn"}


def warmup(intended_ns: np.ndarray, latency_ns: np.ndarray) -> dict:
    """``warmup_ratio``: p99 of the first slice of the measured window / p99 of the rest."""
    if latency_ns.size < MIN_SAMPLES:
        return {"warmup_ratio": math.nan, "warmup_check": "n/a"}
    slices = _slices(intended_ns, latency_ns.astype(np.float64))
    head, rest = slices[0], np.concatenate(slices[1:])
    if head.size < 10 or rest.size == 0:
        return {"warmup_ratio": math.nan, "warmup_check": "n/a"}
    ratio = float(np.percentile(head, 99) / np.percentile(rest, 99))
    return {"warmup_ratio": ratio, "warmup_check": "pass" if ratio <= WARMUP_RATIO_LIMIT else "warn"}


def quality(intended_ns: np.ndarray, sent_ns: np.ndarray, timed: np.ndarray, latency_ns: np.ndarray,
            batched: bool) -> dict:
    """All three checks for one cell's measured rows: ``intended_ns``/``sent_ns`` of the rows that were sent,
    ``timed`` the mask of those with a latency, ``latency_ns`` their latencies."""
    out = {**arrival_fit(intended_ns, sent_ns, batched), **stationarity(intended_ns[timed], latency_ns),
           **warmup(intended_ns[timed], latency_ns)}
    out["quality_warnings"] = sum(out[k] == "warn" for k in ("arrival_check", "drift_check", "warmup_check"))
    return out


def generator_late_ms(row: dict) -> float:
    """How late the generator itself sent (p99, ms): its pacers' lateness when the load actors reported it, else
    the schedule lag beyond the micro-batch window (which also holds waits for a free connection)."""
    late = row.get("generator_lateness_p99_ms")
    if late is not None and math.isfinite(late):
        return float(late)
    lag = row.get("generator_lag_p99_ms")
    return math.nan if lag is None else float(lag)


def quality_section(summary: list[dict]) -> list[str]:
    """The report's "Measurement quality" section: each check's number and verdict per cell."""
    rows = [r for r in summary if "arrival_check" in r]
    if not rows:
        return []

    def cell(value, check, fmt):
        if check == "n/a" or value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        return f"{'✓' if check == 'pass' else '⚠'} {fmt.format(value)}"

    lines = ["", "## Measurement quality", "",
             f"Arrival fit: the sent gaps' distance from the intended schedule's (Wasserstein-1, in mean gaps; warn "
             f"above {ARRIVAL_W1_LIMIT:.0%}; KS D beside it; n/a when micro-batched). Generator late: the load actors' "
             f"pacers' lateness p99 (warn above {GENERATOR_LAG_LIMIT_MS:g} ms). Drift: latency p50 of the last third of the measured window "
             f"vs the first (warn above {DRIFT_LIMIT:.0%} when beyond the cell's own noise: not a steady state). "
             f"Warm-up: p99 of the first {100 / SLICES:.0f}% of the window vs the rest (warn above "
             f"{WARMUP_RATIO_LIMIT:g}x: the warm-up was too short). A warning does not fail a run; it says which "
             "figures to distrust.", "",
             "| cell | arrival fit (KS D) | generator late p99 ms | drift | warm-up ratio |", "|---|---|---|---|---|"]
    for r in rows:
        lag = generator_late_ms(r)
        lag_check = "n/a" if math.isnan(lag) else "pass" if lag <= GENERATOR_LAG_LIMIT_MS else "warn"
        ks = r.get("arrival_ks", math.nan)
        lines.append(f"| {r['cell']} | {cell(r['arrival_w1'], r['arrival_check'], '{:.1%}')}"
                     f"{'' if math.isnan(ks) else f' ({ks:.3f})'} | {cell(lag, lag_check, '{:.3g}')} | "
                     f"{cell(r['drift'], r['drift_check'], '{:+.0%}')} | "
                     f"{cell(r['warmup_ratio'], r['warmup_check'], '{:.2f}x')} |")
    return lines
