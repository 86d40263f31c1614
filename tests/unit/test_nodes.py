"""The slow-node call (perfray.analysis.nodes.judge_node) on latencies drawn from known distributions; on real
raylets with a search actor slowed on purpose: tests/integration/test_multinode.py."""

import numpy as np

from perfray.analysis.nodes import judge_node, node_table

RNG = np.random.default_rng(7)


def lognormal(n: int, median_ms: float) -> np.ndarray:
    return median_ms * RNG.lognormal(0.0, 0.5, n)


def test_same_distribution_is_no_difference_and_a_shifted_one_is_slower():
    assert judge_node(lognormal(3000, 4.0), lognormal(6000, 4.0))["verdict"] == "no difference"
    assert judge_node(lognormal(3000, 8.0), lognormal(6000, 4.0))["verdict"] == "slower"
    assert judge_node(lognormal(3000, 2.0), lognormal(6000, 4.0))["verdict"] == "faster"


def test_a_shift_inside_the_margin_is_not_slower_and_a_bad_tail_alone_is():
    assert judge_node(lognormal(20000, 4.4), lognormal(20000, 4.0))["verdict"] != "slower"  # 10%: within 25%
    tail = lognormal(3000, 4.0)
    tail[:300] *= 10  # 10% of requests 10x slower: the median barely moves, the p99 does
    assert judge_node(tail, lognormal(6000, 4.0))["verdict"] == "slower"


def test_too_few_samples_for_a_p99_interval_is_inconclusive():
    call = judge_node(lognormal(100, 40.0), lognormal(6000, 4.0))
    assert call["verdict"] == "inconclusive" and np.isnan(call["p99_interval"]).all()


def test_one_node_per_role_has_no_table():
    import pyarrow as pa

    rows = pa.table({"phase": pa.array(["m"] * 4).dictionary_encode(), "status": pa.array(["ok"] * 4),
                     "latency_ns": pa.array([1, 2, 3, 4], pa.int64()), "load_node": pa.array(["a"] * 4),
                     "search_node": pa.array([None] * 4, pa.string())})
    assert node_table(rows, ["m"], 1.0) == []


def test_a_shift_near_the_margin_on_few_samples_is_inconclusive():
    # 15% slower, on 800 requests each: provably slower but by less than 25%, and not provably within 25%
    rng = np.random.default_rng(11)
    call = judge_node(4.6 * rng.lognormal(0.0, 0.5, 800), 4.0 * rng.lognormal(0.0, 0.5, 800))
    assert call["p50_interval"][0] > call["others_p50_interval"][1] and call["verdict"] == "inconclusive"


def test_one_stall_is_not_a_slow_node_and_a_node_slow_throughout_is():
    """A 150 ms pause of one node's process in a 5-second window (its requests in the pause wait it out) moves its
    p99 as much as a slow node: the pause shows in one half of the window only, so the call is inconclusive; a node
    slow in both halves is still slower. (An equal pair on a busy 2-core CI box was once called slower/faster.)"""
    rng = np.random.default_rng(5)
    n, window_ms = 2500, 5000.0
    at = np.sort(rng.uniform(0, window_ms, n))
    mine, rest = lognormal(n, 4.0), lognormal(n, 4.0)
    paused = (at > 1000) & (at < 1150)
    stalled = mine.copy()
    stalled[paused] += 1150 - at[paused]
    late = at >= window_ms / 2
    assert judge_node(stalled, rest)["verdict"] == "slower"  # the whole window alone cannot tell
    assert judge_node(stalled, rest, late, late)["verdict"] == "inconclusive"
    assert judge_node(mine * 2, rest, late, late)["verdict"] == "slower"
    assert judge_node(rest, mine * 2, late, late)["verdict"] == "faster"
    assert judge_node(mine, rest, late, late)["verdict"] == "no difference"
