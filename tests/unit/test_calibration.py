"""The ceiling search and the per-host cache behind ``perfray calibrate``."""

import json
import time

import pytest

from perfray.load import calibration
from perfray.load.calibration import Step, actors_for, client_path, search


def _fake(ceiling, flaky_at=()):
    seen = []

    def measure(qps):
        seen.append(qps)
        noisy = qps in flaky_at and seen.count(qps) == 1  # misses once, holds when measured again
        return Step(qps, qps <= ceiling and not noisy, qps, 0.5, 30.0)
    return measure, seen


def test_search_grows_then_bisects_to_the_highest_held_rate():
    measure, seen = _fake(11_000)
    best, steps = search(measure, start_qps=2000, growth=2.0, bisections=4)
    assert seen[:4] == [2000, 4000, 8000, 16_000] and 16_000 in seen
    assert 10_000 <= best <= 11_000 and all(s.held == (s.qps <= 11_000) for s in steps)


def test_a_step_that_misses_once_is_measured_again_before_it_counts():
    measure, seen = _fake(11_000, flaky_at=(4000,))
    best, _ = search(measure, start_qps=2000, growth=2.0, bisections=4)
    assert seen.count(4000) == 2 and best >= 10_000
    measure, _ = _fake(1000)
    assert search(measure, start_qps=2000)[0] < 2000  # below the first step: found by bisection


def test_actors_for_keeps_each_load_actor_under_half_its_ceiling():
    assert actors_for(7000, 10_000, most=16) == 2
    assert actors_for(100, 10_000, most=16) == 1
    assert actors_for(1_000_000, 10_000, most=16) == 16  # capped by what the cluster has


def test_client_path_follows_the_system_flags():
    from perfray.sut import SYSTEMS

    assert client_path(SYSTEMS.load("http")) == "callback"
    assert client_path(SYSTEMS.load("postgres")) == "async"
    assert client_path(SYSTEMS.load("hybrid")) == "threads"
    assert client_path(SYSTEMS.load("gpu_search")) == "gpu"


def test_cache_is_per_host_and_perfray_version(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFRAY_CACHE_DIR", str(tmp_path))
    assert calibration.cached() is None
    calibration.save({"async": {"ceiling_qps": 30_000.0}})
    calibration.save({"callback": {"ceiling_qps": 20_000.0}})
    doc = calibration.cached()
    assert calibration.ceiling_of(doc, "async") == 30_000 and calibration.ceiling_of(doc, "callback") == 20_000
    assert calibration.ceiling_of(doc, "threads") is None
    stale = json.loads(calibration.cache_file().read_text())
    stale["key"]["perfray"] = "0.0.0"
    calibration.cache_file().write_text(json.dumps(stale))
    assert calibration.cached() is None  # measured by another perfray: measure again


@pytest.mark.timeout(120)
def test_calibrate_measures_a_real_path_and_caches_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFRAY_CACHE_DIR", str(tmp_path))
    seen = []
    doc = calibration.calibrate(("async",), step_s=0.3, report=lambda path, result: seen.append(path))
    result = doc["paths"]["async"]
    assert seen == ["async"] and result["ceiling_qps"] >= 1000 and result["cpu_us_per_request"] > 0
    held = [s for s in result["steps"] if s["held"]]
    assert held and max(s["qps"] for s in held) == result["ceiling_qps"] and result["host"]["waited_s"] > 0
    assert calibration.cached() == doc


@pytest.mark.timeout(60)
def test_calibration_waits_for_a_busy_host_to_settle():
    import subprocess
    import sys

    spin = "import time\nend = time.time() + 2.5\nwhile time.time() < end: pass"
    busy = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)  # the spinner is running
        started = time.monotonic()
        host = calibration.wait_for_quiet(max_s=20)
        waited = time.monotonic() - started
    finally:
        busy.kill()
    assert host["quiet"] and 1.5 < waited < 15 and host["waited_s"] >= 1.5, host
    assert calibration.wait_for_quiet(max_s=0)["waited_s"] < 1.0  # bounded by max_s


def test_calibrate_command_prints_ceilings_and_rejects_unknown_paths(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PERFRAY_CACHE_DIR": str(tmp_path)}
    bad = subprocess.run([sys.executable, "-m", "perfray", "calibrate", "--paths", "async,quantum"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "perfray: error: --paths: expected some of callback, async, threads, gpu, got 'async,quantum'"]
    for option, value, expected in (("--step-s", "nan", "a positive number of seconds"), ("--quiet-s", "nan",
                                                                                       "seconds >= 0")):
        bad = subprocess.run([sys.executable, "-m", "perfray", "calibrate", "--paths", "async", option, value],
                             capture_output=True, text=True, env=env, timeout=60)  # NaN was an internal error
        assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
            f"perfray: error: {option}: expected {expected}, got nan"], bad.stderr[-1500:]
    out = subprocess.run([sys.executable, "-m", "perfray", "calibrate", "--paths", "threads", "--step-s", "0.3"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("threads")][0]
    assert float(line.split()[1].replace(",", "")) > 0 and str(tmp_path) in out.stdout
    assert json.loads(next(tmp_path.glob("calibration-*.json")).read_text())["paths"]["threads"]["ceiling_qps"] > 0


def _node(node_id, cpus, gpus=0.0, **resources):
    return {"node_id": node_id, "cpus": cpus, "gpus": gpus, "resources": {"CPU": cpus, "GPU": gpus, **resources}}


def test_load_nodes_follow_the_placement_the_sweep_will_use():
    from perfray.cluster.load_types import load_nodes
    from perfray.cluster.placement import PlacementError
    from perfray.cluster_config import ClusterSpec

    nodes = [_node("head", 0), _node("gpu1", 4, 1), _node("gpu2", 4, 1), _node("cpu1", 16, loadgen=1),
             _node("cpu2", 8)]
    pick = lambda **kw: [n["node_id"] for n in load_nodes(nodes, ClusterSpec(**kw))]  # noqa: E731
    assert pick() == ["cpu1", "cpu2"]  # separate: off the GPU nodes; the head has no CPU
    assert pick(load_placement="colocate") == ["gpu1", "gpu2"]
    assert pick(load_placement="spread") == ["gpu1", "gpu2", "cpu1", "cpu2"]
    assert pick(load_resources={"loadgen": 1}) == ["cpu1"]
    assert pick(load_placement="colocate", load_resources={"loadgen": 1}) == ["cpu1"]  # no GPU node qualifies
    with pytest.raises(PlacementError, match="load_resources"):
        pick(load_resources={"nowhere": 1})


def test_auto_on_a_cluster_sizes_from_the_load_nodes_ceiling_or_names_the_command(monkeypatch):
    from perfray.config import Workload
    from perfray.errors import UsageError

    cell = Workload.model_validate({"system": "http", "load": {"actors": "auto", "target_qps": 9000}})
    where = {"node_types": ["Xeon x16"], "paths": {"callback": {"ceiling_qps": 2000.0, "node_type": "Xeon x16"}},
             "measured_unix_s": 1.0}
    monkeypatch.setattr(calibration, "cached", lambda: pytest.fail("this host's cache is not the cluster's"))
    sized, doc = calibration.size_load_actors([cell], most=6, where=where)
    assert sized[0].load.actors == 6  # 9 wanted (9000 / (0.5 * 2000)), capped by what the load nodes hold
    assert doc["node_types"] == ["Xeon x16"] and doc["ceilings_qps"] == {"callback": 2000.0}
    with pytest.raises(UsageError, match="calibrate --cluster --paths callback"):
        calibration.size_load_actors([cell], most=6, where={**where, "paths": {}})
