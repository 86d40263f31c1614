"""perfray's HTTP numbers against the truth: a local server (its own process) whose behaviour is known
exactly, driven through ``python -m perfray.sweep`` (Ray, one load actor) as a user would."""

import json
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from support import sweep_cli

from perfray.services.process import free_port, wait_for_port

HTTP_CELL = ["--config", "configs/smoke.yaml", "--set", "system=http", "--set", "dataset.n=2000",
             "--set", "dataset.dim=16", "--set", "dataset.n_queries=200", "--set", "arrival=constant",
             "--set", "batch_window_ms=0", "--set", "batch_max=1", "--set", "microbench.enabled=false",
             "--set", "sweep={}", "--set", "targets=[]"]


@pytest.fixture
def responder(tmp_path):
    procs = []

    def start(*args):
        port = free_port()
        log = tmp_path / f"releases-{port}.txt"
        proc = subprocess.Popen([sys.executable, "-m", "perfray.services.http_responder", "--port", str(port),
                                 "--release-log", str(log), *args])
        procs.append(proc)
        wait_for_port(port, 20, "http responder")
        return f"http://127.0.0.1:{port}/search", log

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def test_stalls_recorded_within_2_percent_of_the_truth(tmp_path, responder):
    """Every 2 s the server holds all replies for 300 ms and releases them together. The truth for each request
    follows from its intended time and the logged releases; perfray's p99/p99.9 must be within 2% of it, and
    each released reply recorded within 5 ms of its release."""
    period_s, hold_ms = 2.0, 300.0
    epoch_ns = time.time_ns()
    url, log = responder("--stall-every-s", str(period_s), "--stall-ms", str(hold_ms), "--epoch-ns", str(epoch_ns))
    out = sweep_cli(*HTTP_CELL, "--results-dir", str(tmp_path), "--run-id", "stalls", "--set", f"stores.http.url={url}",
                    "--set", "load.target_qps=1000", "--set", "load.duration_s=8", "--set", "load.warmup_s=1",
                    "--set", "load.concurrency=512", timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = pq.read_table(tmp_path / "stalls" / "requests").to_pandas()
    rows = rows[rows.phase != "warmup"]
    assert (rows.status == "ok").all() and len(rows) == 8000

    logged = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    releases = {entry["period"]: entry["released_ns"] for entry in logged}
    intended = rows.intended_ns.to_numpy()
    period, into = np.divmod(intended - epoch_ns, int(period_s * 1e9))
    held = into < hold_ms * 1e6
    release = np.array([releases.get(p, 0) for p in period])
    assert held.sum() >= 0.14 * len(rows) and (release[held] > 0).all()

    recorded = rows.latency_ns.to_numpy()
    # the truth comes from the server alone: a held request from its logged release, any other from the service
    # time it was configured with (none: it answers at once), never from perfray's own figures
    truth = np.where(held, release - intended, 0)
    for q in (0.99, 0.999):
        ours, true = np.quantile(recorded, q), np.quantile(truth, q)
        assert abs(ours - true) <= 0.02 * true, (q, ours / 1e6, true / 1e6)
    # Released replies are recorded promptly: the server writes a burst one reply after another (its log has
    # each write), and the i-th reply recorded after a release is compared with the i-th one written: within
    # 5 ms typically, never beyond 10 ms (on 2 shared vCPUs the load actor can sit runnable for a few ms; the
    # old client took 15-170 ms).
    done = rows.done_ns.to_numpy()
    late_ms = []
    for entry in logged:
        recorded = np.sort(done[held & (period == entry["period"])])
        written = np.asarray(entry["written_ns"][: recorded.size])
        late_ms.append((recorded[: written.size] - written) / 1e6)
    late_ms = np.concatenate(late_ms)
    assert late_ms.size >= 0.14 * len(rows)
    assert np.median(late_ms) <= 5 and late_ms.max() <= 10, np.quantile(late_ms, [0.5, 0.99, 1.0])
    lag_ms = rows.schedule_lag_ns.to_numpy() / 1e6
    assert np.quantile(lag_ms, 0.99) <= 10, np.quantile(lag_ms, [0.5, 0.99, 0.999])
