"""A speedup vs a baseline cell (phase 6: the hybrid stack against Neo4j alone) is an estimate too: its 95%
interval comes from the two cells' percentile intervals, and an slo: goal on it is judged on that interval."""

import numpy as np

from perfray.analysis.intervals import percentile_intervals
from perfray.analysis.summary import add_baseline, slo_verdicts
from perfray.targets_config import SloSpec


def _cell(cell: int, system: str, latency_ns: np.ndarray) -> dict:
    return {"cell": cell, "system_name": system, "system": system, "search_params": "", "recall_mean": 1.0,
            "p50_ms": float(np.percentile(latency_ns, 50)) / 1e6, "p99_ms": float(np.percentile(latency_ns, 99)) / 1e6,
            "achieved_qps": 100.0, **percentile_intervals(latency_ns)}


def test_the_speedup_interval_covers_the_true_ratio_at_least_95_percent_of_the_time():
    # lognormal latencies: the true p99 ratio is the ratio of the two scales (same shape), here exactly 2
    rng = np.random.default_rng(7)
    covered, widths = 0, []
    for _ in range(400):
        base = np.exp(rng.normal(np.log(8e6), 0.5, 2000))
        hybrid = np.exp(rng.normal(np.log(4e6), 0.5, 1500))
        rows = [_cell(0, "hybrid", hybrid), _cell(1, "neo4j_baseline", base)]
        add_baseline(rows, ["a", "a"], "neo4j_baseline")
        lo, hi = rows[0]["speedup_p99_vs_baseline_lo"], rows[0]["speedup_p99_vs_baseline_hi"]
        assert lo <= rows[0]["speedup_p99_vs_baseline"] <= hi
        covered += lo <= 2.0 <= hi
        widths.append(hi / lo)
    assert covered >= 0.95 * 400
    assert float(np.median(widths)) < 1.8  # hi / lo: an interval that tells 4x from 1x (below)
    assert rows[1]["speedup_p99_vs_baseline_lo"] == rows[1]["speedup_p99_vs_baseline_hi"] == 1.0


def test_a_speedup_goal_is_met_missed_or_inconclusive_on_its_interval():
    rng = np.random.default_rng(1)
    base = np.exp(rng.normal(np.log(8e6), 0.5, 3000))
    goal = [SloSpec(metric="speedup_p99_vs_baseline", goal=1.5, where={"system_name": "hybrid"})]

    def judged(scale_ms: float, n: int) -> dict:
        rows = [_cell(0, "hybrid", np.exp(rng.normal(np.log(scale_ms * 1e6), 0.5, n))), _cell(1, "neo4j_baseline", base)]
        add_baseline(rows, ["a", "a"], "neo4j_baseline")
        (verdict,) = slo_verdicts(rows, goal)
        return verdict

    clear = judged(2.0, 3000)  # 4x faster
    assert clear["passed"] and not clear["inconclusive"] and clear["interval"][0] >= 1.5
    slow = judged(8.0, 3000)  # no faster
    assert not slow["passed"] and not slow["inconclusive"]
    close = judged(5.3, 400)  # 1.5x as a point, with an interval far wider than the gap
    assert not close["passed"] and close["inconclusive"]
    assert close["interval"][0] < 1.5 < close["interval"][1]
