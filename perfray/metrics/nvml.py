"""GPU utilisation and memory per device through NVML, sampled on a background thread."""

from __future__ import annotations

import threading

from perfray.metrics.sinks import warn


class GpuSampler:
    """Samples every visible GPU once per ``interval_s`` into a sink; warns once if NVML is missing."""

    def __init__(self, sink, run: str, interval_s: float = 1.0) -> None:
        self.sink, self.run, self.interval_s = sink, run, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as err:  # ImportError, or NVMLError without a driver
            warn(f"NVML is not available ({type(err).__name__}); GPU utilisation is not reported")
            return False
        self._thread = threading.Thread(target=self._run, name="perfray-nvml", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        import pynvml

        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        while not self._stop.wait(self.interval_s):
            for i, handle in enumerate(handles):
                name = pynvml.nvmlDeviceGetName(handle)
                tags = {"run": self.run, "gpu": str(i), "device": name.decode() if isinstance(name, bytes) else name}
                self.sink.set("perfray_gpu_utilization_percent",
                              pynvml.nvmlDeviceGetUtilizationRates(handle).gpu, tags)
                self.sink.set("perfray_gpu_memory_used_bytes", pynvml.nvmlDeviceGetMemoryInfo(handle).used, tags)

    def stop(self) -> None:
        self._stop.set()
