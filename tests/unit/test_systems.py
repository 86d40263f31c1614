"""Systems-under-test plumbing without servers: the catalogue's reference answers, stage spans in rows,
stage/cache/error-window/baseline summaries, recovery after a burst, config validation."""

import numpy as np
import pyarrow as pa
import pytest
from support import make_plan, run_plan

from perfray.analysis.summary import add_baseline, check_targets, recovery_s, summarize_cell
from perfray.config import Workload
from perfray.data import load_dataset
from perfray.data.catalogue import build_catalogue, expand, rank
from perfray.errors import UsageError
from perfray.sut.hybrid import ResultCache
from perfray.sut.session import make_system
from perfray.systems_config import CatalogueSpec, StoresSpec
from perfray.targets_config import TargetSpec

WORKLOAD = Workload.model_validate({"dataset": {"kind": "synthetic", "n": 500, "dim": 8, "n_queries": 20}})


@pytest.fixture(scope="module")
def catalogue():
    return build_catalogue(load_dataset(WORKLOAD.dataset), CatalogueSpec(users=50, genres=5, similar_per_item=3))


def test_catalogue_is_seeded_and_edges_stay_in_genre(catalogue):
    again = build_catalogue(catalogue.dataset, CatalogueSpec(users=50, genres=5, similar_per_item=3))
    assert again.fingerprint == catalogue.fingerprint and np.array_equal(again.similar, catalogue.similar)
    other = build_catalogue(catalogue.dataset, CatalogueSpec(users=50, genres=5, similar_per_item=3, seed=1))
    assert other.fingerprint != catalogue.fingerprint
    src = np.repeat(np.arange(catalogue.n_items), 3)
    assert (catalogue.item_genre[src] == catalogue.item_genre[catalogue.similar.ravel()]).all()
    assert (catalogue.similar.ravel() != src).all()  # no self edges
    users = catalogue.user_of(np.arange(1000))
    assert users.min() >= 0 and users.max() < 50 and np.array_equal(users, catalogue.user_of(np.arange(1000)))


def test_expand_and_rank_reference(catalogue):
    one = expand(catalogue, [0], 1)
    assert one.tolist() == sorted(set(catalogue.similar[0].tolist()))
    two = expand(catalogue, [0], 2)
    assert set(one) <= set(two) and set(two) == set(one) | set(catalogue.similar[one].ravel().tolist())
    user = 3
    candidates = np.arange(100)
    ranked = rank(catalogue, user, candidates, 10)
    score = catalogue.item_popularity * catalogue.policy_weight[user, catalogue.item_genre]
    assert (score[ranked] > 0).all() and np.all(np.diff(score[ranked]) <= 0)
    blocked = candidates[score[candidates] == 0]
    assert not set(blocked) & set(rank(catalogue, user, candidates, 100).tolist())


def test_stage_spans_land_in_rows():
    class Staged:
        def submit(self, queries, k, rows=None):
            return self._reply()

        async def _reply(self):
            return None, None, 0, {"vector_ns": 1_000, "graph_ns": 2_000, "cache_hit": False}

    table, _ = run_plan(make_plan(200, 0.2), Staged())
    assert table["vector_ns"].to_pylist() == [1_000] * table.num_rows
    assert table["graph_ns"].to_pylist() == [2_000] * table.num_rows
    assert table["policy_ns"].null_count == table.num_rows
    assert table["cache_hit"].to_pylist() == [False] * table.num_rows
    assert table["recall"].null_count == table.num_rows  # no vector ids: no recall


def _rows(latency_ms, status=None, start_ns=10**18, step_ns=10_000_000, stages=None):
    n = len(latency_ms)
    intended = start_ns + np.arange(n, dtype=np.int64) * step_ns
    latency = (np.asarray(latency_ms) * 1e6).astype(np.int64)
    status = status or ["ok"] * n
    data = {"phase": pa.array(["m"] * n).dictionary_encode(), "status": pa.array(status).dictionary_encode(),
            "intended_ns": intended, "sent_ns": intended, "done_ns": intended + latency, "latency_ns": latency,
            "service_ns": latency, "schedule_lag_ns": np.zeros(n, np.int64), "recall": np.full(n, np.nan),
            "batch_size": np.ones(n, np.int32)}
    for name, values in (stages or {}).items():
        data[name] = values
    return pa.table(data)


def _meta(rows, start_ns=10**18):
    return {"cell": 0, "labels": {}, "target_qps": 100.0, "measured_phases": ["m"], "measured_s": 1.0,
            "window_end_ns": 2**62, "start_ns": start_ns}


def test_summary_has_stage_percentiles_cache_rate_and_error_window():
    n = 100
    stages = {"vector_ns": pa.array(np.arange(1, n + 1) * 1_000_000, pa.int64()),
              "graph_ns": pa.array([None] * n, pa.int64()),
              "cache_hit": pa.array([True] * 25 + [False] * 75)}
    status = ["ok"] * 40 + ["error"] * 10 + ["ok"] * 50
    rows = _rows([5.0] * n, status=status, stages=stages)
    row = summarize_cell(rows, _meta(rows))
    ok = np.r_[np.arange(1, 41), np.arange(51, 101)].astype(float)
    assert row["vector_p50_ms"] == pytest.approx(np.percentile(ok, 50))
    assert row["graph_p50_ms"] != row["graph_p50_ms"]  # NaN
    assert row["cache_hit_rate"] == pytest.approx(0.25)
    # hits and misses have their own percentiles (ok rows): here all 5 ms, the rows' latency
    assert row["cache_hit_p50_ms"] == pytest.approx(5.0) and row["cache_miss_p99_ms"] == pytest.approx(5.0)
    fast_hits = _rows([1.0] * 25 + [9.0] * 75, status=status, stages=stages)
    split = summarize_cell(fast_hits, _meta(fast_hits))
    assert split["cache_hit_p99_ms"] == pytest.approx(1.0) and split["cache_miss_p50_ms"] == pytest.approx(9.0)
    assert row["first_error_s"] == pytest.approx(0.40) and row["last_error_s"] == pytest.approx(0.49)


def test_recovery_is_the_time_until_latency_is_back():
    # 10 s at 10 QPS: slow (50 ms) for the first 3 s, then 5 ms
    lat = [50.0] * 30 + [5.0] * 70
    rows = _rows(lat, step_ns=100_000_000)
    assert recovery_s(rows, 10**18, 10**18 + 10**10, steady_p99_ms=5.0) == pytest.approx(3.0)
    assert recovery_s(rows, 10**18, 10**18 + 10**10, steady_p99_ms=60.0) == 0.0


def test_recovery_never_is_nan():
    never = _rows([50.0] * 100, step_ns=100_000_000)
    assert np.isnan(recovery_s(never, 10**18, 10**18 + 10**10, steady_p99_ms=5.0))


def test_baseline_speedups_and_filtered_targets():
    summary = [{"cell": 0, "system_name": "hybrid", "system": "hybrid", "p50_ms": 2.0, "p99_ms": 4.0,
                "achieved_qps": 100.0},
               {"cell": 1, "system_name": "neo4j_baseline", "system": "Neo4j only", "p50_ms": 6.0, "p99_ms": 20.0,
                "achieved_qps": 50.0}]
    add_baseline(summary, ["same", "same"], "neo4j_baseline")
    assert summary[0]["speedup_p99_vs_baseline"] == 5.0 and summary[0]["speedup_p50_vs_baseline"] == 3.0
    assert summary[0]["qps_ratio_vs_baseline"] == 2.0 and summary[0]["baseline"] == "Neo4j only"
    verdicts = check_targets(summary, [TargetSpec(metric="speedup_p99_vs_baseline", min=1.5,
                                                  where={"system_name": "hybrid"})])
    assert [(v["cell"], v["passed"]) for v in verdicts] == [(0, True)]
    nothing = check_targets(summary, [TargetSpec(metric="p99_ms", max=10, where={"system_name": "milvus"})])
    assert [(v["cell"], v["passed"]) for v in nothing] == [(-1, False)]  # a target that checks nothing fails
    assert "no cell matched" in nothing[0]["bound"]


def test_result_cache_is_lru():
    cache = ResultCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)  # evicts b, the least recently used
    assert cache.get("b") is None and cache.get("c") == 3
    assert (cache.hits, cache.lookups) == (2, 3)


def test_unknown_system_is_a_one_line_config_error(tmp_path):
    from perfray.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("workload: {system: mongo}\n")
    with pytest.raises(UsageError, match="unknown system 'mongo'; known: .*hybrid"):
        load_config(path)


def test_systems_declare_their_stores_and_construct_without_io():
    stores = StoresSpec(postgres={"port": 1}, neo4j={"uri": "bolt://127.0.0.1:1"}, milvus={"uri": "x.db"})
    hybrid = make_system("hybrid", WORKLOAD.model_copy(update={"system": "hybrid"}), stores)
    assert hybrid.stores == ("neo4j", "postgres") and hybrid.needs_gpu_actors
    vector_graph = Workload.model_validate({"system": "hybrid", "hybrid": {"vector": "milvus", "policy": False}})
    assert make_system("hybrid", vector_graph, stores).stores == ("milvus", "neo4j")
    assert make_system("milvus", WORKLOAD, stores).label() == "Milvus Lite (embedded)"
    server = StoresSpec(milvus={"uri": "http://milvus:19530"})
    assert make_system("milvus", WORKLOAD, server).label() == "Milvus server"
    assert make_system("gpu_search", WORKLOAD, stores).micro_batched


def test_micro_batcher_answers_each_thread_with_fewer_calls():
    import threading

    from perfray.sut.batching import MicroBatcher

    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 8)).astype(np.float32)

    def exact(queries, k):
        d = ((queries[:, None, :] - base[None]) ** 2).sum(-1)
        return np.argsort(d, axis=1, kind="stable")[:, :k]

    batcher = MicroBatcher(exact, window_s=0.005, batch_max=32)
    queries = rng.standard_normal((160, 8)).astype(np.float32)
    got = [None] * 160
    barrier = threading.Barrier(8)

    def client(t):
        barrier.wait()
        for i in range(t, 160, 8):
            got[i] = batcher.search(queries[i:i + 1], 5 if i % 2 else 10)

    threads = [threading.Thread(target=client, args=(t,)) for t in range(8)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    batcher.close()
    for i in range(160):
        assert got[i].tolist() == exact(queries[i:i + 1], 5 if i % 2 else 10).tolist()
    assert batcher.rows == 160 and batcher.calls < 100  # 8 concurrent clients share calls


def test_micro_batcher_passes_errors_to_every_waiting_request():
    from perfray.sut.batching import MicroBatcher

    def broken(queries, k):
        raise ConnectionError("actor gone")

    batcher = MicroBatcher(broken, window_s=0.001, batch_max=4)
    with pytest.raises(ConnectionError, match="actor gone"):
        batcher.search(np.zeros((1, 4), np.float32), 3)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.search(np.zeros((1, 4), np.float32), 3)


def test_an_embedded_milvus_lite_on_a_multi_node_cluster_stops_the_run(tmp_path):
    """Served on the driver's loopback, Milvus Lite is out of reach of load actors on other nodes: one line,
    exit 3, before anything runs; a Milvus server URI, or one node, is fine."""
    from perfray.errors import UnavailableError
    from perfray.sut.session import SystemSession

    cell = Workload.model_validate({"system": "milvus"})
    lite = SystemSession(StoresSpec.model_validate({"milvus": {"uri": str(tmp_path / "m.db")}}))
    lite.check_reachable([cell], nodes=1)
    with pytest.raises(UnavailableError, match="embedded Milvus Lite .* other 2 node") as err:
        lite.check_reachable([cell], nodes=3)
    assert err.value.exit_code == 3 and "\n" not in str(err.value)
    lite.check_reachable([Workload.model_validate({"system": "pgvector"})], nodes=3)  # no Milvus: fine
    served = SystemSession(StoresSpec.model_validate({"milvus": {"uri": "http://10.0.0.5:19530"}}))
    served.check_reachable([cell], nodes=3)


def test_capabilities_recorded_at_registration_are_each_systems_own():
    """The config layer checks filters, writes and search parameters against the flags registered with each system
    (importing none of them); here each flag is held to what its class says."""
    from perfray.systems_config import SYSTEMS

    for name in SYSTEMS.names():
        cls = SYSTEMS.load(name)
        assert SYSTEMS.flag(name, "filterable", False) == cls.filterable, name
        assert SYSTEMS.flag(name, "writable", False) == cls.writable, name
        assert SYSTEMS.flag(name, "search_params", frozenset()) == frozenset(cls.search_params), name


def test_checking_a_config_imports_no_system_under_test():
    import subprocess
    import sys

    code = ("import sys; from perfray.config import load_config; load_config(None, ['system=pgvector', "
            "'filter={selectivity: 0.1}', 'search.params={ef: 40}']); "
            "print(sorted(m for m in sys.modules if m.startswith(('perfray.sut', 'perfray.load'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_store_closes_its_sync_handle_now_and_its_async_one_on_a_loop_once():
    from perfray.sut.base import TwoHandles

    closed = []

    class Sync:
        def close(self):
            closed.append("sync")

    class Async:
        async def close(self):
            closed.append("async")

    class Store(TwoHandles):
        HANDLES = ("pool", "async_pool")

        def __init__(self):
            self.pool, self.async_pool = Sync(), Async()

    store = Store()
    store.close()
    store.close()
    assert closed == ["sync", "async"] and store.pool is None and store.async_pool is None
