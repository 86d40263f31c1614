"""Intended send times. Nothing else in perfray decides when a request is due.

Each phase has a rate that is constant or a linear ramp. Arrivals are unit-rate events (evenly spaced, or a
Poisson process) mapped through the inverse of the phase's cumulative rate, so ramps are exact too. A Poisson
phase has exactly round(rate x duration) arrivals — a Poisson process conditioned on its count (independent
uniform times): the gaps are exponential as before, and a cell offers exactly the rate it is configured for,
so a sustained-rate target is one a perfect system meets.

Bursty processes keep the same mean rate and the exact count: ``gamma:<cv>`` (gaps Gamma-distributed with that
coefficient of variation; 1 is Poisson-like, 3 is bursty) and ``pareto:<alpha>`` (Pareto gaps, alpha > 1;
heavy-tailed: long silences, dense bursts) draw n + 1 unit-mean gaps and scale their cumulative sums so the
(n + 1)-th lands at the phase's end — for exponential gaps this is exactly the Poisson construction above.
``trace:<file>`` replays recorded arrival offsets (seconds; a one-column CSV or Parquet), scaled to the
phase's rate the same way (repeated end to end when the phase needs more events than the trace has).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perfray.traffic_config import load_trace, parse_arrival  # noqa: F401 - parsed where the config is checked


@dataclass(frozen=True)
class PhaseRates:
    """One phase of a cell's rate schedule, in absolute QPS."""

    name: str
    duration_s: float
    start_qps: float
    end_qps: float
    measured: bool


def arrival_offsets_ns(phases: list[PhaseRates], arrival: str, rng: np.random.Generator,
                       trace: np.ndarray | None = None):
    """(offset from cell start in ns, phase index) for every request of the whole cell, sorted. ``trace``: the
    recorded offsets of a ``trace:`` arrival (read once by the driver; default: read from the file here)."""
    offsets, phase_index = [], []
    t0_s = 0.0
    for i, phase in enumerate(phases):
        units = _unit_events(phase, arrival, rng, trace)
        t = _invert_cumulative_rate(units, phase)
        offsets.append(np.round((t0_s + t) * 1e9).astype(np.int64))
        phase_index.append(np.full(t.size, i, dtype=np.int16))
        t0_s += phase.duration_s
    if not offsets:
        return np.empty(0, np.int64), np.empty(0, np.int16)
    return np.concatenate(offsets), np.concatenate(phase_index)


def write_schedule(phases: list[PhaseRates], rate: float, seed: int, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """(offset ns, phase index) of a cell's writes (``load.writes``): Poisson at ``rate`` through every phase, exactly
    ``round(rate x duration)`` per phase, from a stream of its own (the reads' schedule is the same with or
    without writes)."""
    steady = [PhaseRates(p.name, p.duration_s, rate, rate, p.measured) for p in phases]
    rng = np.random.default_rng(np.random.SeedSequence([seed, cell, 0x3717E5]))
    return arrival_offsets_ns(steady, "poisson", rng)


def expected_requests(phase: PhaseRates) -> float:
    return 0.5 * (phase.start_qps + phase.end_qps) * phase.duration_s


def _unit_events(phase: PhaseRates, arrival: str, rng: np.random.Generator, trace: np.ndarray | None) -> np.ndarray:
    total = expected_requests(phase)
    n = int(round(total))
    kind, arg = parse_arrival(arrival)
    if kind == "constant":
        return np.arange(n, dtype=np.float64) + 0.5 * (total > 0)
    if kind == "poisson":
        return np.sort(rng.uniform(0.0, total, size=n))
    if kind == "gamma":
        shape = 1.0 / (arg * arg)
        gaps = rng.gamma(shape, 1.0 / shape, size=n + 1)
    elif kind == "pareto":
        gaps = (rng.pareto(arg, size=n + 1) + 1.0) * (arg - 1.0) / arg  # classic Pareto, mean 1
    else:
        gaps = _trace_gaps(trace if trace is not None else load_trace(arg), n + 1)
    ends = np.cumsum(gaps)
    return ends[:n] * (total / ends[n]) if n else ends[:0]


def _trace_gaps(offsets: np.ndarray, count: int) -> np.ndarray:
    """``count`` gaps of the trace (repeated end to end, each repeat one mean gap after the last), mean 1."""
    gaps = np.diff(offsets)
    gaps = np.append(gaps, offsets[-1] / (offsets.size - 1))  # the seam between repeats: one mean gap
    gaps = np.resize(gaps, count)
    return gaps / gaps.mean() if gaps.mean() > 0 else np.ones(count)


def _invert_cumulative_rate(units: np.ndarray, phase: PhaseRates) -> np.ndarray:
    """Solve r0*t + (r1-r0)*t^2/(2D) = u for t (the numerically stable root, also for r0 = 0)."""
    r0, r1, d = phase.start_qps, phase.end_qps, phase.duration_s
    a = (r1 - r0) / (2.0 * d)
    disc = np.sqrt(np.maximum(r0 * r0 + 4.0 * a * units, 0.0))
    denom = r0 + disc
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(denom > 0, 2.0 * units / np.where(denom > 0, denom, 1.0), 0.0)
    return np.clip(t, 0.0, d)
