"""perfray on a real multi-node Ray cluster on one machine (ray.cluster_utils.Cluster: a raylet per node): where it
places actors, the nodes it names, and a node lost mid-cell. The head hosts no actors; two "GPU" nodes (1 CPU, 1
logical GPU) and two load nodes (2 CPUs, a custom ``loadgen`` resource). The node-loss tests come last: each
removes a node for good."""

import os
import subprocess
import threading
import time

import numpy as np
import pyarrow.compute as pc
import pytest
from support import REPO, manifest, ray_cli, sweep_cli

from perfray.cluster.node_loss import NodeLost
from perfray.config import load_config
from perfray.driver import Hooks, SweepDriver
from perfray.results.writer import prepare_run_dir, read_cell
from perfray.services.process import free_port

RUN = ["sweep={}", "duration_s=2", "warmup_s=0", "target_qps=200", "arrival=constant", "search.n_gpus=2",
       "microbench.enabled=false", "metrics.enabled=false", "cluster.placement_timeout_s=20",
       "targets=[{metric: failure_rate, max: 0.01}]"]


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # The GCS declares a node dead after its health checks miss: ~2 s here instead of Ray's ~15 s.
    head = {"num_cpus": 0, "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                                              "health_check_failure_threshold": 3},
            "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": free_port()}  # job API
    c = Cluster(initialize_head=True, head_node_args=head)
    c.gpu_nodes = [c.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    c.load_nodes = [c.add_node(num_cpus=2, resources={"loadgen": 2}) for _ in range(2)]
    c.wait_for_nodes()
    yield c
    c.shutdown()


def run(cluster, tmp_path, run_id, *overrides, hook=None):
    config = load_config(None, [*RUN, f"cluster.address={cluster.address}", *overrides])
    run_dir = prepare_run_dir(tmp_path, run_id)
    driver = SweepDriver(config, run_dir, run_id, hooks=Hooks(on_cell_start=hook))
    return driver, run_dir


def ids(nodes) -> set[str]:
    return {n.node_id for n in nodes}


def test_search_actors_spread_load_actors_kept_off_their_nodes_and_every_row_names_both_nodes(cluster, tmp_path):
    driver, run_dir = run(cluster, tmp_path, "separate", "load.actors=2")
    assert driver.run() == 0
    doc = manifest(run_dir)
    nodes = {n["node_id"]: n for n in doc["nodes"]}
    assert set(nodes) == ids(cluster.gpu_nodes) | ids(cluster.load_nodes) | {cluster.head_node.node_id}
    assert nodes[cluster.head_node.node_id]["head"] and nodes[cluster.head_node.node_id]["cpus"] == 0
    for node in cluster.load_nodes:
        facts = nodes[node.node_id]
        assert facts["cpus"] == 2 and facts["gpus"] == 0 and facts["resources"]["loadgen"] == 2 and facts["ip"]
    search = [a["node_id"] for a in doc["gpus"]["actors"]]
    assert sorted(search) == sorted(ids(cluster.gpu_nodes))  # one per GPU node: spread
    load = {a["actor"]: a["node_id"] for a in doc["load_actors"]}
    assert sorted(load.values()) == sorted(ids(cluster.load_nodes))  # off the search nodes, one per node
    for a in doc["load_actors"]:
        assert a["hostname"] and a["pid"] > 0 and abs(a["offset_ns"]) <= a["bound_ns"] < 50e6  # one host's clock
    assert doc["cells"][0]["placement"] == {"load": [load[0], load[1]], "search": search}
    assert {s["actor"]: s["node_id"] for s in doc["cells"][0]["actor_stats"]} == load
    rows = read_cell(run_dir, 0)
    assert rows.num_rows == 400 and rows["load_node"].null_count == 0 and rows["search_node"].null_count == 0
    sent_by = pc.cast(rows["load_node"], "string").to_numpy(zero_copy_only=False)
    served_by = pc.cast(rows["search_node"], "string").to_numpy(zero_copy_only=False)
    assert (sent_by == np.array([load[a] for a in rows["actor"].to_numpy()])).all()
    assert (served_by == np.array(search)[rows["endpoint"].to_numpy()]).all()
    from perfray.analysis.report import write_report

    section = write_report(run_dir)[0].read_text().split("## Nodes", 1)[1].split("\n## ")[0]
    row = {line.split(" ")[1]: line.split(" | ")[1:] for line in section.splitlines() if line.startswith("| ")}
    for i, node in enumerate(search):  # where every actor ran: a row per node (IP, CPUs, GPUs, search, load, lost)
        assert row[node[:8]] == [nodes[node]["ip"], "1", "1", str(i), "–", " |"]
    for i, node in load.items():
        assert row[node[:8]] == [nodes[node]["ip"], "2", "0", "–", str(i), " |"]


@pytest.mark.parametrize("how, actors, expect", [
    ("cluster.load_placement=spread", 4, "four"),  # every node with CPUs, one each
    ("cluster.load_placement=colocate", 2, "gpu"),  # beside the search actors
    ("cluster.load_resources={loadgen: 1}", 3, "loadgen"),  # only the nodes that declare the resource
])
def test_load_placement_is_honoured(cluster, tmp_path, how, actors, expect):
    driver, run_dir = run(cluster, tmp_path, expect, how, f"load.actors={actors}", "duration_s=1")
    assert driver.run() == 0
    placed = [a["node_id"] for a in manifest(run_dir)["load_actors"]]
    assert len(placed) == actors
    if expect == "four":
        assert sorted(placed) == sorted(ids(cluster.gpu_nodes) | ids(cluster.load_nodes))
    elif expect == "gpu":
        assert sorted(placed) == sorted(ids(cluster.gpu_nodes))
    else:
        assert set(placed) == ids(cluster.load_nodes)  # 2 + 1: spread over both, never all on one


def test_a_placement_the_cluster_cannot_meet_is_one_line_and_exit_3_within_its_bound(cluster, tmp_path):
    at = f"cluster.address={cluster.address}"
    started = time.monotonic()
    out = sweep_cli("--results-dir", str(tmp_path), "--run-id", "nowhere", "--config", "configs/smoke.yaml",
                    *[a for s in ["sweep={}", "search.n_gpus=2", "cluster.gpu_actor_cpus=4", at,
                                  "cluster.placement_timeout_s=3"] for a in ("--set", s)])
    assert out.returncode == 3, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].startswith("perfray: error: 2 GPU search actors")
    assert "cluster.placement_timeout_s (3 s)" in out.stderr and time.monotonic() - started < 60
    assert not (tmp_path / "nowhere").exists()
    out = sweep_cli("--results-dir", str(tmp_path), "--run-id", "noload", *[
        a for s in ["sweep={}", "search.n_gpus=1", "cluster.load_resources={nosuch: 1}", at] for a in ("--set", s)])
    assert out.returncode == 3 and "no node of the cluster can host a load actor (0.5 CPU, 1 nosuch)" in out.stderr
    assert not (tmp_path / "noload").exists()


def test_the_per_node_table_finds_a_node_made_slow_and_calls_equal_nodes_no_different(cluster, tmp_path):
    import ray

    def slow_first_cell(cell, loaders, gpu_handles):  # the same search actors serve both cells
        ray.get(gpu_handles[0].add_service_time.remote(10.0 if cell == 0 else 0.0))

    driver, run_dir = run(cluster, tmp_path, "slow", "load.actors=2", "duration_s=5", "sweep={target_qps: [400, 401]}",
                          "targets=[{metric: slow_nodes, max: 0}]", hook=slow_first_cell)
    assert driver.run() == 1  # the slow node of cell 0 fails the target; cell 1's equal nodes pass it
    doc = manifest(run_dir)
    search = doc["cells"][0]["placement"]["search"]
    calls = {c["cell"]: {(r["role"], r["node_id"]): r["verdict"] for r in c["nodes"]} for c in doc["cells"]}
    assert calls[0][("search", search[0])] == "slower" and calls[0][("search", search[1])] == "faster"
    assert calls[1][("search", search[0])] == calls[1][("search", search[1])] == "no difference", doc["cells"][1]["nodes"]
    assert [(v["cell"], v["passed"]) for v in doc["verdicts"]] == [(0, False), (1, True)]
    busy = {r["node_id"]: r["busy"] for r in doc["cells"][0]["nodes"] if r["role"] == "search"}
    assert busy[search[0]] > 2 * busy[search[1]]  # the time it spent searching, from its own counters
    from perfray.analysis.report import write_report

    section = write_report(run_dir)[0].read_text().split("## Nodes", 1)[1].split("\n## ")[0]
    assert f"| 0 | search | {search[0][:8]} (" in section and "| slower |" in section and "| no difference |" in section


def test_sixteen_load_actors_on_four_nodes_deliver_every_scheduled_request_once(cluster, tmp_path):
    driver, run_dir = run(cluster, tmp_path, "sixteen", "load.actors=16", "cluster.load_placement=spread",
                          "cluster.load_actor_cpus=0.25", "target_qps=800", "duration_s=3")
    assert driver.run() == 0
    doc = manifest(run_dir)
    placed = [a["node_id"] for a in doc["load_actors"]]
    assert len(placed) == 16 and sorted(set(placed)) == sorted(ids(cluster.gpu_nodes) | ids(cluster.load_nodes))
    assert max(placed.count(n) for n in set(placed)) == 4  # spread: 4 on each of the 4 nodes with CPUs
    rows = read_cell(run_dir, 0)
    seq = rows["seq"].to_numpy()
    assert rows.num_rows == 2400 and np.array_equal(np.sort(seq), np.arange(2400))  # 800 QPS x 3 s, each once
    per_actor = np.bincount(rows["actor"].to_numpy(), minlength=16)
    assert (per_actor == 150).all() and doc["cells"][0]["timings"]["drains"] >= 3  # gathered as they came (1 s)
    assert (pc.cast(rows["status"], "string").to_numpy(zero_copy_only=False) == "ok").mean() > 0.99


def test_ray_job_submit_runs_the_smoke_config_across_the_nodes(cluster, tmp_path):
    results = tmp_path / "results"
    cmd = [ray_cli(), "job", "submit", "--address", f"http://{cluster.head_node.address_info['webui_url']}",
           "--working-dir", ".", "--", "python", "-m", "perfray.sweep", "--config", "configs/smoke.yaml",
           "--results-dir", str(results), "--run-id", "job", "--quiet", "--set", "duration_s=1", "--set", "warmup_s=0.5",
           "--set", "targets=[{metric: recall_mean, min: 0.999}]", "--set", "cluster.load_resources={loadgen: 1}"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert out.returncode == 0 and "succeeded" in out.stdout + out.stderr, (out.stdout + out.stderr)[-3000:]
    doc = manifest(results / "job")
    assert doc["status"] == "complete" and doc["ray"]["embedded"] is False and len(doc["cells"]) == 4
    assert {a["node_id"] for a in doc["load_actors"]} <= ids(cluster.load_nodes)  # the dedicated load group
    assert {a["node_id"] for a in doc["gpus"]["actors"]} <= ids(cluster.gpu_nodes)
    assert all(c["placement"]["search"] and set(c["placement"]["load"]) <= ids(cluster.load_nodes) for c in doc["cells"])


def test_calibrate_cluster_measures_on_the_load_node_type_and_auto_sizes_from_it(cluster, tmp_path, monkeypatch):
    """``calibrate --cluster`` measures on a load node (not the driver's host), cached per node type; a sweep with
    ``load.actors: auto`` then sizes from that type's ceiling, and without one names the command that measures it."""
    from perfray.load import calibration

    monkeypatch.setenv("PERFRAY_CACHE_DIR", str(tmp_path / "cache"))
    driver, run_dir = run(cluster, tmp_path, "uncalibrated", "load.actors=auto")
    with pytest.raises(Exception, match="calibrate --cluster --paths gpu"):
        driver.run()
    assert manifest(run_dir)["status"] == "not_started"
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    out = subprocess.run(["python", "-m", "perfray", "calibrate", "--cluster", "--paths", "async", "--step-s", "0.3",
                          "--quiet-s", "0"], capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
    assert out.returncode == 0, (out.stdout + out.stderr)[-2000:]
    types = calibration.cluster_cached()
    assert len(types) == 1, types  # the two load nodes are one type; the GPU nodes host no load actors (separate)
    (name, entry), = types.items()
    assert name.endswith(" x2") and entry["node"]["node_id"] in ids(cluster.load_nodes)
    assert entry["node"]["nodes_of_type"] == 2 and entry["paths"]["async"]["ceiling_qps"] > 0
    assert name in out.stdout and not calibration.cache_file().exists()  # this host's own cache is untouched
    calibration.save_node_type(name, entry["node"], {"gpu": {"ceiling_qps": 300.0}})  # a low ceiling, on purpose
    driver, run_dir = run(cluster, tmp_path, "auto", "load.actors=auto", "target_qps=400")
    assert driver.run() == 0
    doc = manifest(run_dir)
    # 400 QPS at most half of a 300 req/s ceiling per actor: 3 actors (the load nodes hold 8)
    assert doc["cells"][0]["workload"]["load"]["actors"] == 3 and len(doc["load_actors"]) == 3
    assert doc["calibration"]["node_types"] == [name] and doc["calibration"]["ceilings_qps"]["gpu"] == 300.0
    assert {a["node_id"] for a in doc["load_actors"]} <= ids(cluster.load_nodes)


def remove_later(cluster, role: str, index: int, after_s: float, fired: dict):
    """A hook: ``after_s`` into cell 0, remove (ungracefully) the node running actor ``index`` of ``role``."""
    import ray

    def hook(cell, loaders, gpu_handles):
        if cell != 0:
            return
        handle = loaders[index] if role == "load" else gpu_handles[index]
        node_id = ray.get(handle.where.remote())["node_id"]
        node = next(n for n in cluster.worker_nodes if n.node_id == node_id)

        def fire():
            cluster.remove_node(node, allow_graceful=False)
            fired.update(node_id=node_id, at_ns=time.time_ns())

        threading.Timer(after_s, fire).start()

    return hook


def test_a_lost_load_node_is_an_event_its_share_lost_rows_and_stop_ends_the_run(cluster, tmp_path):
    fired = {}
    driver, run_dir = run(cluster, tmp_path, "lose-load", "load.actors=2", "duration_s=3", "sweep={target_qps: [200, 100]}",
                          "cluster.on_node_loss=stop", hook=remove_later(cluster, "load", 1, 1.5, fired))
    with pytest.raises(NodeLost):
        driver.run()
    doc = manifest(run_dir)
    assert doc["status"] == "stopped" and [c["status"] for c in doc["cells"]] == ["degraded", "pending"]
    [event] = doc["events"]
    assert event["event"] == "node_lost" and event["node_id"] == fired["node_id"] and event["cell"] == 0
    assert event["load_actors"] == [1] and event["search_actors"] == []
    assert 0 <= event["at_unix_ns"] - fired["at_ns"] < 3e9 and event["at_unix_ns"] <= event["detected_unix_ns"]
    assert [(f["role"], f["actor"], f["node_id"]) for f in doc["failures"]] == [("load", 1, fired["node_id"])]
    rows = read_cell(run_dir, 0)
    assert rows.num_rows == 600 and np.unique(rows["seq"].to_numpy()).size == 600  # 200 QPS x 3 s, each once
    status = pc.cast(rows["status"], "string").to_numpy(zero_copy_only=False)
    lost = rows.filter(pc.equal(pc.cast(rows["status"], "string"), "lost"))
    assert (status == "lost").sum() == doc["cells"][0]["lost_rows"] > 0 and set(lost["actor"].to_pylist()) == {1}
    assert set(pc.cast(lost["load_node"], "string").to_pylist()) == {fired["node_id"]}
    assert [n.get("lost_unix_ns") is not None for n in doc["nodes"] if n["node_id"] == fired["node_id"]] == [True]
    assert [(v["metric"], v["passed"]) for v in doc["verdicts"]] == [("failure_rate", False), ("lost_rate", False)]
    from perfray.analysis.figures import node_losses
    from perfray.analysis.report import write_report

    report = write_report(run_dir)[0].read_text()
    assert "**Not finished.** The run is stopped" in report and f"{fired['node_id'][:8]} (" in report
    assert "lost** in cell 0" in report and f"{doc['cells'][0]['lost_rows']:,} requests lost" in report
    assert f"load actor 1 in cell 0 (ActorDiedError, node {fired['node_id'][:8]})" in report
    t0 = int(rows["intended_ns"].to_numpy().min())  # the over-time figure marks the loss
    assert node_losses(doc, 0, t0) == [pytest.approx((event["at_unix_ns"] - t0) / 1e9)]


def test_a_lost_search_node_moves_traffic_to_the_survivor_and_the_next_cell_runs_on_what_is_left(cluster, tmp_path):
    fired = {}
    driver, run_dir = run(cluster, tmp_path, "lose-gpu", "load.actors=1", "duration_s=5", "sweep={target_qps: [200, 100]}",
                          "targets=[{metric: failure_rate, max: 0.1}, {metric: p99_ms, max: 1000}]",
                          hook=remove_later(cluster, "gpu", 0, 1.5, fired))
    assert driver.run() == 0  # requests in flight on the lost node failed; the rest were answered
    doc = manifest(run_dir)
    assert doc["status"] == "complete" and [c["status"] for c in doc["cells"]] == ["degraded", "complete"]
    [event] = doc["events"]
    assert event["node_id"] == fired["node_id"] and event["search_actors"] == [0] and event["load_actors"] == []
    # the search actor's death as its owner learnt it (~1.5 s after its raylet here), before the GCS's verdict
    assert 0 <= event["at_unix_ns"] - fired["at_ns"] < 3e9 and event["at_unix_ns"] <= event["detected_unix_ns"]
    rows = read_cell(run_dir, 0)
    status = pc.cast(rows["status"], "string").to_numpy(zero_copy_only=False)
    assert rows.num_rows == 1000 and 0 < (status == "error").sum() < 100 and (status == "lost").sum() == 0
    failed = rows.filter(pc.equal(rows["status"], "error"))  # each failed request names the node that failed it
    assert set(pc.cast(failed["search_node"], "string").to_pylist()) == {fired["node_id"]}
    late = rows.filter(pc.greater(rows["intended_ns"], event["at_unix_ns"] + int(1e9)))
    assert set(pc.cast(late["search_node"], "string").to_pylist()) == {doc["cells"][0]["placement"]["search"][1]}
    assert 0 <= event["recovery_s"] < 4
    summary = {r["cell"]: r for r in driver.summary}
    assert summary[0]["recovery_s"] == event["recovery_s"] and summary[0]["n_gpus"] == 2
    assert summary[1]["n_gpus"] == 1 and doc["cells"][1]["placement"]["search"] == [
        n.node_id for n in cluster.gpu_nodes if n.node_id != fired["node_id"]]

