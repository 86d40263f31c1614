"""While a sweep runs on embedded Ray, its actors' metrics are served in Prometheus format by Ray's agent."""

import threading
import time
import urllib.request

from support import manifest

from perfray.config import load_config
from perfray.driver import Hooks, SweepDriver
from perfray.results.writer import prepare_run_dir
from perfray.services.process import free_port


def test_ray_metrics_endpoint_serves_perfray_metrics_during_a_run(tmp_path):
    port = free_port()
    config = load_config(None, ["sweep={}", "duration_s=4", "warmup_s=0.5", "microbench.enabled=false",
                                "targets=[]", f"metrics.export_port={port}", "metrics.report_interval_ms=500"])
    run_dir = prepare_run_dir(tmp_path, "live")
    seen = {}

    def scrape(*_):
        def poll():
            deadline = time.time() + 20
            while time.time() < deadline:
                try:
                    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                except OSError:
                    body = ""
                if "ray_perfray_latency_ms_bucket" in body and 'status="ok"' in body:
                    seen["body"] = body
                    return
                time.sleep(0.5)

        threading.Thread(target=poll, daemon=True).start()

    assert SweepDriver(config, run_dir, "live", hooks=Hooks(on_cell_start=scrape)).run() == 0
    body = seen.get("body", "")
    for name in ("ray_perfray_requests", "ray_perfray_latency_ms_bucket", "ray_perfray_schedule_lag_ms_bucket",
                 "ray_perfray_batch_size_bucket", "ray_perfray_target_qps", "ray_perfray_achieved_qps",
                 "ray_perfray_in_flight"):
        assert name in body, name
    assert 'run="live"' in body and 'le="8.7"' in body
    assert manifest(run_dir)["ray"]["metrics_port"] == port
