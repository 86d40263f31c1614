"""The main job end to end on embedded Ray: python -m perfray.sweep, as a user runs it."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from support import manifest, sweep_cli

from perfray import SCHEMA_VERSION

ROBUST_TARGETS = "targets=[{metric: recall_mean, min: 0.999}, {metric: drop_rate, max: 0.05}]"


def test_default_sweep_writes_rows_manifest_summary_and_microbench(tmp_path):
    out = sweep_cli("--results-dir", str(tmp_path), "--run-id", "smoke1", "--set", "duration_s=1.5",
                    "--set", "warmup_s=0.5", "--set", ROBUST_TARGETS)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "smoke1"
    doc = manifest(run)
    assert doc["status"] == "complete" and doc["schema_version"] == SCHEMA_VERSION
    assert doc["ray"]["embedded"] is True and doc["ray"]["resources"]["GPU"] >= 2
    assert doc["ray"]["observers"]["nice"] == 10 and doc["ray"]["observers"]["pids"]  # the dashboard agent at least
    assert doc["gpus"]["simulated"] is True and doc["gpus"]["logical"] is True
    assert doc["gpus"]["models"] == {"cpu (numpy)": 2}
    # the system under test at normal priority, not Ray's worker nice 15 (raising it needs root, as in CI)
    assert {g["nice"] for g in doc["gpus"]["actors"]} == {0 if os.geteuid() == 0 else 15}
    assert {"ray", "numpy", "pyarrow", "python"} <= set(doc["versions"])
    assert "git_commit" in doc and doc["config"]["name"] == "smoke"
    assert [c["status"] for c in doc["cells"]] == ["complete"] * 4

    rows = pq.read_table(run / "requests")
    assert rows.schema.metadata[b"perfray.schema_version"] == str(SCHEMA_VERSION).encode()
    summary = pq.read_table(run / "summary.parquet").to_pylist()
    assert [s["cell"] for s in summary] == [0, 1, 2, 3]
    for s in summary:
        cell_rows = rows.filter(pc.equal(rows["cell"], s["cell"]))
        expected = s["target_qps"] * 2.0  # warm-up + sustained, Poisson
        assert abs(cell_rows.num_rows - expected) < 5 * np.sqrt(expected)
        seq = cell_rows["seq"].to_numpy()
        assert np.array_equal(np.sort(seq), np.arange(seq.size))  # each scheduled request once
        assert s["simulated"] is True and s["recall_mean"] == 1.0
        assert s["p50_ms"] <= s["p99_ms"] <= s["max_ms"]
        assert s["requests"] == s["ok"] + s["error"] + s["timeout"] + s["dropped"]
        assert 0 < s["gpu_busy_mean"] <= 1 and np.isnan(s["gpu_util_mean"])  # simulated: no NVML
        assert len(doc["cells"][s["cell"]]["gpu_usage"]) == s["n_gpus"]
    assert {s["n_gpus"] for s in summary} == {1, 2}
    # each gpu_search request's service time split: the actor's queue, its search, and the Ray call around them
    ok = pc.equal(pc.cast(rows["status"], "string"), "ok")
    service, queue, search = (rows.filter(ok)[c].to_numpy(zero_copy_only=False) for c in
                              ("service_ns", "queue_ns", "vector_ns"))
    assert not np.isnan(queue).any() and not np.isnan(search).any() and (search > 0).all()
    assert (service - queue - search >= 0).all()  # the actor's part lies inside the call that carried it
    assert all(0 < s["vector_p50_ms"] and 0 < s["transport_p50_ms"] for s in summary)
    # every cell served what it was offered: throughput is the offered load's, so no efficiency is claimed
    assert all(s["scaling_basis"] == "offered" and np.isnan(s["scaling_efficiency"]) for s in summary)
    assert doc["rows_written"] == rows.num_rows
    # what perfray's own processes took on this host: the load actors worked, and the search actors (the system
    # under test on this path) shared the host with them, which the report says
    for entry, s in zip(doc["cells"], summary, strict=True):
        cpu = entry["host_cpu"]
        assert cpu["load_cores"] > 0 and cpu["search_cores"] > 0 and cpu["harness_cores"] == s["harness_cores"]
        assert entry["sut_colocation"]["shares_host"] is True and s["sut_shares_host"] is True
    report = (run / "report.md").read_text()
    assert "**The system under test shared a host with perfray's load generation** in 4 of 4 cells" in report
    assert "GPU search busy" in report and "## Where a GPU search request's time goes" in report
    # the on-paper T4 figures come from measured costs: never above 1 / (the host-side work measured per query),
    # and no 100-GPU figure without a fitted efficiency (these cells were bounded by the offered load)
    terms = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in report.splitlines()
             if line.startswith("| ") and ("NVIDIA T4" in line or "overhead per query" in line)}
    overhead_us = float(terms["overhead per query (host side)"].split()[0].replace(",", ""))
    t4_qps = float(terms["NVIDIA T4 service rate per GPU"].split()[0].replace(",", ""))
    assert 0 < t4_qps <= 1e6 / overhead_us and terms["100 × NVIDIA T4"] == "cannot estimate"
    assert "Simulated GPUs" in report and "## Targets" in report and "| 3 | recall_mean | >= 0.999 | 1 | ✓" in report
    for figure in ("latency_histogram", "latency_percentiles", "over_time", "latency_by_operation",
                   "schedule_lag", "scaling"):
        assert (run / f"{figure}.png").stat().st_size > 5000 and f"({figure}.png)" in report
    again = subprocess.run([sys.executable, "-m", "perfray", "report", str(run)], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and "✓ cell   3 drop_rate" in again.stdout
    micro = pq.read_table(run / "microbench.parquet").to_pylist()
    assert {(m["batch"], m["k"]) for m in micro} == {(1, 10), (16, 10), (128, 10)}
    assert all(m["batch_ns"] > 0 and m["simulated"] for m in micro)


def test_failed_must_pass_target_exits_1(tmp_path):
    out = sweep_cli("--results-dir", str(tmp_path), "--run-id", "fail", "--set", "sweep={}",
                    "--set", "duration_s=1", "--set", "warmup_s=0",
                    "--set", "targets=[{metric: p50_ms, max: 0.0001}, {metric: recall_mean, min: 0.5}]")
    assert out.returncode == 1, out.stderr[-2000:]
    doc = manifest(tmp_path / "fail")
    assert doc["status"] == "complete"
    assert [(v["metric"], v["passed"]) for v in doc["verdicts"]] == [("p50_ms", False), ("recall_mean", True)]
    report = subprocess.run([sys.executable, "-m", "perfray", "report", str(tmp_path / "fail")],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 1 and "✗ cell   0 p50_ms" in report.stdout


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_unavailable_backend_exits_3_with_one_line_and_a_manifest(tmp_path):
    out = sweep_cli("--results-dir", str(tmp_path), "--run-id", "nocupy", "--set", "sweep={}",
                    "--set", "search.backend=cupy")
    assert out.returncode == 3, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("perfray: error: backend 'cupy' is not available") and "Traceback" not in out.stderr
    doc = manifest(tmp_path / "nocupy")
    assert doc["status"] == "not_started" and "cupy" in doc["error"]  # nothing measured, and it says so
    assert not any((tmp_path / "nocupy" / "requests").iterdir())


def test_unreachable_cluster_exits_3_fast(tmp_path):
    out = sweep_cli("--results-dir", str(tmp_path), "--run-id", "nocluster", "--set", "cluster.address=127.0.0.1:1",
                    timeout=60)
    assert out.returncode == 3
    assert out.stderr.strip().splitlines()[-1].startswith("perfray: error: no Ray cluster answers at 127.0.0.1:1")
    assert manifest(tmp_path / "nocluster")["status"] == "not_started"


def test_hdf5_dataset_sharded_faiss_sweep_is_exact(tmp_path):
    h5py = pytest.importorskip("h5py")
    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    path = tmp_path / "tiny-euclidean.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = "euclidean"
        f["train"] = rng.standard_normal((3000, 24)).astype(np.float32)
        f["test"] = rng.standard_normal((200, 24)).astype(np.float32)
    out = sweep_cli("--results-dir", str(tmp_path), "--run-id", "h5", "--set", "sweep={}",
                    "--set", f"dataset={{kind: file, path: {path}}}", "--set", "search.topology=sharded",
                    "--set", "search.n_gpus=3", "--set", "search.backend=faiss", "--set", "op_mix=mixed",
                    "--set", "duration_s=1", "--set", "warmup_s=0.3", "--set", "target_qps=200",
                    "--set", "microbench.enabled=false", "--set", "targets=[{metric: recall_min, min: 1.0}]")
    assert out.returncode == 0, out.stderr[-2000:]
    doc = manifest(tmp_path / "h5")
    assert [a["backend"] for a in doc["gpus"]["actors"]] == ["faiss"] * 3
    assert sorted(a["rows"] for a in doc["gpus"]["actors"]) == [1000, 1000, 1000]
    rows = pq.read_table(tmp_path / "h5" / "requests").to_pandas()
    assert set(rows["endpoint"]) == {-1}  # every batch went to all shards
    assert set(rows["op"].astype(str)) == {"knn_k10_q1", "knn_k50_q1", "knn_k10_q8"}
    assert rows.loc[rows["status"] == "ok", "recall"].min() == 1.0


def test_phases_are_summarized_one_by_one_and_reported(tmp_path):
    phases = ("load.phases=[{name: warmup, duration_s: 0.5, measured: false}, {name: steady, duration_s: 1.5},"
              " {name: burst, duration_s: 1.0, qps: 1500}, {name: recovery, duration_s: 1.5}]")
    out = sweep_cli("--results-dir", str(tmp_path), "--run-id", "ph", "--set", "sweep={}", "--set", phases,
                    "--set", "target_qps=300", "--set", "arrival=constant", "--set", "microbench.enabled=false",
                    "--set", "targets=[{metric: recall_mean, min: 0.999}]")
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {r["phase"]: r for r in pq.read_table(tmp_path / "ph" / "phases.parquet").to_pylist()}
    assert set(rows) == {"warmup", "steady", "burst", "recovery"} and rows["warmup"]["measured"] is False
    assert [rows[p]["requests"] for p in ("warmup", "steady", "burst", "recovery")] == [150, 450, 1500, 450]
    assert rows["burst"]["target_qps"] == 1500 and rows["burst"]["offered_qps"] == pytest.approx(1500)
    (cell,) = pq.read_table(tmp_path / "ph" / "summary.parquet").to_pylist()
    assert cell["requests"] == 450 + 1500 + 450  # every measured phase, not the warm-up
    report = (tmp_path / "ph" / "report.md").read_text()
    assert "## Phases" in report and "| 0 | burst | yes | 1,500 |" in report
