"""The test plan's phases, run as a user runs them (CLI, embedded Ray) against the real servers, scaled down (phases
2, 4, 6 and 7 as they run in the laptop campaign: test_campaign_laptop)."""

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
