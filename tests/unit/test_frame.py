"""CellFrame: a cell's rows read a column at a time must say exactly what the whole table says, in bounded memory."""

import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from perfray.analysis.cells import summarize_phases
from perfray.analysis.nodes import cell_node_table
from perfray.config import LoadSpec, Workload
from perfray.load.recorder import Recorder
from perfray.results.frame import CellFrame
from perfray.results.writer import RequestWriter, read_cell

T0 = 1_795_000_000_000_000_123  # ns epoch: above 2**53, so a float64 path would round it


def _batch(rng, lo: int, n: int, phases: list[str], node: str | None) -> pa.RecordBatch:
    seq = np.arange(lo, lo + n)
    intended = T0 + seq * 1_000_003
    which = (seq >= lo + n // 3).astype(np.int16)
    rec = Recorder(0, 0, seq, intended, which, np.zeros(n, np.int16), np.array([10]), np.array([1]), phases,
                   ["knn_k10_q1"])
    status = rng.choice(["ok", "ok", "ok", "timeout", "error", "dropped"], n)
    for i in range(n):
        if status[i] == "dropped":
            rec.finish(i, i + 1, "dropped")
            continue
        rec.sent(i, i + 1, int(intended[i]) + 7, i, 1)
        rec.finish(i, i + 1, status[i], done_ns=int(intended[i]) + int(rng.integers(10**5, 10**8)),
                   error="Boom" if status[i] == "error" else None, recall=np.array([rng.random()]))
    batch = rec.drain()
    nodes = pa.array([node] * n, pa.string()).dictionary_encode().cast(pa.dictionary(pa.int16(), pa.string()))
    return batch.set_column(batch.schema.get_field_index("load_node"), "load_node", nodes)


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """Two actors' files, several row groups each, whose dictionaries differ (phase names, nodes, errors)."""
    import perfray.results.writer as writer

    monkeypatch.setattr(writer, "ROW_GROUP_ROWS", 50)
    rng = np.random.default_rng(3)
    w = RequestWriter(tmp_path)
    w.write(0, 0, _batch(rng, 0, 120, ["warmup", "sustained"], "node-a"))
    w.write(0, 1, _batch(rng, 120, 90, ["warmup", "burst"], None))
    w.write(0, 1, _batch(rng, 210, 60, ["sustained", "burst"], "node-b"))
    w.close()
    return tmp_path


def test_frame_columns_are_the_tables(run_dir):
    table, frame = read_cell(run_dir, 0), CellFrame.read(run_dir, 0)
    assert frame.n == table.num_rows == 270
    for name in ("phase", "status", "error", "load_node", "op"):
        want = pa.compute.cast(table[name], pa.string()).to_pylist()
        assert frame.labels(name).tolist() == want, name
    assert frame.ints("intended_ns").tolist() == table["intended_ns"].to_pylist()  # exact at ns epochs
    latency = table["latency_ns"].to_numpy(zero_copy_only=False)
    assert np.array_equal(frame.floats("latency_ns"), latency, equal_nan=True) and np.isnan(latency).any()
    assert np.array_equal(frame.ints("done_ns", fill=-5) == -5, np.isnan(latency))
    assert np.array_equal(frame.isin("status", ["ok", "timeout"]),
                          np.isin(frame.labels("status"), ["ok", "timeout"]))
    assert frame.has("recall") and not frame.has("freshness_ns")


def test_a_file_of_an_older_schema_reads_its_missing_columns_as_nulls(run_dir, tmp_path):
    path = sorted((run_dir / "requests" / "cell-0000").glob("*.parquet"))[0]  # actor 0: all on node-a
    old = pq.read_table(path).drop_columns(["load_node", "search_node"])
    pq.write_table(old, path)
    frame = CellFrame.read(run_dir, 0)
    assert not frame.has("search_node")
    codes, names = frame.codes("search_node")
    assert (codes == -1).all() and names == []
    assert frame.labels("load_node")[: old.num_rows].tolist() == [None] * old.num_rows


def test_summaries_from_the_frame_are_the_tables(run_dir):
    cell = Workload(load=LoadSpec(phases=[{"name": "warmup", "duration_s": 1, "measured": False},
                                          {"name": "sustained", "duration_s": 1}, {"name": "burst", "duration_s": 1}],
                                  target_qps=100))
    args = (cell, 0, "complete", T0, 2**62, {})
    (ours, our_phases), (theirs, their_phases) = (summarize_phases(rows, *args) for rows in
                                                  (CellFrame.read(run_dir, 0), read_cell(run_dir, 0)))
    for a, b in [(ours, theirs), *zip(our_phases, their_phases, strict=True)]:
        assert a.keys() == b.keys()
        for key in a:
            same = a[key] == b[key] or (isinstance(a[key], float) and np.isnan(a[key]) and np.isnan(b[key]))
            assert same, (key, a[key], b[key])
    assert ours["requests"] > 0 and ours["error"] > 0 and ours["dropped"] > 0
    nodes = cell_node_table(CellFrame.read(run_dir, 0), cell, {})
    assert [r["node_id"] for r in nodes] == ["node-a", "node-b"]
    assert nodes == cell_node_table(read_cell(run_dir, 0), cell, {})


def test_a_cell_summary_holds_under_100_bytes_a_row(tmp_path):
    """numpy's allocations (tracked by tracemalloc) while summarizing 300K rows from the frame, per row: the bound
    behind the driver's <= 100 MB per million rows (benchmarks/summary_memory.py measures the process's RSS)."""
    n = 300_000
    rng = np.random.default_rng(0)
    seq = np.arange(n)
    intended = T0 + np.cumsum(rng.exponential(1e5, n)).astype(np.int64)
    rec = Recorder(0, 0, seq, intended, (seq > n // 10).astype(np.int16), np.zeros(n, np.int16), np.array([10]),
                   np.array([1]), ["warmup", "sustained"], ["knn_k10_q1"])
    for a in range(0, n, 50_000):
        b = a + 50_000
        rec.sent(a, b, int(intended[a]), a, b - a)
        rec.finish(a, b, "ok", done_ns=int(intended[b - 1]) + 2_000_000, endpoint=0, recall=np.ones(b - a, np.float32))
    w = RequestWriter(tmp_path)
    w.write(0, 0, rec.drain())
    w.close()
    cell = Workload(load=LoadSpec(phases=[{"name": "warmup", "duration_s": 3, "measured": False},
                                          {"name": "sustained", "duration_s": 27}], target_qps=10_000))
    tracemalloc.start()
    try:
        frame = CellFrame.read(tmp_path, 0)
        summarize_phases(frame, cell, 0, "complete", T0, 2**62, {})
        cell_node_table(frame, cell, {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak / n <= 100, f"{peak / n:.0f} B/row"
