"""kill -9 of a load actor or a GPU actor mid-run; SIGINT/SIGTERM to the driver. Real Ray, real signals."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from support import REPO, alive, manifest

from perfray.config import load_config
from perfray.driver import Hooks, SweepDriver
from perfray.results.writer import prepare_run_dir, read_cell

FAULT_RUN = ["sweep={}", "duration_s=3", "warmup_s=0", "target_qps=300", "arrival=constant", "load.actors=2",
             "search.n_gpus=2", "microbench.enabled=false", "targets=[{metric: failure_rate, max: 0.01}]"]


def run_with_kill(tmp_path, role: str):
    config = load_config(None, FAULT_RUN)
    run_dir = prepare_run_dir(tmp_path, f"kill-{role}")
    killed = {}

    def kill_later(cell, load_handles, gpu_handles):
        import ray

        handle = load_handles[1] if role == "load" else gpu_handles[1]
        pid = ray.get(handle.pid.remote() if role == "load" else handle.ping.remote())

        def fire():
            os.kill(pid, signal.SIGKILL)
            killed["at_ns"] = time.time_ns()

        threading.Timer(2.0, fire).start()  # ~1.3 s into the cell

    code = SweepDriver(config, run_dir, f"kill-{role}", hooks=Hooks(on_cell_start=kill_later)).run()
    return code, run_dir, killed


def test_kill_9_of_a_load_actor_keeps_every_scheduled_request_as_a_row_and_fails_the_cell(tmp_path):
    code, run_dir, killed = run_with_kill(tmp_path, "load")
    assert code == 1 and killed  # the failure-rate target counts what the dead actor never sent
    doc = manifest(run_dir)
    assert doc["status"] == "complete" and doc["cells"][0]["status"] == "degraded"
    assert [(f["role"], f["actor"], f["cell"]) for f in doc["failures"]] == [("load", 1, 0)]
    rows = read_cell(run_dir, 0)
    assert rows.num_rows == 900 and np.unique(rows["seq"].to_numpy()).size == 900  # 300 QPS x 3 s, each once
    survivor = rows.filter(pc.equal(rows["actor"], 0))
    assert survivor.num_rows == 450  # every other request: intact
    assert (pc.cast(survivor["status"], "string").to_numpy(zero_copy_only=False) == "ok").all()
    dead = rows.filter(pc.equal(rows["actor"], 1))
    status = pc.cast(dead["status"], "string").to_numpy(zero_copy_only=False)
    # rows leave an actor at least once a second: at most the last second before the kill was never reported
    alive_s = (killed["at_ns"] - doc["cells"][0]["start_unix_ns"]) / 1e9
    assert 0.5 < alive_s < 3.0 and dead.num_rows == 450
    reported = dead.filter(pc.invert(pc.equal(pc.cast(dead["status"], "string"), "lost")))
    assert reported.num_rows >= (alive_s - 1.0) * 150 - 3 and reported["intended_ns"].to_numpy().max() < killed["at_ns"]
    lost = dead.filter(pc.equal(pc.cast(dead["status"], "string"), "lost"))
    assert lost.num_rows == (status == "lost").sum() == doc["cells"][0]["lost_rows"] > 0
    assert set(pc.cast(lost["error"], "string").to_pylist()) == {"ActorDiedError"} and lost["done_ns"].null_count == \
        lost.num_rows
    summary = pq.read_table(run_dir / "summary.parquet").to_pylist()[0]
    assert summary["status"] == "degraded" and summary["requests"] == 900
    assert summary["lost_rate"] == pytest.approx(lost.num_rows / 900) and summary["failure_rate"] >= summary["lost_rate"]
    assert summary["offered_qps"] == pytest.approx(300, rel=0.01)  # the schedule, not what survived
    # the config's target, and the built-in check that every scheduled request was sent (the harness delivered it)
    assert [(v["metric"], v["passed"]) for v in doc["verdicts"]] == [("failure_rate", False), ("lost_rate", False)]
    from perfray.analysis.report import write_report

    section = write_report(run_dir)[0].read_text().split("## Degraded cells", 1)[1].split("\n## ")[0]
    assert f"| 0 | load 1 (ActorDiedError) | {lost.num_rows:,} |" in section


def test_kill_9_of_a_load_actors_generator_process_ends_the_actor_and_its_share_is_lost_rows(tmp_path, responder_url):
    """An HTTP cell's generator runs in a process of the load actor's own; killing it is killing the actor."""
    config = load_config(None, [*FAULT_RUN, "system=http", f"stores.http.url={responder_url}",
                                "stores.http.ids_field=null", "targets=[]"])
    run_dir = prepare_run_dir(tmp_path, "kill-generator")
    pids = {}

    def kill_later(cell, load_handles, gpu_handles):
        import ray

        pids["actor"] = ray.get(load_handles[1].pid.remote())
        pids["generator"] = ray.get(load_handles[1].generator_process_pid.remote())
        threading.Timer(2.0, os.kill, (pids["generator"], signal.SIGKILL)).start()

    code = SweepDriver(config, run_dir, "kill-generator", hooks=Hooks(on_cell_start=kill_later)).run()
    assert code == 1 and pids["generator"] not in (None, pids["actor"])
    doc = manifest(run_dir)  # no target set, yet the schedule was not delivered: a failed run, not a pass
    assert [(v["metric"], v["passed"], v["must_pass"]) for v in doc["verdicts"]] == [("lost_rate", False, True)]
    assert doc["cells"][0]["status"] == "degraded"
    assert [(f["role"], f["actor"], f["cell"]) for f in doc["failures"]] == [("load", 1, 0)]
    assert {s["generator"] for s in doc["cells"][0]["actor_stats"]} == {"process"}  # the survivor's
    rows = read_cell(run_dir, 0)
    assert rows.num_rows == 900 and np.unique(rows["seq"].to_numpy()).size == 900
    status = pc.cast(rows["status"], "string").to_numpy(zero_copy_only=False)
    actor = rows["actor"].to_numpy()
    assert (status[actor == 0] == "ok").all() and 0 < (status[actor == 1] == "lost").sum() < 450
    assert not alive(pids["actor"]) and not alive(pids["generator"])


def test_kill_9_of_a_gpu_actor_turns_its_requests_into_errors_and_the_run_finishes(tmp_path):
    code, run_dir, killed = run_with_kill(tmp_path, "gpu")
    assert code == 0 and killed  # the live replica took over: < 1% of the cell failed
    doc = manifest(run_dir)
    assert doc["status"] == "complete" and doc["cells"][0]["status"] == "degraded"
    assert [(f["role"], f["actor"]) for f in doc["failures"]] == [("gpu", 1)]
    rows = read_cell(run_dir, 0)
    assert rows.num_rows == 900  # every scheduled request has a row
    status = pc.cast(rows["status"], "string").to_numpy(zero_copy_only=False)
    assert set(status) <= {"ok", "error"} and (status == "ok").mean() > 0.9
    endpoints = rows["endpoint"].to_numpy(zero_copy_only=False)
    after = rows["intended_ns"].to_numpy() > killed["at_ns"] + 200_000_000
    assert set(endpoints[after & (status == "ok")]) == {0}  # traffic moved to the live replica
    errors = pc.cast(rows["error"], "string").to_numpy(zero_copy_only=False)[status == "error"]
    assert all("Actor" in e for e in errors)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_to_the_driver_writes_results_so_far(tmp_path, sig):
    run_dir = tmp_path / "sig"
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "perfray.sweep", "--quiet", "--results-dir", str(tmp_path), "--run-id", "sig",
         "--set", "sweep={}", "--set", "duration_s=30", "--set", "microbench.enabled=false"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline and not list((run_dir / "requests").glob("cell-*/*.parquet")):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr.strip().splitlines()[-1]
    doc = manifest(run_dir)
    assert doc["status"] == "interrupted" and doc["cells"][0]["status"] == "interrupted"
    rows = read_cell(run_dir, 0)
    assert rows.num_rows > 300
    summary = pq.read_table(run_dir / "summary.parquet").to_pylist()
    assert summary[0]["status"] == "interrupted" and summary[0]["requests"] > 0
