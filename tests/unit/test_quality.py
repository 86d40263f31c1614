"""The checks on the measurement itself: each flags what it is for and passes a correct measurement."""

import numpy as np
import pytest

from perfray.analysis.quality import SLICES, arrival_fit, quality, quality_section, stationarity, warmup

N = 6000


def poisson(rng, rate=500.0):
    return np.cumsum(rng.exponential(1e9 / rate, N)).astype(np.int64)


@pytest.mark.parametrize("arrival", ["poisson", "constant"])
def test_a_correct_generator_passes_the_arrival_fit(arrival):
    rng = np.random.default_rng(1)
    intended = poisson(rng) if arrival == "poisson" else np.arange(N, dtype=np.int64) * 2_000_000
    sent = intended + rng.integers(0, 80_000, N)  # woken up to 80 µs late, as a timerfd pacer is
    fit = arrival_fit(intended, sent, batched=False)
    assert fit["arrival_check"] == "pass" and fit["arrival_w1"] < 0.05


@pytest.mark.parametrize("group_ms", [5, 20])
def test_a_generator_that_sends_in_bursts_is_flagged(group_ms):
    rng = np.random.default_rng(2)
    intended = poisson(rng)
    step = group_ms * 1_000_000
    sent = (intended // step + 1) * step  # held, then sent together every group_ms
    fit = arrival_fit(intended, sent, batched=False)
    assert fit["arrival_check"] == "warn" and fit["arrival_ks"] > 0.3


def test_a_generator_that_falls_behind_and_catches_up_is_flagged():
    rng = np.random.default_rng(3)
    intended = np.arange(N, dtype=np.int64) * 2_000_000
    sent = intended.copy()
    for start in range(0, N, 500):  # every second a 150 ms stall, then everything due is sent at once
        stalled = slice(start, start + 75)
        sent[stalled] = intended[start + 75]
    assert arrival_fit(intended, sent + rng.integers(0, 50_000, N), batched=False)["arrival_check"] == "warn"


def test_micro_batched_cells_are_not_judged_on_gaps():
    intended = np.arange(N, dtype=np.int64) * 1_000_000
    assert arrival_fit(intended, intended, batched=True)["arrival_check"] == "n/a"


def test_stationarity_flags_a_drifting_latency_series_only():
    rng = np.random.default_rng(4)
    intended = poisson(rng)
    steady = rng.lognormal(np.log(2e6), 0.6, N)
    assert stationarity(intended, steady)["drift_check"] == "pass"
    for factor in (np.linspace(1, 2, N), np.linspace(1, 0.5, N)):  # climbing (a queue filling) or falling
        drifting = stationarity(intended, steady * factor)
        assert drifting["drift_check"] == "warn" and abs(drifting["drift"]) > 0.2
    # heavy but stationary noise (rare 50x spikes) is not a drift
    spiky = steady * np.where(rng.random(N) < 0.02, 50, 1)
    assert stationarity(intended, spiky)["drift_check"] == "pass"
    # a level that jumps from slice to slice (GC, a noisy neighbour) can leave the thirds 60% apart by chance:
    # beyond the noise between neighbouring slices only is a drift
    rng = np.random.default_rng(5)
    level = np.repeat(rng.lognormal(0, 0.5, SLICES), N // SLICES)
    jumpy = stationarity(np.arange(N, dtype=np.int64) * 2_000_000, rng.lognormal(np.log(2e6), 0.2, N) * level)
    assert jumpy["drift"] > 0.5 and jumpy["drift_check"] == "pass"


def test_warmup_flags_a_cold_start():
    rng = np.random.default_rng(5)
    intended = poisson(rng)
    lat = rng.lognormal(np.log(2e6), 0.4, N)
    assert warmup(intended, lat)["warmup_check"] == "pass"
    cold = lat.copy()
    cold[: N // 20] *= 6  # the first 5% of the window answered 6x slower (caches, JIT, connections)
    result = warmup(intended, cold)
    assert result["warmup_check"] == "warn" and result["warmup_ratio"] > 2


def test_quality_counts_warnings_and_the_report_shows_them():
    rng = np.random.default_rng(6)
    intended = poisson(rng)
    lat = rng.lognormal(np.log(2e6), 0.4, N) * np.linspace(1, 3, N)
    out = quality(intended, intended, np.ones(N, dtype=bool), lat, batched=False)
    assert out["quality_warnings"] == 1 and out["drift_check"] == "warn"
    lines = "\n".join(quality_section([{"cell": 0, "generator_lag_p99_ms": 0.2, **out}]))
    assert "## Measurement quality" in lines and "⚠ +" in lines and "✓ 0.2" in lines
    assert quality(intended[:10], intended[:10], np.ones(10, dtype=bool), lat[:10], False)["quality_warnings"] == 0


def test_arrival_fit_statistics_are_scipys_on_samples_with_ties():
    """The lean W1 and KS D (sorted samples, no concatenation) equal scipy's, ties and all."""
    from scipy.stats import ks_2samp, wasserstein_distance

    rng = np.random.default_rng(7)
    intended = np.cumsum(rng.integers(1, 40, 5000)) * 1000 + 1_795_000_000_000_000_000  # ns epoch, tied gaps
    sent = intended + rng.integers(0, 30, 5000) * 1000
    fit = arrival_fit(intended, sent, batched=False)
    want, got = np.diff(intended).astype(float), np.diff(np.sort(sent)).astype(float)
    assert fit["arrival_w1"] == pytest.approx(wasserstein_distance(got, want) / want.mean(), rel=1e-9)
    assert fit["arrival_ks"] == pytest.approx(ks_2samp(got, want).statistic, rel=1e-12)
