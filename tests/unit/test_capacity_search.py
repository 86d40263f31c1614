"""The capacity search on its own (no Ray): steps against a synthetic system whose p99 at each rate is known."""

import math

import pytest

from perfray.analysis.capacity_report import capacity_scaling, capacity_verdicts
from perfray.analysis.scaling_model import fit_usl
from perfray.capacity import BREAKS, GENERATOR, MEETS, UNDECIDED, CapacitySearch, judge_step
from perfray.config import capacity_spec
from perfray.errors import UsageError
from perfray.targets_config import CapacitySpec, parse_slo


def row(p99: float, half_width: float = 0.0, failure: float = 0.0, lateness: float = 0.01, samples: int = 10_000,
        worst: float | None = None):
    return {"cell": 0, "p50_ms": p99 / 3, "p99_ms": p99, "p999_ms": p99 * 1.5, "p99_ms_lo": p99 - half_width,
            "p99_ms_hi": p99 + half_width, "p50_ms_lo": p99 / 3, "p50_ms_hi": p99 / 3, "p999_ms_lo": p99,
            "p999_ms_hi": p99 * 2, "samples": samples, "failure_rate": failure, "achieved_qps": 1.0,
            "generator_lateness_p99_ms": lateness, "generator_lateness_max_ms": lateness if worst is None else worst}


def run_search(spec: CapacitySpec, system) -> CapacitySearch:
    search = CapacitySearch(spec)
    cell = 0
    while (step := search.next_step()) is not None:
        search.record(step, system(step), cell)
        cell += 1
    return search


def queue_like(capacity: float):
    """p99 grows like a queue's as the rate nears ``capacity`` (1 ms at rest); above it, failures."""
    def system(step):
        rho = step.qps / capacity
        if rho >= 1:
            return row(5_000.0, failure=0.5)
        return row(1.0 / (1.0 - rho))
    return system


@pytest.mark.parametrize("truth", [137.0, 950.0, 7_300.0, 42_000.0])
def test_search_brackets_the_capacity_to_its_resolution(truth):
    spec = CapacitySpec(slo=("p99_ms<=10",), min_qps=100, max_qps=100_000, resolution=0.02)
    search = run_search(spec, queue_like(truth))
    result = search.result()
    slo_rate = truth * 0.9  # 1 / (1 - rho) = 10 at rho = 0.9
    assert result["limited_by"] == "slo"
    assert result["capacity_lo"] <= slo_rate < result["capacity_hi"]
    assert (result["capacity_hi"] - result["capacity_lo"]) / result["capacity_lo"] <= 0.02
    assert result["capacity_qps"] == result["capacity_lo"]
    assert result["steps"] <= 20
    # geometric growth until the first break, then bisection inside the bracket
    rates = [s.qps for s in search.steps]
    first_break = next(i for i, s in enumerate(search.steps) if s.outcome == BREAKS)
    assert all(b == pytest.approx(a * 2) for a, b in zip(rates[:first_break], rates[1:first_break + 1], strict=False))


def test_an_undecided_step_is_rerun_longer_then_counts_against_the_rate():
    spec = CapacitySpec(slo=("p99_ms<=10",), min_qps=1000, max_qps=1000, step_s=2, max_step_s=16)
    calls = []

    def straddles(step):
        calls.append(step.duration_s)
        return row(9.0, half_width=2.0, samples=100)

    search = run_search(spec, straddles)
    assert calls == [2, 4, 8, 16]  # at least twice as long each time, up to max_step_s
    assert [s.outcome for s in search.steps] == [UNDECIDED] * 4
    assert search.result()["limited_by"] == "undecided" and math.isnan(search.result()["capacity_qps"])


def test_rerun_long_enough_for_the_samples_its_interval_needs():
    spec = CapacitySpec(slo=("p99_ms<=10",), min_qps=1000, max_qps=1000, step_s=1, max_step_s=60)
    seen = []

    def system(step):
        seen.append(step.duration_s)
        return row(9.0, half_width=2.0, samples=1000) if len(seen) == 1 else row(9.0)

    run_search(spec, system)
    # ~n (half-width / gap)^2 = 1000 * 4 = 4000 samples -> 4 s at 1000 QPS, with 20% to spare
    assert seen[1] == pytest.approx(4.8)


def test_a_generator_that_fell_behind_is_not_the_systems_limit():
    spec = CapacitySpec(slo=("p99_ms<=10",), min_qps=100, max_qps=100_000)

    def system(step):  # the system's own p99 is 2 ms; from 800 QPS the pacer sends 9 ms late (p99), 12 ms at worst
        return row(2.0 + 9.0, lateness=9.0, worst=12.0) if step.qps >= 800 else row(2.0)

    search = run_search(spec, system)
    result = search.result()
    assert result["limited_by"] == "generator"
    assert result["capacity_qps"] == 400 and math.isnan(result["capacity_hi"])
    # the late step is measured once more before the search says so
    assert [(s.qps, s.outcome) for s in search.steps][-2:] == [(800, GENERATOR), (800, GENERATOR)]


def test_one_late_step_is_measured_again_and_the_search_goes_on():
    spec = CapacitySpec(slo=("p99_ms<=10",), min_qps=100, max_qps=100_000, resolution=0.02)
    system, seen = queue_like(950.0), []

    def stalls_once(step):  # the host stalls the generator in the first step at 800 QPS only
        seen.append(step.qps)
        if seen.count(800) == 1 and step.qps == 800:
            return row(10.5, lateness=3.0, worst=4.0)
        return system(step)

    search = run_search(spec, stalls_once)
    assert [s.outcome for s in search.steps if s.qps == 800] == [GENERATOR, MEETS]
    result = search.result()
    assert result["limited_by"] == "slo" and result["capacity_lo"] <= 855 < result["capacity_hi"]


def test_max_qps_and_min_qps_end_the_search():
    spec = CapacitySpec(slo=("p99_ms<=10",), min_qps=100, max_qps=1000)
    result = run_search(spec, lambda step: row(1.0)).result()
    assert result["limited_by"] == "max_qps" and result["capacity_qps"] == 1000
    result = run_search(spec, lambda step: row(50.0)).result()
    assert result["limited_by"] == "min_qps" and math.isnan(result["capacity_qps"])
    assert result["capacity_hi"] == 100


def test_failures_break_the_slo_as_well_as_latency():
    spec = CapacitySpec()
    assert judge_step(row(2.0, failure=0.02), spec)[0] == BREAKS
    assert judge_step(row(2.0, failure=0.0), spec)[0] == MEETS
    # latency counts from the intended send, so a late generator only adds to it: met is met however late
    assert judge_step(row(9.0, lateness=5.0, worst=8.0), spec)[0] == MEETS
    # a miss within the generator's worst lateness of the bound may be the generator's, when its p99 is material
    assert judge_step(row(11.0, half_width=0.5, lateness=1.5, worst=4.0), spec)[0] == GENERATOR
    assert judge_step(row(11.0, half_width=0.5, lateness=0.5, worst=4.0), spec)[0] == BREAKS
    # far enough above the bound that no lateness explains it, or a failure rate: the system's
    assert judge_step(row(30.0, half_width=5.0, lateness=1.5, worst=4.0), spec)[0] == BREAKS
    assert judge_step(row(2.0, failure=0.02, lateness=5.0), spec)[0] == BREAKS
    loose = CapacitySpec(slo=("p99_ms<=20",))  # a tenth of 20 ms: 1.5 ms late cannot decide it
    assert judge_step(row(21.0, lateness=1.5), loose)[0] == BREAKS
    assert judge_step(row(21.0, lateness=2.5), loose)[0] == GENERATOR
    outcome, broken, more = judge_step(row(10.0, half_width=1.0, samples=500), spec)
    assert outcome == UNDECIDED and broken == ["p99_ms <= 10"] and more is not None


def test_slo_and_spec_errors_name_the_field():
    assert parse_slo("p99_ms<=10").max == 10 and parse_slo(" qps_ratio >= 0.99").min == 0.99
    for bad, words in (("p99<=10", "unknown metric 'p99'"), ("p99_ms<10", "expected METRIC<=BOUND"),
                       ("p99_ms<=ten", "expected"), ("p99_ms<=inf", "expected")):
        with pytest.raises(ValueError, match=words):
            parse_slo(bad)
    with pytest.raises(UsageError, match="capacity: .*min_qps"):
        capacity_spec(None, {"min_qps": 500, "max_qps": 100})
    with pytest.raises(UsageError, match="capacity: slo"):
        capacity_spec(None, {"slo": ["p99<=3"]})
    assert capacity_spec(CapacitySpec(min_qps=7), {"max_qps": 70}).min_qps == 7


def test_scaling_and_verdicts_from_capacities():
    rows = [{"search": i, "base": i, "system_name": "gpu_search", "n_gpus": n, "k": 10, "capacity_qps": c,
             "capacity_lo": c, "capacity_hi": c * 1.02, "limited_by": "slo", "steps": 9}
            for i, (n, c) in enumerate(((1, 1000.0), (2, 1900.0), (4, 3400.0), (8, 5200.0)))]
    rows.append({**rows[0], "search": 4, "k": 100})  # another workload: its own group, a single point
    groups = capacity_scaling(rows)
    assert len(groups) == 1 and groups[0]["n_gpus"] == [1, 2, 4, 8]
    assert groups[0]["usl"]["ok"] and groups[0]["usl"]["sigma"] > 0
    rows[3]["limited_by"] = "generator"  # a lower bound only: not fitted
    [group] = capacity_scaling(rows)
    assert group["limited_by"][3] == "generator" and group["n_gpus"] == [1, 2, 4, 8]
    # the fit is of the SLO-bounded points alone: exactly the fit of 1, 2 and 4 GPUs
    assert group["fitted_n_gpus"] == [1, 2, 4]
    alone = fit_usl([1, 2, 4], [1000.0, 1900.0, 3400.0])
    assert group["usl"]["ok"] == alone["ok"] and all(
        group["usl"][k] == pytest.approx(alone[k]) for k in ("lambda", "sigma", "kappa") if k in alone)
    rows[2]["limited_by"] = "max_qps"
    assert "too few points" in capacity_scaling(rows)[0]["usl"]["reason"]
    rows[1]["limited_by"] = "undecided"  # why each GPU count gave no point is said
    assert capacity_scaling(rows)[0]["usl"]["reason"] == (
        "too few points: a capacity an SLO bounded at 1 of 4 GPU counts (2 GPUs: undecided at min_qps: an SLO's "
        "interval still straddled its bound in the longest step; 4 GPUs: max_qps reached with every SLO met; 8 GPUs: "
        "the load generator fell behind (a lower bound, not the system's limit)), the USL needs at least 3")
    doc = {"capacity": {"spec": {"target_qps": 2000.0}, "searches": [
        {"search": 0, "capacity_qps": 2500.0, "limited_by": "slo"},
        {"search": 1, "capacity_qps": float("nan"), "limited_by": "min_qps"}]}}
    assert [v["passed"] for v in capacity_verdicts(doc)] == [True, False]
    doc["capacity"]["spec"]["target_qps"] = None
    [unmeasured] = capacity_verdicts(doc)  # no target, but a search that measured nothing still fails
    assert unmeasured["search"] == 1 and not unmeasured["passed"] and unmeasured["must_pass"]
    doc["capacity"]["searches"].pop()
    assert capacity_verdicts(doc) == []


def _unmeasured(limited_by: str, qps: float, actors: int, **step) -> str:
    doc = {"cells": [{"cell": 0, "workload": {"load": {"actors": actors}}}],
           "capacity": {"spec": {"min_qps": qps}, "searches": [
               {"search": 0, "capacity_qps": float("nan"), "limited_by": limited_by,
                "steps": [{"cell": 0, "qps": qps, "p99_ms": 14.2, "broken": ["p99_ms<=10"],
                           "generator_lateness_p99_ms": 1.42, **step}]}]}}
    [verdict] = capacity_verdicts(doc)
    return verdict["bound"]


def test_an_unmeasured_capacity_says_why_and_what_to_do():
    assert "p99_ms<=10 already broke at the first step, 100 QPS (p99 14.2 ms): lower --min-qps or loosen --slo" \
        in _unmeasured("min_qps", 100.0, 1)
    busy = _unmeasured("generator", 100.0, 1)  # one actor late at 100 QPS: the host is busy, not the actor full
    assert "its host is busy" in busy and "add load actors" not in busy
    assert "add load actors" in _unmeasured("generator", 40_000.0, 2)
    undecided = _unmeasured("undecided", 100.0, 1, outcome="inconclusive", duration_s=6.0, p99_ms=8.2, p99_lo_ms=6.1,
                            p99_hi_ms=14.0)  # a p99 under its bound, not yet shown to be: no "broke" said of it
    assert undecided.endswith("p99_ms<=10 not shown to hold at the first rate, 100 QPS: its interval still straddled "
                              "the bound after 6 s (p99 8.2 ms, 95% CI 6.1–14): raise --max-step-s for more samples")


def test_a_rate_axis_does_not_repeat_a_capacity_search(tmp_path):
    """The search sets the rate: the smoke grid's two rates x two GPU counts are two searches, not four."""
    from perfray.config import load_config
    from perfray.driver import SweepDriver

    config = load_config(None, ["capacity={}"])
    assert len(config.cells()) == 4
    driver = SweepDriver(config, tmp_path / "run", "run")
    assert [b.search.n_gpus for b in driver.bases] == [1, 2] and driver.cells == []
