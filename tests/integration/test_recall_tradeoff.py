"""pgvector's HNSW swept over ``search.params.ef`` on a real server, through Ray: each cell's session really runs
at its ``ef`` (recall follows it), the index's build time and size are reported, the report draws the recall
trade-off with its operating points, and a system without the parameter is compared with pgvector at matched
recall."""

import json

import pyarrow.parquet as pq
import pytest

from perfray.analysis.report import write_report
from perfray.config import load_config
from perfray.driver import SweepDriver
from perfray.results.writer import prepare_run_dir


@pytest.mark.timeout(600)
def test_a_sweep_over_ef_draws_the_recall_trade_off_and_reads_speedups_at_matched_recall(stores_spec, tmp_path):
    pgv = stores_spec.pgvector
    config = load_config(None, [
        "sweep={system: [instant, pgvector], search.params.ef: [1, 4, 200]}", "baseline_system=pgvector",
        "dataset.n=3000", "dataset.dim=16", "dataset.n_queries=200", "dataset.seed=23", "target_qps=100",
        "duration_s=1.0", "warmup_s=0.2", "microbench.enabled=false", "targets=[]",
        f"stores.pgvector.port={pgv.port}", f"stores.pgvector.user={pgv.user}", "stores.pgvector.index=hnsw",
        "stores.pgvector.index_params={m: 8, ef_construction: 32}"])
    run_dir = prepare_run_dir(tmp_path, "tradeoff")
    assert SweepDriver(config, run_dir, "tradeoff").run() == 0
    summary = pq.read_table(run_dir / "summary.parquet").to_pylist()
    assert [(r["system_name"], r["search_params"]) for r in summary] == [
        ("instant", ""), ("pgvector", "ef=1"), ("pgvector", "ef=4"), ("pgvector", "ef=200")]
    recall = {r["search_params"]: r["recall_mean"] for r in summary[1:]}
    # hnsw.ef_search bounds how many rows an index scan returns: the session really ran at each ef (recall is
    # kept as float32: 4 of 10 for every query averages to 0.40000001)
    eps = 1e-6
    assert recall["ef=1"] <= 0.1 + eps < recall["ef=4"] <= 0.4 + eps < 0.9 <= recall["ef=200"]

    instant = summary[0]  # recall 1.0: compared with pgvector at the ef that comes closest
    assert instant["recall_mean"] == 1.0 and instant["baseline_search_params"] == "ef=200"
    assert instant["baseline_recall"] == recall["ef=200"]
    assert instant["recall_matched"] is (1.0 - recall["ef=200"] <= 0.01 + 1e-9)

    manifest = json.loads((run_dir / "manifest.json").read_text())
    load = next(e["system"]["load"] for e in manifest["cells"] if (e.get("system") or {}).get("load"))
    assert load["index"] == "hnsw" and load["build_s"] > 0 and load["index_bytes"] > 8192

    report = write_report(run_dir)[0].read_text()
    section = report.split("## Recall and what it cost", 1)[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ef=")]
    assert [r.split(" | ")[0] for r in rows] == ["| ef=1", "| ef=4", "| ef=200"]
    assert "recall ≥ 0.90" in rows[2] and "✓" in rows[2]  # the only setting that reaches 0.90, on the front
    assert (run_dir / "recall_tradeoff.png").stat().st_size > 10_000
    assert "## Index build" in report and "| hnsw | 3,000 |" in report
    assert "at ef=200" in report.split("## Systems and stages", 1)[1]  # recall beside the speedup
