"""The config's service-level objectives: goal (must be met) and stretch (reported), judged on intervals as targets
are; the report shows them only when the config has them."""

import pytest

from perfray.analysis.slo import slo_section
from perfray.analysis.summary import slo_verdicts
from perfray.config import load_config
from perfray.errors import UsageError
from perfray.targets_config import SloSpec

ROW = {"cell": 0, "p99_ms": 9.0, "p99_ms_lo": 8.5, "p99_ms_hi": 9.4, "samples": 5000, "achieved_qps": 7500.0,
       "failure_rate": 0.002}


def test_a_goal_is_must_pass_a_stretch_advisory_and_the_direction_follows_the_metric():
    latency = SloSpec(metric="p99_ms", goal=10, stretch=8.7)
    rate = SloSpec(metric="achieved_qps", goal=7000, stretch=10000)
    assert [(k, t.max, t.min, t.must_pass) for k, t in latency.targets()] == [("goal", 10, None, True),
                                                                             ("stretch", 8.7, None, False)]
    assert [(k, t.max, t.min) for k, t in rate.targets()] == [("goal", None, 7000), ("stretch", None, 10000)]
    assert SloSpec(metric="p99_ms", goal=5, better="higher").targets()[0][1].min == 5
    with pytest.raises(ValueError, match="stretch 12 is less strict than goal 10"):
        SloSpec(metric="p99_ms", goal=10, stretch=12)
    with pytest.raises(ValueError, match="stretch 5000 is less strict than goal 7000"):
        SloSpec(metric="achieved_qps", goal=7000, stretch=5000)
    with pytest.raises(UsageError, match="slo.0.*unknown metric 'p99'"):
        load_config(None, ["slo=[{metric: p99, goal: 10}]"])



def test_every_metric_takes_a_bound_its_best_value_meets_and_refuses_one_beyond_its_range():
    """A bound at the best value a metric can take is one a perfect system meets (a failure rate of 0, a recall of
    1): it is accepted; a hair beyond the metric's range no value meets: refused, for every summary metric."""
    from perfray.schema import HIGHER_IS_BETTER, SUMMARY_METRICS, metric_range
    from perfray.targets_config import TargetSpec

    for metric in SUMMARY_METRICS:
        low, high, low_occurs = metric_range(metric)
        if metric in HIGHER_IS_BETTER:
            best = high if high < float("inf") else 1e9
            assert TargetSpec(metric=metric, min=best).min == best
            if high < float("inf"):
                with pytest.raises(ValueError, match="so no system could meet it"):
                    TargetSpec(metric=metric, min=high + 1e-6)
        else:
            best = low if low_occurs else low + 1e-6
            assert TargetSpec(metric=metric, max=best).max == best
            with pytest.raises(ValueError, match="so no system could meet it"):
                TargetSpec(metric=metric, max=low - 1e-6 if low_occurs else low)
    assert metric_range("failure_rate") == (0.0, 1.0, True) and metric_range("p99_ms")[2] is False

def test_goals_are_judged_on_the_whole_interval():
    slos = [SloSpec(metric="p99_ms", goal=10, stretch=8.7), SloSpec(metric="achieved_qps", goal=7000, stretch=10000),
            SloSpec(metric="failure_rate", goal=0.01, stretch=0.001)]
    got = {(v["metric"], v["slo"]): v for v in slo_verdicts([ROW], slos)}
    assert got[("p99_ms", "goal")]["passed"] and got[("p99_ms", "goal")]["must_pass"]
    # 8.7 lies inside [8.5, 9.4]: the stretch goal is undecided, not met
    stretch = got[("p99_ms", "stretch")]
    assert not stretch["passed"] and stretch["inconclusive"] and not stretch["must_pass"]
    assert got[("achieved_qps", "goal")]["passed"] and not got[("achieved_qps", "stretch")]["passed"]
    assert got[("failure_rate", "goal")]["passed"] and not got[("failure_rate", "stretch")]["passed"]
    # an interval wholly above the goal misses it
    missed = slo_verdicts([{**ROW, "p99_ms": 11.0, "p99_ms_lo": 10.2, "p99_ms_hi": 12.0}], slos[:1])
    assert [(v["slo"], v["passed"], v.get("inconclusive")) for v in missed] == [("goal", False, False),
                                                                               ("stretch", False, False)]


def test_the_report_table_says_goal_and_stretch_apart_and_is_absent_without_slos():
    slos = [SloSpec(metric="p99_ms", goal=10, stretch=8.7)]
    text = "\n".join(slo_section(slo_verdicts([ROW], slos)))
    assert "## Service-level objectives (goal / stretch)" in text
    assert "| 0 |  | p99_ms | 9 (95% CI 8.5–9.4, 5,000 samples) | <= 10 | ✓ | <= 8.7 | ? |" in text
    assert slo_section([{"cell": 0, "metric": "p99_ms", "passed": True, "must_pass": True, "bound": "<= 10",
                         "value": 9.0}]) == []  # a plain target's verdict is not an SLO


def test_a_capacity_search_takes_the_must_pass_p99_and_failure_bounds_of_goals_and_targets():
    config = load_config(None, ["slo=[{metric: p99_ms, goal: 10, stretch: 8.7}, {metric: failure_rate, goal: 0.01, "
                                "where: {phase: burst}}]", "targets=[{metric: failure_rate, max: 0.02}, "
                                "{metric: p99_ms, max: 5, must_pass: false}, {metric: recall_mean, min: 0.9}]"])
    # the goal, not its stretch; no per-phase goal; no advisory target; nothing but p99 and failure bounds
    assert config.capacity_slos() == ["p99_ms<=10", "failure_rate<=0.02"]
