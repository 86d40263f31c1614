"""Peak memory bandwidth and dense FP32 throughput of NVIDIA data-centre GPUs, looked up by the name NVML gives, for
roofline floors (vendors' datasheets: FP32 without tensor cores; HBM or GDDR bandwidth). A name not in the table is
an unknown device: no floor is drawn rather than another card's."""

from __future__ import annotations

import re

# (tokens that must all be in the name, label, bytes/s, FP32 FLOP/s); the first entry that matches wins, so the
# more specific variants of a model come first
PEAKS = (
    (("h200", "nvl"), "H200 NVL", 4.8e12, 60e12),
    (("h200",), "H200 SXM", 4.8e12, 67e12),
    (("h100", "nvl"), "H100 NVL", 3.9e12, 60e12),
    (("h100", "pcie"), "H100 PCIe", 2.0e12, 51e12),
    (("h100", "hbm3"), "H100 SXM", 3.35e12, 67e12),  # NVML: "NVIDIA H100 80GB HBM3"
    (("h100", "sxm5"), "H100 SXM", 3.35e12, 67e12),
    (("a100", "pcie", "80gb"), "A100 PCIe 80GB", 1.935e12, 19.5e12),
    (("a100", "pcie"), "A100 PCIe 40GB", 1.555e12, 19.5e12),
    (("a100", "sxm4", "80gb"), "A100 SXM4 80GB", 2.039e12, 19.5e12),
    (("a100", "sxm4"), "A100 SXM4 40GB", 1.555e12, 19.5e12),
    (("a10",), "A10", 600e9, 31.2e12),
    (("l4",), "L4", 300e9, 30.3e12),
    (("t4",), "T4", 320e9, 8.1e12),
)


def device_peaks(name: str | None) -> dict | None:
    """``{"device", "mem_bw", "fp32_flops"}`` for an NVML device name (e.g. ``NVIDIA H100 80GB HBM3``), or None."""
    tokens = set(re.split(r"[\s\-_]+", (name or "").lower()))
    for needed, label, mem_bw, flops in PEAKS:
        if all(t in tokens for t in needed):
            return {"device": label, "mem_bw": mem_bw, "fp32_flops": flops}
    return None


def roofline_floor_s(n: int, dim: int, queries: int, mem_bw: float, flops: float) -> float:
    """The least time a brute-force search of ``queries`` over ``n`` x ``dim`` float32 vectors can take: reading the
    index once, or the distance GEMM's FLOPs, whichever bounds."""
    return max(n * dim * 4 / mem_bw, 2.0 * n * dim * queries / flops)
