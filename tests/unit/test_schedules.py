import numpy as np
import pytest

from perfray.load.profiles import MIXES, assign_ops, op_mix
from perfray.load.schedules import PhaseRates, arrival_offsets_ns


def offsets(phases, arrival, seed=0):
    return arrival_offsets_ns(phases, arrival, np.random.default_rng(seed))


def test_constant_rate_gives_exactly_rate_times_duration_evenly_spaced():
    t, phase = offsets([PhaseRates("s", 2.0, 1000, 1000, True)], "constant")
    assert t.size == 2000
    gaps = np.diff(t)
    assert np.allclose(gaps, 1_000_000, atol=1)
    assert t[0] >= 0 and t[-1] < 2_000_000_000
    assert (phase == 0).all()


def test_poisson_offers_exactly_the_rate_with_exponential_gaps():
    from scipy import stats

    t, _ = offsets([PhaseRates("s", 20.0, 5000, 5000, True)], "poisson")
    assert t.size == 100_000  # conditioned on its count: the configured rate, exactly
    gaps = np.diff(t) / 1e9
    assert gaps.mean() == pytest.approx(1 / 5000, rel=0.01)
    assert stats.kstest(gaps, "expon", args=(0, 1 / 5000)).pvalue > 0.001  # exponential gaps
    assert stats.kstest(gaps, "uniform", args=(0, 2 / 5000)).pvalue < 1e-6  # (a check that can fail)
    assert (np.diff(t) >= 0).all()


def test_ramp_is_linear_in_rate():
    t, _ = offsets([PhaseRates("ramp", 10.0, 0, 2000, True)], "constant")
    assert t.size == 10_000  # mean rate 1000 over 10 s
    first_half = (t < 5e9).sum()
    assert first_half == pytest.approx(2500, abs=2)  # integral of the ramp over the first half


def test_phases_are_consecutive_and_labelled():
    phases = [PhaseRates("warmup", 1.0, 100, 100, False), PhaseRates("burst", 0.5, 1000, 1000, True),
              PhaseRates("pause", 1.0, 0, 0, True)]
    t, phase = offsets(phases, "constant")
    assert (phase == 0).sum() == 100 and (phase == 1).sum() == 500 and (phase == 2).sum() == 0
    assert t[phase == 1].min() >= 1_000_000_000 and t[phase == 1].max() < 1_500_000_000


def test_op_mix_weights_and_k_cap():
    ops = op_mix("complex", 10, 50)
    assert [o.k for o in ops] == [10, 50, 10, 50]
    assert sum(o.weight for o in ops) == pytest.approx(1.0)
    picks = assign_ops(100_000, ops, np.random.default_rng(0))
    shares = np.bincount(picks, minlength=len(ops)) / picks.size
    assert np.allclose(shares, [w for w, _, _ in MIXES["complex"]], atol=0.01)
