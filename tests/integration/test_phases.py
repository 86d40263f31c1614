"""The test plan's phases, run as a user runs them (CLI, embedded Ray) against the real servers, scaled down."""

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from support import manifest, sweep_cli

SMALL = ["--set", "dataset.n=3000", "--set", "dataset.dim=16", "--set", "dataset.clusters=16",
         "--set", "dataset.n_queries=40", "--set", "load.duration_s=3", "--set", "load.warmup_s=1",
         "--set", "load.target_qps=40", "--set", "load.actors=1", "--set", "load.concurrency=4",
         "--set", "search.n_gpus=1", "--set", "microbench.enabled=false"]


def _run(tmp_path, config, run_id, store_args, *extra):
    out = sweep_cli("--config", f"configs/phases/{config}", "--results-dir", str(tmp_path), "--run-id", run_id,
                    *SMALL, *store_args, *extra, timeout=400)
    return out, tmp_path / run_id


def test_phase2_vector_then_graph(tmp_path, store_args):
    out, run = _run(tmp_path, "2-hybrid-vector-graph.yaml", "p2", store_args, "--set", "hybrid.hops=2",
                    "--set", "targets=[{metric: recall_mean, min: 0.999}, {metric: error_rate, max: 0.01}]", "--set", "slo=[]")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = pq.read_table(run / "requests")
    assert rows.num_rows > 100 and pc.all(pc.equal(pc.cast(rows["status"], "string"), "ok")).as_py()
    for stage in ("vector_ns", "graph_ns"):
        assert rows[stage].null_count == 0 and pc.min(rows[stage]).as_py() > 0
    assert rows["policy_ns"].null_count == rows.num_rows  # phase 2 has no policy stage
    # stages happen inside the request: their sum is at most its service time
    inside = pc.less_equal(pc.add(rows["vector_ns"], rows["graph_ns"]), rows["service_ns"])
    assert pc.all(inside).as_py()
    assert pc.min(rows["recall"]).as_py() == 1.0
    summary = pq.read_table(run / "summary.parquet").to_pylist()[0]
    assert summary["system"] == "hybrid: GPU search → Neo4j" and summary["hops"] == 2
    assert 0 < summary["vector_p50_ms"] < summary["p99_ms"] and summary["graph_p50_ms"] > 0
    assert summary["policy_p50_ms"] != summary["policy_p50_ms"]  # NaN: no such stage
    assert manifest(run)["cells"][0]["system"]["label"] == summary["system"]


def test_phase3_full_stack_with_and_without_cache(tmp_path, store_args):
    out, run = _run(tmp_path, "3-full-stack.yaml", "p3", store_args, "--set", "dataset.n_queries=10",
                    "--set", "targets=[{metric: error_rate, max: 0.01}]", "--set", "slo=[]")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = {r["cell"]: r for r in pq.read_table(run / "summary.parquet").to_pylist()}
    plain, cached = summary[0], summary[1]
    assert plain["cache"] is False and cached["cache"] is True
    assert plain["policy_p50_ms"] > 0 and plain["graph_p50_ms"] > 0 and plain["recall_mean"] == 1.0
    assert plain["cache_hit_rate"] != plain["cache_hit_rate"]  # NaN: no cache in that cell
    # 10 distinct queries: after each has been seen once (priming included), every request is a hit
    assert cached["cache_hit_rate"] > 0.9 and cached["recall_mean"] == 1.0
    rows = pq.read_table(run / "requests/cell-0001").to_pandas()
    hits = rows[rows.cache_hit == True]  # noqa: E712
    assert hits.vector_ns.isna().all() and hits.graph_ns.isna().all()
    assert cached["p50_ms"] < plain["p50_ms"]
    assert cached["cache_hit_p50_ms"] < plain["p50_ms"]  # a hit skips every stage (here nearly all are hits)
    miss = cached["cache_miss_p50_ms"]
    assert miss != miss or miss > cached["cache_hit_p50_ms"]
    report = (run / "report.md").read_text()
    assert "## Systems and stages" in report and "stage_breakdown.png" in report
    assert (run / "stage_breakdown.png").stat().st_size > 1000


def test_phase6_hybrid_vs_neo4j_only(tmp_path, store_args):
    out, run = _run(tmp_path, "6-neo4j-baseline.yaml", "p6", store_args, "--set", "load.target_qps=20",
                    "--set", "targets=[{metric: error_rate, max: 0.01}]", "--set", "slo=[]")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = pq.read_table(run / "summary.parquet").to_pylist()
    assert [(r["system_name"], r["search_params"]) for r in rows] == [
        ("hybrid", ""), ("neo4j_baseline", "ef=20"), ("neo4j_baseline", "ef=80")]
    hybrid = rows[0]  # compared with the baseline at matched recall: the cell it names
    neo = next(r for r in rows[1:] if r["search_params"] == hybrid["baseline_search_params"])
    assert neo["system"] == "Neo4j only (vector index + graph + policy)" and hybrid["baseline"] == neo["system"]
    assert hybrid["baseline_recall"] == neo["recall_mean"] and hybrid["recall_matched"] is (
        abs(hybrid["recall_mean"] - neo["recall_mean"]) <= 0.01 + 1e-9)
    assert manifest(run)["config"]["stores"]["neo4j"]["vector_quantization"] is False
    assert abs(hybrid["speedup_p99_vs_baseline"] - neo["p99_ms"] / hybrid["p99_ms"]) < 1e-9
    assert abs(hybrid["speedup_p50_vs_baseline"] - neo["p50_ms"] / hybrid["p50_ms"]) < 1e-9
    assert hybrid["qps_ratio_vs_baseline"] > 0
    assert neo["speedup_p99_vs_baseline"] == 1.0
    assert hybrid["recall_mean"] == 1.0 and 0.3 < neo["recall_mean"] <= 1.0  # HNSW: measured, not assumed
    assert f"at {neo['search_params']})" in (run / "report.md").read_text()  # the recalls beside the speedup


@pytest.mark.parametrize(("system", "label"), [("milvus", "Milvus Lite (embedded)"),
                                               ("pgvector", "pgvector (exact scan)")])
def test_phase1_on_the_other_vector_stores(tmp_path, store_args, system, label):
    # The phase's batch_max 64 / 1 ms window are for GPU actors: a store answers one request per call.
    out, run = _run(tmp_path, "1-vector-isolation.yaml", f"p1-{system}", store_args, "--set", f"system={system}",
                    "--set", "load.target_qps=5", "--set", "targets=[{metric: recall_mean, min: 0.999}]", "--set", "slo=[]")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = pq.read_table(run / "summary.parquet").to_pylist()[0]
    assert summary["system"] == label and summary["recall_mean"] == 1.0
    assert summary["ok"] > 5 and summary["vector_p50_ms"] > 0
    assert label in (run / "report.md").read_text()
    cell = manifest(run)["cells"][0]
    stats = cell["actor_stats"][0]  # the embedded file is served to load actors: async clients
    assert stats["client_path"] == "async" and stats["client_handoff_p50_ns"] > 0
    assert (cell["workload"]["load"]["batch_max"], cell["workload"]["load"]["batch_window_ms"]) == (1, 0.0)
    assert (pq.read_table(run / "requests")["batch_size"].to_numpy() == 1).all()


def test_hybrid_vector_stage_micro_batches_across_clients(tmp_path, store_args):
    out, run = _run(tmp_path, "3-full-stack.yaml", "p3b", store_args, "--set", "sweep={}",
                    "--set", "hybrid.vector_batch_window_ms=10", "--set", "load.target_qps=200",
                    "--set", "load.concurrency=16", "--set", "targets=[{metric: error_rate, max: 0.01}]", "--set", "slo=[]")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = pq.read_table(run / "summary.parquet").to_pylist()[0]
    assert summary["recall_mean"] == 1.0 and summary["vector_p50_ms"] > 0
    usage = manifest(run)["cells"][0]["gpu_usage"][0]
    rows = pq.read_table(run / "requests")
    answered = pc.sum(pc.equal(pc.cast(rows["status"], "string"), "ok")).as_py()
    # Every answered request's query reached the GPU actor. (Counting every row here was racy: on a busy box a
    # request can time out while it waits for a client thread, and then it never starts, so never reaches it.)
    assert answered > 0.9 * rows.num_rows and usage["rows"] >= answered - 5  # (a few at the edges)
    assert usage["calls"] < 0.8 * usage["rows"]  # in shared calls


def test_phase4_sustained_short_run_checks_its_own_targets(tmp_path, store_args):
    """The 10-minute phase, made short with --set duration_s: it runs, every shipped target gets a verdict, and
    the exit code is 1 exactly when a must-pass one failed."""
    out, run = _run(tmp_path, "4-sustained.yaml", "p4", store_args, "--set", "duration_s=3", "--set", "warmup_s=1",
                    "--set", "load.concurrency=8")
    verdicts = {(v["metric"], v["bound"]): v for v in manifest(run)["verdicts"]}
    assert set(verdicts) == {("qps_ratio", ">= 0.99"), ("p99_ms", "<= 10"), ("p99_ms", "<= 8.7"),
                             ("failure_rate", "<= 0.01"), ("failure_rate", "<= 0.001")}
    assert verdicts[("qps_ratio", ">= 0.99")]["passed"] and verdicts[("failure_rate", "<= 0.01")]["passed"]
    failed = [v for v in verdicts.values() if v["must_pass"] and not v["passed"]]
    assert out.returncode == (1 if failed else 0), out.stderr[-3000:]
    rows = pq.read_table(run / "requests")
    phases = set(pc.unique(pc.cast(rows["phase"], "string")).to_pylist())
    assert phases == {"warmup", "sustained"} and rows.num_rows == 160  # 40 QPS for 1 + 3 s, exactly


def test_phase7_production_readiness_with_short_phases(tmp_path, store_args):
    short = ("load.phases=[{name: warmup, duration_s: 1, measured: false}, {name: sustained, duration_s: 3},"
             " {name: stretch, duration_s: 1, rate: 1.428571}, {name: burst, duration_s: 1, rate: 2.142857},"
             " {name: recovery, duration_s: 3}]")
    out, run = _run(tmp_path, "7-production-readiness.yaml", "p7", store_args, "--set", short)
    failed = [v for v in manifest(run)["verdicts"] if v["must_pass"] and not v["passed"]]
    assert out.returncode == (1 if failed else 0), out.stderr[-3000:]  # exit 1 exactly when a must-pass failed
    phases = {r["phase"]: r for r in pq.read_table(run / "phases.parquet").to_pylist()}
    assert list(phases) == ["warmup", "sustained", "stretch", "burst", "recovery"]
    assert phases["burst"]["offered_qps"] > 1.5 * phases["sustained"]["offered_qps"]
    assert phases["recovery"]["recovery_s"] == phases["recovery"]["recovery_s"]  # computed (not NaN)
    metrics = {v["metric"] for v in manifest(run)["verdicts"]}
    assert metrics == {"p99_ms", "qps_ratio", "failure_rate", "recall_mean"}
    assert "recovery s" in (run / "report.md").read_text()


def test_a_zipf_workload_gives_the_cache_the_hit_rate_its_schedule_implies(tmp_path, store_args):
    """zipf:1.1 over a query pool 10x the cache (2,000 rows, 200 entries), one client in order: the hit rate the
    run reports is the one an LRU of that size has over the cell's own schedule of pool rows (within 5 points)."""
    from collections import OrderedDict

    import numpy as np

    from perfray.config import load_config, phase_rates
    from perfray.load.generator import CellPlan, plan_requests
    from perfray.load.profiles import op_mix
    from perfray.load.schedules import PhaseRates

    sets = ["sweep={}", "hybrid.cache=true", "hybrid.cache_entries=200", "dataset.n_queries=2000",
            "load.query_skew=zipf:1.1", "load.concurrency=1", "load.target_qps=100", "load.duration_s=8", "load.warmup_s=2",
            "targets=[{metric: failure_rate, max: 0.0}]", "slo=[]"]
    out, run = _run(tmp_path, "3-full-stack.yaml", "zipf", store_args, *[a for s in sets for a in ("--set", s)])
    assert out.returncode == 0, out.stderr[-3000:]
    summary = pq.read_table(run / "summary.parquet").to_pylist()[0]

    cell = load_config("configs/phases/3-full-stack.yaml", [s for s in SMALL if s != "--set"] + sets).cells()[0]
    phases = [PhaseRates(p.name, p.duration_s, *phase_rates(p, cell.offered_qps), p.measured)
              for p in cell.load.phase_plan()]
    plan = CellPlan(cell=0, actor=0, n_actors=1, start_unix_ns=0, phases=phases, arrival=cell.load.arrival,
                    ops=op_mix(cell.load.op_mix, cell.search.k, cell.dataset.n), seed=cell.load.seed,
                    batch_window_ns=0, batch_max=1, max_in_flight=1, timeout_ns=1, query_skew=cell.load.query_skew)
    _, _, phase, _, rows = plan_requests(plan, 2000)
    lru, hits, measured = OrderedDict.fromkeys([0, 1, 2]), 0, 0  # priming asked rows 0-2 before the cell
    for row, in_phase in zip(rows.tolist(), phase.tolist(), strict=True):
        hit = row in lru
        if hit:
            lru.move_to_end(row)
        else:
            lru[row] = None
            if len(lru) > 200:
                lru.popitem(last=False)
        if phases[in_phase].measured:
            measured, hits = measured + 1, hits + hit
    expected = hits / measured
    assert 0.3 < expected < 0.9  # a real cache, neither empty nor whole
    assert abs(summary["cache_hit_rate"] - expected) <= 0.05
    assert np.isfinite(summary["cache_hit_p50_ms"]) and np.isfinite(summary["cache_miss_p50_ms"])
