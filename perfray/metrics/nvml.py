"""Per search actor, once a second on a background thread: how busy it was (always) and its device's
utilisation and memory through NVML (when the GPU is real and NVML is there)."""

from __future__ import annotations

import os
import threading
import time

from perfray.metrics.sinks import warn


class GpuSampler:
    """Publishes ``busy_ns()`` as a busy ratio, and NVML figures when asked, every ``interval_s``."""

    def __init__(self, sink, run: str, gpu: int, device: str, busy_ns, interval_s: float = 1.0) -> None:
        self.sink, self.busy_ns, self.interval_s = sink, busy_ns, interval_s
        self.tags = {"run": run, "gpu": str(gpu), "device": device}
        self._stop = threading.Event()
        self._nvml = None
        self.util_sum = 0.0  # running totals, so a caller can average NVML utilisation over any window
        self.util_samples = 0

    def start(self, nvml: bool) -> bool:
        """Start sampling; returns False when NVML was wanted but is not available (busy ratio still runs)."""
        ok = True
        if nvml:
            try:
                import pynvml

                pynvml.nvmlInit()
                # The actor sees one GPU (CUDA_VISIBLE_DEVICES); NVML numbers physical devices.
                self._nvml = pynvml.nvmlDeviceGetHandleByIndex(_physical_index())
            except Exception as err:  # ImportError, or NVMLError without a driver
                warn(f"NVML is not available ({type(err).__name__}); GPU utilisation is not reported")
                ok = False
        threading.Thread(target=self._run, name="perfray-gpu-metrics", daemon=True).start()
        return ok

    def _run(self) -> None:
        last_busy, last = self.busy_ns(), time.monotonic_ns()
        while not self._stop.wait(self.interval_s):
            busy, now = self.busy_ns(), time.monotonic_ns()
            self.sink.set("perfray_search_busy_ratio", min(1.0, (busy - last_busy) / max(now - last, 1)), self.tags)
            last_busy, last = busy, now
            if self._nvml is not None:
                import pynvml

                util = pynvml.nvmlDeviceGetUtilizationRates(self._nvml).gpu
                self.util_sum += util
                self.util_samples += 1
                self.sink.set("perfray_gpu_utilization_percent", util, self.tags)
                self.sink.set("perfray_gpu_memory_used_bytes", pynvml.nvmlDeviceGetMemoryInfo(self._nvml).used,
                              self.tags)

    def stop(self) -> None:
        self._stop.set()


def _physical_index() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    return int(visible) if visible.isdigit() else 0
