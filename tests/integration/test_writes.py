"""Writes while searching (``load.writes``) on a real pgvector, through Ray: every scheduled write is a row with
``op`` = its kind, the store applies it (a probe finds an insert as the nearest item, a deleted item is gone
once its delete is acknowledged), freshness is measured, reads keep exact recall over the items no write
touched, and the store holds the catalogue again after the cell."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from perfray.analysis.report import write_report
from perfray.config import load_config
from perfray.data import load_dataset
from perfray.data.catalogue import build_catalogue
from perfray.driver import SweepDriver
from perfray.results.writer import prepare_run_dir
from perfray.sut.base import load_fingerprint
from perfray.sut.pgvector import PgvectorStore

KINDS = ("insert", "upsert", "delete")


@pytest.mark.timeout(600)
def test_writes_are_rows_applied_by_the_store_and_undone_after_each_cell(stores_spec, tmp_path):
    """pgvector, one cell per write kind: each starts from the catalogue the cell before it wrote to."""
    pgv = stores_spec.pgvector
    config = load_config(None, [
        "system=pgvector", "dataset.n=2000", "dataset.dim=16", "dataset.n_queries=200", "dataset.seed=31",
        "sweep={load.writes: [" + ", ".join(f"{{rate: 40, kind: {k}, freshness_sample: 30}}" for k in KINDS) + "]}",
        "target_qps=150", "duration_s=2.0", "warmup_s=0.3", "microbench.enabled=false", "load.concurrency=4",
        "targets=[{metric: recall_min, min: 1.0}, {metric: failure_rate, max: 0.0}]",
        f"stores.pgvector.port={pgv.port}", f"stores.pgvector.user={pgv.user}"])
    run_dir = prepare_run_dir(tmp_path, "writes")
    assert SweepDriver(config, run_dir, "writes").run() == 0

    all_rows = pq.read_table(run_dir / "requests").to_pandas()
    summaries = pq.read_table(run_dir / "summary.parquet").to_pylist()
    section = write_report(run_dir)[0].read_text().split("## Writes while searching", 1)[1].split("\n## ")[0]
    for cell, kind in enumerate(KINDS):
        rows = all_rows[all_rows.cell == cell]
        writes = rows[rows.op == kind]
        assert len(writes) == round(40 * 2.3) and len(rows[rows.op.isin(KINDS)]) == len(writes)  # all its writes
        assert (writes.status == "ok").all() and writes.recall.isna().all() and (writes.k == 0).all()
        fresh = writes.freshness_ns.dropna()
        assert len(fresh) == 30 and (fresh > 0).all() and (fresh < 50_000_000).all()  # shown by the first probe
        reads = rows[rows.op != kind]
        assert len(reads) == round(150 * 2.3) and (reads.recall == 1.0).all()  # exact over the untouched items
        assert (reads.stale_hits == 0).all()  # no deleted item came back once its delete was acknowledged
        summary = summaries[cell]
        assert summary["writes"] == round(40 * 2.0) and summary["freshness_samples"] > 0
        assert 0 < summary["freshness_p50_ms"] <= summary["freshness_p99_ms"] < 50
        assert summary["write_p50_ms"] > 0 and summary["requests"] == round(190 * 2.0) and summary["stale_reads"] == 0
        assert f"| {cell} | pgvector (exact scan) | 80 {kind} (40/s) |" in section

    # after the cells: the catalogue again (written items gone, deleted ones back), fingerprint in place
    cell = config.cells()[0]
    catalogue = build_catalogue(load_dataset(cell.dataset), cell.catalogue)
    store = PgvectorStore(pgv, 2)
    store.connect()
    try:
        table = store.fetch("SELECT id, embedding::text, attr FROM perfray_vectors ORDER BY id", ())
        assert [r[0] for r in table] == list(range(2000))
        vectors = np.array([r[1].strip("[]").split(",") for r in table], dtype=np.float32)
        assert np.allclose(vectors, catalogue.dataset.base, atol=1e-6) and min(r[2] for r in table) == 0
        assert store.fingerprint() == load_fingerprint(catalogue, *store.fingerprint_settings())
    finally:
        store.close()


def test_writes_on_a_system_that_cannot_apply_them_is_a_one_line_error():
    from perfray.errors import UsageError

    with pytest.raises(UsageError) as err:
        load_config(None, ["system=neo4j", "load.writes={rate: 10}"])
    assert ("load.writes: system 'neo4j' does not apply writes yet (systems that do: gpu_search, milvus, neo4j_baseline, "
            "pgvector)"
            in str(err.value))
    assert "\n" not in str(err.value)


@pytest.mark.timeout(600)
def test_milvus_applies_writes_reports_their_freshness_and_gets_its_catalogue_back(tmp_path):
    """Milvus Lite, served to the load actor (its async client), a cell of inserts and one of deletes, each query
    filtered: writes applied and probed, reads exact over the untouched items that pass (FLAT; written items
    carry no filter attribute), the collection as loaded after the cells."""
    from pymilvus import MilvusClient

    db = tmp_path / "writes.db"
    kinds = ("insert", "delete")
    config = load_config(None, [
        "system=milvus", "dataset.n=1500", "dataset.dim=16", "dataset.n_queries=100", "dataset.seed=37",
        "sweep={load.writes: [" + ", ".join(f"{{rate: 20, kind: {k}, freshness_sample: 10}}" for k in kinds) + "]}",
        "filter.selectivity=0.2", "target_qps=60", "duration_s=2.0", "warmup_s=0.3", "microbench.enabled=false",
        "load.concurrency=4", "targets=[{metric: recall_min, min: 1.0}, {metric: failure_rate, max: 0.0}]",
        f"stores.milvus.uri={db}"])
    run_dir = prepare_run_dir(tmp_path, "milvus-writes")
    assert SweepDriver(config, run_dir, "milvus-writes").run() == 0
    all_rows = pq.read_table(run_dir / "requests").to_pandas()
    summaries = pq.read_table(run_dir / "summary.parquet").to_pylist()
    for cell, kind in enumerate(kinds):
        rows = all_rows[all_rows.cell == cell]
        writes, reads = rows[rows.op == kind], rows[rows.op != kind]
        assert len(writes) == round(20 * 2.3) and (writes.status == "ok").all() and (reads.recall == 1.0).all()
        assert (reads.stale_hits == 0).all()  # no deleted item came back once its delete was acknowledged
        fresh = writes.freshness_ns.dropna()
        assert len(fresh) == 10 and (fresh > 0).all()
        assert summaries[cell]["freshness_samples"] == len(writes[writes.phase == "sustained"].freshness_ns.dropna())

    base = load_dataset(config.cells()[0].dataset).base
    client = MilvusClient(uri=str(db))
    try:
        client.load_collection(collection := config.stores.milvus.collection)
        got = client.query(collection, filter="id >= 0", output_fields=["id", "embedding"], limit=16_384)
        assert sorted(r["id"] for r in got) == list(range(1500))
        vectors = np.array([r["embedding"] for r in sorted(got, key=lambda r: r["id"])], dtype=np.float32)
        assert np.allclose(vectors, base, atol=1e-6)
    finally:
        client.close()


@pytest.mark.timeout(600)
def test_the_default_path_applies_writes_on_its_search_actors_through_ray(tmp_path):
    """gpu_search (numpy, two sharded actors through Ray): each write goes to the shard holding its item,
    upserts are shown by their probes, reads stay exact over the untouched items, and the next cell (same
    seed, no writes) finds the dataset as it was: every read exact against the plain truth."""
    config = load_config(None, [
        "sweep={load.writes: [{rate: 30, kind: upsert, freshness_sample: 10}, null]}", "dataset.n=3000", "dataset.dim=16", "dataset.n_queries=200",
        "search.backend=numpy", "search.n_gpus=2", "search.topology=sharded", "target_qps=200", "duration_s=1.5",
        "warmup_s=0.3", "microbench.enabled=false",
        "targets=[{metric: recall_min, min: 1.0}, {metric: failure_rate, max: 0.0}]"])
    run_dir = prepare_run_dir(tmp_path, "gpu-writes")
    assert SweepDriver(config, run_dir, "gpu-writes").run() == 0
    rows = pq.read_table(run_dir / "requests").to_pandas()
    writes = rows[rows.op == "upsert"]
    assert len(writes) == round(30 * 1.8) and (writes.cell == 0).all() and (writes.status == "ok").all()
    assert writes.freshness_ns.notna().sum() == 10 and (writes.freshness_ns.dropna() > 0).all()
    assert (rows[rows.op != "upsert"].recall == 1.0).all()
    summary = pq.read_table(run_dir / "summary.parquet").to_pylist()
    assert [r["writes"] for r in summary] == [45, 0] and summary[0]["freshness_samples"] > 0


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["delete"])  # inserts: on the other stores (the suite's time is kept short)
def test_neo4j_applies_writes_to_its_vector_index_and_gets_its_graph_back(stores_spec, tmp_path, kind):
    """The Neo4j-only system: writes through its async driver, shown by its vector index (freshness), no deleted
    item in a read once its delete was acknowledged, and the graph as loaded after the cell."""
    neo = stores_spec.neo4j
    config = load_config(None, [
        "system=neo4j_baseline", "sweep={}", "dataset.n=2000", "dataset.dim=16", "dataset.n_queries=100",
        "dataset.seed=41", "target_qps=40", "duration_s=2.0", "warmup_s=0.3", "microbench.enabled=false",
        "load.concurrency=4", f"load.writes={{rate: 20, kind: {kind}, freshness_sample: 10}}",
        "stores.neo4j.vector_quantization=false", "targets=[{metric: failure_rate, max: 0.0}]",
        f"stores.neo4j.uri={neo.uri}"])
    run_dir = prepare_run_dir(tmp_path, f"neo4j-{kind}")
    assert SweepDriver(config, run_dir, "neo4j-writes").run() == 0
    rows = pq.read_table(run_dir / "requests").to_pandas()
    writes, reads = rows[rows.op == kind], rows[rows.op != kind]
    assert len(writes) == round(20 * 2.3) and (writes.status == "ok").all()
    fresh = writes.freshness_ns.dropna()
    assert len(fresh) == 10 and (fresh > 0).all()
    assert (reads.stale_hits == 0).all() and reads.recall.mean() > 0.8  # its HNSW index: approximate

    from perfray.sut.neo4j import Neo4jStore

    cell = config.cells()[0]
    base = load_dataset(cell.dataset).base
    store = Neo4jStore(neo, 2)
    store.connect()
    try:
        items = store.run("MATCH (i:Item) RETURN i.id AS id, i.embedding AS v ORDER BY id")
        assert [r["id"] for r in items] == list(range(2000))
        assert np.allclose(np.array([r["v"] for r in items], dtype=np.float32), base, atol=1e-6)
        assert store.run("MATCH (m:PerfrayMeta {key: 'catalogue'}) RETURN count(m) AS n")[0]["n"] == 1
    finally:
        store.close()
