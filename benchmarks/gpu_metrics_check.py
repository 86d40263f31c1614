"""On a real GPU, without Ray: the search-actor sampler publishes busy ratio and NVML utilisation/memory
through the prometheus-client exporter while a CuPy worker searches.

    python benchmarks/gpu_metrics_check.py
"""

from __future__ import annotations

import socket
import time
import urllib.request

import numpy as np

from perfray.metrics.nvml import GpuSampler
from perfray.metrics.sinks import PrometheusSink
from perfray.sut.gpu_search import GpuSearchWorker


def main() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = PrometheusSink(port)
    worker = GpuSearchWorker("cupy")
    rng = np.random.default_rng(0)
    worker.build(rng.standard_normal((1_000_000, 128), dtype=np.float32))
    busy = {"ns": 0}
    sampler = GpuSampler(sink, "gpu-check", 0, worker.describe()["device"], lambda: busy["ns"], interval_s=0.5)
    print("NVML started:", sampler.start(nvml=True))
    queries = rng.standard_normal((256, 128), dtype=np.float32)
    end = time.time() + 4
    while time.time() < end:
        t = time.perf_counter_ns()
        worker.search(queries, 10)
        busy["ns"] += time.perf_counter_ns() - t
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in body.splitlines():
        if line.startswith(("ray_perfray_gpu_", "ray_perfray_search_busy")):
            print(line)
    sampler.stop()


if __name__ == "__main__":
    main()
