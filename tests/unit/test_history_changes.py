"""Change points that survive noise: a real step is found where it is, A/A noise raises few alarms, and a step
below the magnitude or inside the runs' own intervals is not one."""

import numpy as np

from perfray.history.changes import change_points


def _series(rng, n=20, at=None, step=0.10, cv=0.02):
    values = 10.0 * rng.lognormal(0.0, cv, n)
    if at is not None:
        values[at:] *= 1 + step
    return values


def test_a_ten_percent_step_is_found_at_its_run():
    rng = np.random.default_rng(1)
    for trial in range(20):
        found = change_points(_series(rng, at=12))
        assert [c["index"] for c in found] == [12], (trial, found)
        assert 0.07 < found[0]["change"] < 0.13


def test_aa_series_raise_alarms_rarely():
    rng = np.random.default_rng(2)
    alarms = sum(bool(change_points(_series(rng, cv=0.03))) for _ in range(200))
    assert alarms / 200 <= 0.05, alarms


def test_a_step_below_the_magnitude_or_inside_the_runs_intervals_is_not_one():
    rng = np.random.default_rng(3)
    assert change_points(_series(rng, at=10, step=0.03, cv=0.005)) == []  # significant, but only 3%
    values = _series(rng, at=10, step=0.10, cv=0.005)
    assert [c["index"] for c in change_points(values, values * 0.95, values * 1.05)] == [10]
    # each run's p99 known only to +-30%: a 10% step is within what one run resolves
    assert change_points(values, values * 0.7, values * 1.3) == []


def test_skipped_runs_keep_their_positions():
    rng = np.random.default_rng(4)
    values = _series(rng, at=12)
    values[[3, 15]] = np.nan  # a run that measured nothing
    assert [c["index"] for c in change_points(values)] == [12]
