import math

import numpy as np
import pytest

from perfray.analysis.scaling_model import T4, fit_usl, paper_qps, usl


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


def test_paper_capacity_of_t4_matches_the_datasheet_arithmetic():
    # 1M x 128 fp32 = 512 MB at 320 GB/s = 1.6 ms per scan -> 625 single-query QPS per T4
    assert paper_qps(T4, 1_000_000, 128, 1, 1) == pytest.approx(625, rel=1e-3)
    # batched fp32 is compute-bound: 8.1 TFLOP/s / (2 * 128M FLOP) ~ 31.6K QPS per T4, x100 GPUs
    assert paper_qps(T4, 1_000_000, 128, 1024, 100) == pytest.approx(100 * 8.1e12 / (2 * 128e6), rel=1e-3)
