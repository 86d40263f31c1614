"""Roofline peaks by NVML device name (perfray.backends.device_peaks): the card named, never another card's."""

import pytest

from perfray.backends.device_peaks import device_peaks, roofline_floor_s


@pytest.mark.parametrize("name, label, tb_s, tflops", [
    ("Tesla T4", "T4", 0.32, 8.1),
    ("NVIDIA L4", "L4", 0.3, 30.3),
    ("NVIDIA A10", "A10", 0.6, 31.2),
    ("NVIDIA A100-PCIE-40GB", "A100 PCIe 40GB", 1.555, 19.5),
    ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB", 1.935, 19.5),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM4 80GB", 2.039, 19.5),
    ("NVIDIA H100 PCIe", "H100 PCIe", 2.0, 51.0),
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 3.35, 67.0),
    ("NVIDIA H100 NVL", "H100 NVL", 3.9, 60.0),
    ("NVIDIA H200", "H200 SXM", 4.8, 67.0),
])
def test_each_card_gets_its_own_peaks(name, label, tb_s, tflops):
    peaks = device_peaks(name)
    assert peaks == {"device": label, "mem_bw": pytest.approx(tb_s * 1e12), "fp32_flops": pytest.approx(tflops * 1e12)}


@pytest.mark.parametrize("name", ["NVIDIA GeForce RTX 4090", "cpu (numpy)", "", None, "AMD Instinct MI300X"])
def test_an_unknown_device_has_no_peaks(name):
    assert device_peaks(name) is None


def test_the_logged_h100_run_reached_a_third_of_its_floor():
    """benchmarks/results/gpu_knn-h100-2026-11-27-defaults.txt: batch 1024 at 87,022 QPS on an H100 80GB HBM3 (SXM).
    With its own peaks the GEMM bounds at 3.91 ms (261,719 QPS): 33%; the PCIe figures the log used said 44%."""
    peaks = device_peaks("NVIDIA H100 80GB HBM3")
    floor_qps = 1024 / roofline_floor_s(1_000_000, 128, 1024, peaks["mem_bw"], peaks["fp32_flops"])
    assert floor_qps == pytest.approx(261_719, rel=1e-4)
    assert 87_022 / floor_qps == pytest.approx(0.3325, abs=0.001)
