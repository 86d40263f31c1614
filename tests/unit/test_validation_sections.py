"""The evidence sections of validation.md: the drift test of a sustained phase (its false alarms and its power, on
latencies of known law), and the per-stage budget of the slowest 1% (parts that add up, the right stage named)."""

import numpy as np

from perfray.analysis.validation import DRIFT_P, drift, stage_budget


def _phase(rng, growth: float, span_s: float = 600.0, rate: float = 50.0):
    """A phase of Poisson arrivals whose lognormal latencies scale by 1 + growth * t / span (growth 0: no drift)."""
    at = np.sort(rng.uniform(0, span_s, int(rate * span_s)))
    latency = np.exp(rng.normal(np.log(4.0), 0.4, at.size)) * (1 + growth * at / span_s)
    return at, latency, np.zeros(at.size, dtype=bool)


def test_a_steady_phase_is_called_stable_and_a_drifting_one_is_caught():
    rng = np.random.default_rng(3)
    # 300 requests a minute: each minute's p99 moves by 10% or more by chance alone in a quarter of such phases;
    # the trend test keeps the false alarms to its level
    calls = [drift(*_phase(rng, 0.0, rate=5), 600.0)["verdict"] for _ in range(300)]
    assert calls.count("stable") >= 300 * (1 - DRIFT_P)
    caught = [drift(*_phase(rng, 0.5, rate=10), 600.0)["verdict"] for _ in range(100)]
    assert caught.count("drifts up") >= 90  # p99 50% higher by the end: found
    falling = drift(*_phase(rng, -0.4), 600.0)
    assert falling["verdict"] == "drifts down" and falling["slope_ci"][1] < 0


def test_windows_are_minutes_for_a_long_phase_and_tenths_of_a_short_one():
    rng = np.random.default_rng(4)
    long = drift(*_phase(rng, 0.0), 600.0)
    assert long["window_s"] == 60 and len(long["p99_ms"]) == 10
    at, latency, failed = _phase(rng, 0.0, span_s=10.0, rate=300)
    failed[at > 9.0] = True  # the last second failed
    short = drift(at, latency, failed, 10.0)
    assert short["window_s"] == 1.0 and len(short["p99_ms"]) == 10
    assert short["failure_rate"][-1] == 1.0 and short["failure_rate"][0] == 0.0
    assert np.isnan(short["p99_ms"][-1])  # no answered request in it
    edge = drift(np.array([0.5, 1.5]), np.array([1.0, 2.0]), np.zeros(2, dtype=bool), 20.0)
    assert edge["verdict"] == "too short to test"


def test_the_slowest_one_percent_adds_up_and_names_the_stage_that_spikes():
    rng = np.random.default_rng(5)
    n = 20_000
    lag = rng.exponential(0.2e6, n)
    vector = rng.normal(2e6, 0.1e6, n)
    graph = np.where(rng.random(n) < 0.02, 40e6, 3e6)  # 2% of the graph calls stall for 40 ms
    rest = rng.exponential(0.1e6, n)
    latency = lag + vector + graph + rest
    budget = stage_budget(latency, {"schedule_lag_ns": lag, "vector_ns": vector, "graph_ns": graph})
    stages = budget["stages"]
    assert abs(sum(s["tail_ms"] for s in stages.values()) - budget["tail_ms"]) < 1e-6 * budget["tail_ms"]
    assert max(stages, key=lambda k: stages[k]["tail_ms"]) == "graph_ns"
    assert stages["graph_ns"]["tail_ms"] / budget["tail_ms"] > 0.9
    assert abs(stages["rest"]["p50_ms"] - np.median(rest) / 1e6) < 0.01
    assert abs(stages["vector_ns"]["p99_ms"] - np.percentile(vector, 99) / 1e6) < 1e-9
