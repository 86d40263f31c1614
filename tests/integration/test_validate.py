"""``python -m perfray validate``: phases as one campaign, go / no-go judged on the sub-runs' own verdicts, a
resumed campaign re-runs nothing that finished, and a store that is down stops it before any phase runs."""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
from support import REPO
from support import manifest as manifest_of

from perfray.services.process import free_port


def validate(*args, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-m", "perfray", "validate", "--quiet", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env)


def test_go_for_a_sound_phase_no_go_for_one_slowed_on_purpose_and_resume_keeps_what_finished(tmp_path):
    sound = validate("--scale", "laptop", "--only", "1", "--capacity", "none", "--results-dir", str(tmp_path),
                     "--run-id", "sound",
                     "--set", "targets=[{metric: recall_mean, min: 0.999}]",
                     "--set", "slo=[{metric: failure_rate, goal: 0.01, stretch: 0.001}]")
    assert sound.returncode == 0, sound.stderr[-3000:]
    root = tmp_path / "sound"
    doc = json.loads((root / "campaign.json").read_text())
    assert doc["scale"] == "laptop" and doc["rule"]["rate"] < 1 and doc["status"] == "complete"
    [one] = [p for p in doc["phases"] if p["status"] != "pending"]
    assert one["number"] == 1 and one["exit_code"] == 0 and (root / one["run_id"] / "report.md").is_file()
    page = (root / "validation.md").read_text()
    assert "| 1 | vector-isolation | **go** | 4/4 | 2/2 |" in page and "Laptop scale: not the production verdict" in page

    again = validate("--resume", str(root), "--only", "1")  # (--capacity is the campaign's own, kept)
    assert again.returncode == 0 and "finished before: kept" in again.stdout, again.stdout + again.stderr[-2000:]
    assert sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != ".cache") == [one["run_id"]]  # none again

    # every search takes 20 ms per query: a 10 ms p99 cannot hold, whatever the machine
    slowed = validate("--scale", "laptop", "--only", "1", "--capacity", "none", "--results-dir", str(tmp_path),
                      "--run-id", "slowed",
                      "--set", "search.service_ms_per_query=20", "--set", "targets=[]",
                      "--set", "slo=[{metric: p99_ms, goal: 10}]")  # a goal missed: no-go, exit 1
    assert slowed.returncode == 1, slowed.stderr[-3000:]
    assert "laptop scale: **no-go**" in (tmp_path / "slowed" / "validation.md").read_text()


def test_a_campaign_killed_between_phases_resumes_where_it_stopped(tmp_path):
    """kill -9 of the whole campaign (driver, embedded Ray) during its second phase: --resume keeps the first
    phase's sub-run as it was and runs the second again, in a directory of its own (the killed attempt stays)."""
    plan = tmp_path / "plan"
    plan.mkdir()
    source = (REPO / "configs/phases/1-vector-isolation.yaml").read_text()
    (plan / "1-first.yaml").write_text(source.replace("duration_s: 60", "duration_s: 2"))
    (plan / "2-second.yaml").write_text(source.replace("duration_s: 60", "duration_s: 8"))
    sets = ["dataset.n=2000", "dataset.dim=16", "dataset.n_queries=100", "load.target_qps=50", "load.warmup_s=0.5",
            "load.actors=1", "sweep={}", "microbench.enabled=false", "targets=[]", "slo=[]"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "perfray", "validate", "--quiet", "--plan", str(plan),
                             "--scale", "cluster", "--capacity", "none", "--results-dir", str(tmp_path),
                             "--run-id", "killed", *[a for s in sets for a in ("--set", s)]],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    root = tmp_path / "killed"
    deadline, second = time.time() + 240, root / "2-second" / "manifest.json"
    while time.time() < deadline and '"running"' not in (second.read_text() if second.is_file() else ""):
        time.sleep(0.2)
    time.sleep(2.0)  # into its 8.5 s cell
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    doc = json.loads((root / "campaign.json").read_text())
    assert [(p["status"], p["run_id"]) for p in doc["phases"]] == [("complete", "1-first"), ("running", "2-second")]
    kept = (root / "1-first" / "manifest.json").read_bytes()

    again = validate("--resume", str(root))  # with the campaign's own --set values
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "phase 1 (first) finished before: kept (1-first)" in again.stdout
    doc = json.loads((root / "campaign.json").read_text())
    assert [(p["status"], p["run_id"]) for p in doc["phases"]] == [("complete", "1-first"), ("complete", "2-second.2")]
    assert (root / "1-first" / "manifest.json").read_bytes() == kept  # not run again
    assert json.loads((root / "2-second" / "manifest.json").read_text())["status"] == "running"  # the killed attempt
    assert doc["status"] == "complete" and "| 2 | second | **go** |" in (root / "validation.md").read_text()
    assert manifest_of(root / "2-second.2")["cells"][0]["workload"]["dataset"]["n"] == 2000


def test_a_capacity_phase_answers_how_many_gpus_a_system_of_known_capacity_needs(tmp_path):
    """Phase 1 as a capacity search (the default for phases 1 and 3) over 1, 2 and 4 simulated GPUs, against search
    actors that serve in arrival order and spend 4 ms per query (``search.service_ms_per_query``): a GPU serves at
    most 250 queries/s and n GPUs 250 n. With constant arrivals the queue stays short below that and grows without
    bound above it (past the SLO, p99 <= 100 ms, within a step); the Ray hop's jitter queues a little near it. So
    each capacity lies within 15% below 250 n, the USL fitted to them is linear, and the sub-run's on-paper service
    rate per GPU (built from the actors' measured cost per query) is within 10% of the measured one. The goal rate,
    500 QPS, needs 2 GPUs at the service-time bound and 3 once any queueing is allowed for (a capacity at the SLO
    lies below 250 n): the sizing answer is 3, and the phase is go (4 GPUs held 500 QPS)."""
    per_gpu = 250.0
    out = validate("--scale", "cluster", "--only", "1", "--results-dir", str(tmp_path), "--run-id", "size",
                   *[a for s in ("dataset.n=2000", "dataset.dim=16", "dataset.n_queries=200",
                                 "search.service_ms_per_query=4", "load.arrival=constant", "load.actors=1",
                                 "load.target_qps=500", "sweep={search.n_gpus: [1, 2, 4]}", "microbench.enabled=false",
                                 "capacity.growth=2", "capacity.step_s=3", "capacity.max_step_s=6",
                                 "capacity.warmup_s=0.5", "capacity.resolution=0.04", "targets=[]",
                                 "slo=[{metric: p99_ms, goal: 100}, {metric: failure_rate, goal: 0.01}]")
                     for a in ("--set", s)], timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    root = tmp_path / "size"
    doc = json.loads((root / "campaign.json").read_text())
    [one] = [p for p in doc["phases"] if p["status"] != "pending"]
    assert doc["capacity_phases"] == [1, 3] and one["kind"] == "capacity"
    run_dir = root / one["run_id"]
    run = manifest_of(run_dir)
    assert run["capacity"]["spec"]["slo"] == ["p99_ms<=100", "failure_rate<=0.01"]
    capacity = pq.read_table(run_dir / "capacity.parquet").to_pylist()
    assert [c["n_gpus"] for c in capacity] == [1, 2, 4]
    for c in capacity:
        truth = per_gpu * c["n_gpus"]
        assert c["simulated"] and c["limited_by"] == "slo", c
        assert 0.85 * truth <= c["capacity_qps"] < c["capacity_hi"] and c["capacity_qps"] <= truth * 1.02, (truth, c)
    [group] = run["capacity"]["scaling"]
    assert group["n_gpus"] == [1, 2, 4] and group["limited_by"] == ["slo"] * 3, group
    assert [f"{x:.6g}" for x in group["capacity_qps"]] == [f"{c['capacity_qps']:.6g}" for c in capacity]
    usl = group["usl"]
    assert usl["ok"] and usl["sigma"] < 0.05 and 0.85 * per_gpu <= usl["lambda"] <= 1.02 * per_gpu, usl
    size = usl["sizing"]
    assert size["n"] == 3 and size["ci"][0] <= 3 <= size["ci"][1], size
    # every step is a cell with its rows, like any other
    summary = pq.read_table(run_dir / "summary.parquet").to_pylist()
    assert sorted({r["capacity_search"] for r in summary}) == [0, 1, 2]
    assert len(summary) == sum(c["steps"] for c in capacity) == len(run["cells"])
    # the sub-run's own report, and the campaign's page
    report = (run_dir / "report.md").read_text()
    assert "Capacity vs GPUs: 1 GPU:" in report and "USL fit on capacities" in report
    assert "**GPUs for 500 QPS at these SLOs:** 3 [" in report
    [here] = [line for line in report.splitlines() if line.startswith("| service rate per GPU here |")]
    modelled = float(here.split("|")[2].split()[0].replace(",", ""))
    measured = (capacity[0]["capacity_qps"] + capacity[0]["capacity_hi"]) / 2  # the bracket holding the capacity
    assert abs(modelled - measured) <= 0.1 * measured, (here, capacity[0])
    assert "| 100 × NVIDIA T4 |" in report  # with the fitted efficiency, not × 100 flat
    page = (root / "validation.md").read_text()
    assert "| 1 | vector-isolation | **go** |" in page and "**GPUs for 500 QPS at these SLOs:** 3 [" in page, page


def test_a_store_that_is_down_stops_the_campaign_before_any_phase(tmp_path):
    out = validate("--scale", "laptop", "--only", "1,3", "--results-dir", str(tmp_path), "--run-id", "down",
                   "--set", f"stores.postgres.port={free_port()}", "--set", f"stores.neo4j.uri=bolt://127.0.0.1:{free_port()}",
                   timeout=120)
    assert out.returncode == 3, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "phase 3" in lines[0] and "python -m perfray services" in lines[0], lines
    assert not (tmp_path / "down").exists()
