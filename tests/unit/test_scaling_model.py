import math

import numpy as np
import pytest

from perfray.analysis.gpu_model import cluster_rate, measured_costs, per_gpu
from perfray.analysis.scaling_model import T4, fit_usl, paper_seconds, usl


def test_usl_fit_recovers_known_parameters_and_peak():
    n = np.array([1, 2, 4, 8, 16, 32])
    x = usl(n, 1000.0, 0.02, 0.0005) * (1 + np.random.default_rng(0).normal(0, 0.005, n.size))
    fit = fit_usl(n, x)
    assert fit["ok"] and fit["r2"] > 0.99
    assert fit["sigma"] == pytest.approx(0.02, abs=0.01) and fit["kappa"] == pytest.approx(0.0005, rel=0.3)
    assert fit["peak_n"] == pytest.approx(math.sqrt(0.98 / 0.0005), rel=0.2)
    low, high = fit["predicted_qps_ci"]
    assert low <= fit["predicted_qps"] <= high


def test_usl_says_plainly_when_data_are_too_few_or_too_noisy():
    assert fit_usl([1, 2], [100, 190]) == {
        "ok": False, "reason": "too few points: throughput at 2 distinct GPU counts, the USL needs at least 3"}
    noisy = fit_usl([1, 2, 4, 8, 1, 2, 4, 8], [100, 900, 50, 700, 800, 60, 900, 40])
    assert not noisy["ok"] and noisy["reason"].startswith("too noisy")


def test_paper_kernel_time_of_t4_matches_the_datasheet_arithmetic():
    # 1M x 128 fp32 = 512 MB at 320 GB/s = 1.6 ms per scan
    assert paper_seconds(T4, 1_000_000, 128, 1) == pytest.approx(1.6e-3, rel=1e-3)
    # batched fp32 is compute-bound: 2 * 128M FLOP per query at 8.1 TFLOP/s
    assert paper_seconds(T4, 1_000_000, 128, 1024) / 1024 == pytest.approx(2 * 128e6 / 8.1e12, rel=1e-3)


def _usage(busy_s, rows, searches):
    return [{"busy_s": busy_s, "rows": rows, "searches": searches, "busy": 0.5}]


def test_the_per_gpu_model_is_built_from_measured_costs_not_the_roofline():
    """A search actor that spends 4 ms per query (a known system): whatever the T4's kernel bound, one GPU serves
    at most 1 / (its kernel + the 4 ms measured around it) — 250/s here, not the roofline's ~10^5."""
    cells = [{"cell": 0, "k": 10, "p50_ms": 6.0, "topology": "replicated"}]
    micro = [{"batch": 1, "k": 10, "batch_ns": 20_000}, {"batch": 16, "k": 10, "batch_ns": 80_000}]
    costs = measured_costs(cells, [_usage(busy_s=4.0, rows=1000, searches=1000)], micro)
    assert costs["cost_s"] == pytest.approx(4e-3) and costs["batch"] == 1.0
    assert costs["kernel_s"] == pytest.approx(20e-6) and costs["overhead_s"] == pytest.approx(4e-3 - 20e-6)
    assert costs["floor_ms"] == pytest.approx(2.0)  # p50 6 ms less the 4 ms search
    g = per_gpu(T4, costs, n=2000, dim=16, slo_ms=40.0)
    roofline = 1 / paper_seconds(T4, 2000, 16, 1)
    assert roofline > 1e5 and g["service_qps"] == pytest.approx(1 / (4e-3 - 20e-6 + 1 / roofline), rel=1e-9)
    assert 240 < g["service_qps"] < 252
    assert g["slo_qps"] == pytest.approx(g["service_qps"] - math.log(100) / 0.038)
    # no microbench: no kernel split, so nothing on paper
    assert math.isnan(per_gpu(T4, measured_costs(cells, [_usage(4.0, 1000, 1000)], []), 2000, 16, 40.0)["service_qps"])


def test_n_gpus_on_paper_only_through_a_fitted_efficiency():
    assert cluster_rate(250.0, None, 100) is None
    assert cluster_rate(250.0, {"ok": False, "reason": "too few points"}, 100) is None
    n = [1, 2, 4, 8, 16]
    fit = fit_usl(n, [usl(x, 1000.0, 0.02, 0.0001) for x in n])
    point, lo, hi = cluster_rate(250.0, fit, 100)
    efficiency = usl(100, fit["lambda"], fit["sigma"], fit["kappa"]) / (100 * fit["lambda"])
    assert point == pytest.approx(250.0 * 100 * efficiency) and lo <= point <= hi < 250.0 * 100


def test_the_sizing_answer_is_the_fewest_gpus_a_system_of_known_capacity_needs():
    """Capacities of a system whose USL is known (λ = 250 QPS per GPU, σ = 0.05, κ = 0: X(N) = 250N / (1 + 0.05(N-1)))
    measured with 1% noise: the GPUs for 2,000 QPS are the smallest N with X(N) >= 2,000, i.e. 2000·0.95 / (250 -
    2000·0.05) = 12.67 -> 13, inside the interval; a rate above λ/σ = 5,000 is never reached."""
    from perfray.analysis.capacity_report import sizing_line

    rng = np.random.default_rng(4)
    n = np.array([1, 2, 4, 8, 16])
    measured = usl(n, 250.0, 0.05, 0.0) * rng.normal(1, 0.01, n.size)
    fit = fit_usl(n, measured, rate=2000)
    size = fit["sizing"]
    assert size["n"] == 13 and size["ci"][0] <= 13 <= size["ci"][1] and size["ci"][1] - size["ci"][0] <= 4
    assert sizing_line(fit, 2000).startswith(f"**GPUs for 2,000 QPS at these SLOs:** 13 [{size['ci'][0]:,.0f}, ")
    never = fit_usl(n, measured, rate=6000)
    assert math.isinf(never["sizing"]["n"]) and "not reachable" in sizing_line(never, 6000)
    assert "cannot extrapolate (too few points" in sizing_line(fit_usl([1, 2], [250, 480], rate=2000), 2000)


def test_the_floor_names_each_measured_part_outside_the_search():
    from perfray.analysis.gpu_model import _floor_parts, slo_ms

    cells = [{"transport_p50_ms": 2.5, "queue_p50_ms": 0.2, "graph_p50_ms": 3.0, "policy_p50_ms": float("nan")},
             {"transport_p50_ms": 1.5, "queue_p50_ms": 0.4, "graph_p50_ms": 4.0}]
    rows = _floor_parts(cells)
    assert [r.split("|")[1].strip() for r in rows] == ["of which transport p50", "of which queue p50",
                                                       "of which graph p50"]  # no policy stage was measured
    assert "| 1.50 ms |" in rows[0] and "| 3.00 ms |" in rows[2]
    # the SLO the model budgets for: the config's tightest p99 bound, a goal of its slo: section included
    assert slo_ms({"targets": [{"metric": "p99_ms", "max": 50}], "slo": [{"metric": "p99_ms", "goal": 10}]}) == 10
    # a stretch (advisory) or one-phase bound is not the p99 the whole run must meet
    assert slo_ms({"targets": [{"metric": "p99_ms", "max": 8.7, "must_pass": False},
                               {"metric": "p99_ms", "max": 9.0, "where": {"phase": "stretch"}}],
                   "slo": [{"metric": "p99_ms", "goal": 10}]}) == 10


def test_the_on_paper_answer_beside_the_measured_one():
    """The search actor of the test above (4 ms per query measured, SLO 40 ms, floor 2 ms): ~130 QPS per T4 at
    the SLO; 1,000 QPS needs at least 8 of them with perfect scaling, more with the contention the measured
    capacities' USL carries (σ = 0.05: the fewest N with 130·N / (1 + 0.05(N - 1)) >= 1,000 is 12)."""
    from perfray.analysis.gpu_model import paper_sizing_line

    manifest = {"gpus": {"actors": [{"rows": 2000, "dim": 16}]}, "config": {"slo": [{"metric": "p99_ms", "goal": 40}]},
                "cells": [{"gpu_usage": _usage(busy_s=4.0, rows=1000, searches=1000)}]}
    summary = [{"cell": 0, "k": 10, "p50_ms": 6.0, "topology": "replicated", "capacity_search": 0}]
    micro = [{"batch": 1, "k": 10, "batch_ns": 20_000}]
    per = per_gpu(T4, measured_costs(summary, [_usage(4.0, 1000, 1000)], micro), 2000, 16, 40.0)["slo_qps"]
    assert per > 125 and per < 135
    flat = paper_sizing_line(manifest, summary, micro, 1000.0, None, T4)
    assert flat.startswith(f"**On paper, NVIDIA T4s for 1,000 QPS:** at least {math.ceil(1000 / per)}: ")
    fitted = {"ok": True, "sigma": 0.05, "kappa": 0.0}
    n = next(n for n in range(1, 100) if per * n / (1 + 0.05 * (n - 1)) >= 1000)
    assert n > math.ceil(1000 / per)
    assert paper_sizing_line(manifest, summary, micro, 1000.0, fitted, T4).startswith(
        f"**On paper, NVIDIA T4s for 1,000 QPS:** {n}: ")
    assert "cannot estimate (no GPU search actors" in paper_sizing_line({"gpus": {}}, summary, micro, 1000.0, None, T4)
