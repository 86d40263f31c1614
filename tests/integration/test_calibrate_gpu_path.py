"""The GPU path's ceiling: micro-batches through real Ray to a search actor that answers at once."""

import pytest

from perfray.load import calibration


@pytest.mark.timeout(300)
def test_gpu_path_ceiling_through_ray_is_measured_and_cached(tmp_path, monkeypatch):
    from perfray.cluster.actors import NoopSearchPath

    monkeypatch.setenv("PERFRAY_CACHE_DIR", str(tmp_path))
    doc = calibration.calibrate(("gpu",), step_s=0.5, report=lambda *_: None, gpu_path=NoopSearchPath)
    gpu = doc["paths"]["gpu"]
    held = [s for s in gpu["steps"] if s["held"]]
    assert gpu["ceiling_qps"] >= 500 and held and max(s["qps"] for s in held) == gpu["ceiling_qps"]
    assert all(s["lag_p99_ms"] <= 1.0 for s in held) and gpu["cpu_us_per_request"] > 0
    assert calibration.ceiling_of(calibration.cached(), "gpu") == gpu["ceiling_qps"]
