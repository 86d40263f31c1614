"""Intended send times. Nothing else in perfray decides when a request is due.

Each phase has a rate that is constant or a linear ramp. Arrivals are unit-rate events (evenly spaced, or a
Poisson process) mapped through the inverse of the phase's cumulative rate, so ramps are exact too. A Poisson
phase has exactly round(rate x duration) arrivals — a Poisson process conditioned on its count (independent
uniform times): the gaps are exponential as before, and a cell offers exactly the rate it is configured for,
so a sustained-rate target is one a perfect system meets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PhaseRates:
    """One phase of a cell's rate schedule, in absolute QPS."""

    name: str
    duration_s: float
    start_qps: float
    end_qps: float
    measured: bool


def arrival_offsets_ns(phases: list[PhaseRates], arrival: str, rng: np.random.Generator):
    """(offset from cell start in ns, phase index) for every request of the whole cell, sorted."""
    offsets, phase_index = [], []
    t0_s = 0.0
    for i, phase in enumerate(phases):
        units = _unit_events(phase, arrival, rng)
        t = _invert_cumulative_rate(units, phase)
        offsets.append(np.round((t0_s + t) * 1e9).astype(np.int64))
        phase_index.append(np.full(t.size, i, dtype=np.int16))
        t0_s += phase.duration_s
    if not offsets:
        return np.empty(0, np.int64), np.empty(0, np.int16)
    return np.concatenate(offsets), np.concatenate(phase_index)


def expected_requests(phase: PhaseRates) -> float:
    return 0.5 * (phase.start_qps + phase.end_qps) * phase.duration_s


def _unit_events(phase: PhaseRates, arrival: str, rng: np.random.Generator) -> np.ndarray:
    total = expected_requests(phase)
    if arrival == "constant":
        return np.arange(int(round(total)), dtype=np.float64) + 0.5 * (total > 0)
    if arrival == "poisson":
        return np.sort(rng.uniform(0.0, total, size=int(round(total))))
    raise ValueError(f"unknown arrival {arrival!r}")


def _invert_cumulative_rate(units: np.ndarray, phase: PhaseRates) -> np.ndarray:
    """Solve r0*t + (r1-r0)*t^2/(2D) = u for t (the numerically stable root, also for r0 = 0)."""
    r0, r1, d = phase.start_qps, phase.end_qps, phase.duration_s
    a = (r1 - r0) / (2.0 * d)
    disc = np.sqrt(np.maximum(r0 * r0 + 4.0 * a * units, 0.0))
    denom = r0 + disc
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(denom > 0, 2.0 * units / np.where(denom > 0, denom, 1.0), 0.0)
    return np.clip(t, 0.0, d)
