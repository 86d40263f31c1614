"""`ray job submit` to a real local Ray head, exactly as a user runs a sweep on a cluster."""

import os
import socket
import subprocess

import pyarrow.parquet as pq
import pytest
from support import REPO, manifest, ray_cli

from perfray.services.process import free_port

DASHBOARD = 8265


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def ray_head(tmp_path):
    if port_in_use(DASHBOARD):
        pytest.fail(f"port {DASHBOARD} is taken: another Ray head is running (ray stop)")
    # Ray >= 2.59 enables token auth for local clusters; head and client must both say so.
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    start = subprocess.run(
        [ray_cli(), "start", "--head", "--port", str(free_port()), "--num-gpus", "2", "--num-cpus", "4",
         "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(DASHBOARD),
         "--disable-usage-stats"], capture_output=True, text=True, timeout=180, env=env)
    assert start.returncode == 0, start.stderr[-2000:]
    try:
        yield env
    finally:
        subprocess.run([ray_cli(), "stop", "--force"], capture_output=True, timeout=120, env=env)


def test_ray_job_submit_runs_the_sweep_on_the_cluster(ray_head, tmp_path):
    results = tmp_path / "results"
    cmd = [ray_cli(), "job", "submit", "--address", f"http://127.0.0.1:{DASHBOARD}", "--working-dir", ".", "--",
           "python", "-m", "perfray.sweep", "--config", "configs/smoke.yaml", "--results-dir", str(results),
           "--run-id", "on-cluster", "--set", "duration_s=1", "--set", "warmup_s=0.5", "--quiet",
           "--set", "targets=[{metric: recall_mean, min: 0.999}]"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=ray_head)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "succeeded" in out.stdout + out.stderr
    doc = manifest(results / "on-cluster")
    assert doc["status"] == "complete"
    assert doc["ray"]["embedded"] is False and doc["ray"]["resources"]["GPU"] == 2
    assert doc["gpus"]["simulated"] is True  # the head declared logical GPUs; no CUDA device answered
    summary = pq.read_table(results / "on-cluster" / "summary.parquet").to_pylist()
    assert len(summary) == 4 and all(s["recall_mean"] == 1.0 for s in summary)
    assert sorted(p.name for p in (results / "on-cluster" / "requests").iterdir()) == [
        "cell-0000", "cell-0001", "cell-0002", "cell-0003"]
