"""The request writer: drained batches gathered into bounded row groups, everything on disk at close."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from perfray.load.recorder import Recorder
from perfray.results import writer as writer_module
from perfray.results.writer import RequestWriter, read_cell


def _batch(n: int, first: int = 0):
    rec = Recorder(0, 0, np.arange(first, first + n), np.zeros(n, np.int64), np.zeros(n, np.int16),
                   np.zeros(n, np.int16), np.array([10]), np.array([1]), ["s"], ["k"])
    for i in range(n):
        rec.sent(i, i + 1, 1, i, 1)
        rec.finish(i, i + 1, "ok", done_ns=2, endpoint=0)
    return rec.drain()


def test_batches_become_few_row_groups_and_every_row_is_written(tmp_path, monkeypatch):
    """1,200 drains of 500 rows (10 minutes at 1,000 req/s): a row group per drain grew the open file's footer
    ~19 KB each in the driver; gathered, they make ~10 row groups, and close writes the rest."""
    (tmp_path / "requests").mkdir()
    w = RequestWriter(tmp_path)
    for i in range(1200):
        w.write(0, 0, _batch(500, first=500 * i))
    w.write(1, 0, _batch(7))  # a few rows of another cell, still gathered
    w.close_cell(0)
    files = list((tmp_path / "requests" / "cell-0000").glob("*.parquet"))
    assert pq.ParquetFile(files[0]).metadata.num_row_groups <= 12
    seq = read_cell(tmp_path, 0).column("seq").to_numpy()
    assert seq.size == 600_000 and (seq == np.arange(600_000)).all()  # in order, none lost
    assert not (tmp_path / "requests" / "cell-0001").exists() or read_cell(tmp_path, 1).num_rows in (0, 7)
    w.close()  # the interrupted-run path: what is still gathered is written
    assert read_cell(tmp_path, 1).num_rows == 7 and w.rows_written == 600_007


def test_a_slow_trickle_is_written_at_least_every_row_group_interval(tmp_path, monkeypatch):
    (tmp_path / "requests").mkdir()
    clock = [0.0]
    monkeypatch.setattr(writer_module.time, "monotonic", lambda: clock[0])
    w = RequestWriter(tmp_path)
    w.write(0, 0, _batch(3))
    clock[0] = writer_module.ROW_GROUP_S + 0.1
    w.write(0, 0, _batch(3, first=3))  # old enough: both go to disk now, without waiting for close
    w._wait()
    w._pool.submit(lambda: None).result()
    assert w._gathered == {}
    w.close()
    assert read_cell(tmp_path, 0).num_rows == 6


def test_rows_of_schema_v3_read_under_v4_with_no_node(tmp_path):
    """v4 added load_node and search_node (the nodes that sent and served a row); a v3 run's files still read, the
    new columns null, and a v4 batch from the recorder carries them (null until the driver fills them)."""
    from perfray.schema import REQUEST_SCHEMA

    batch = _batch(5)
    assert batch.schema == REQUEST_SCHEMA and batch.column("load_node").null_count == 5
    v3 = batch.select([f.name for f in REQUEST_SCHEMA if f.name not in ("load_node", "search_node")])
    (tmp_path / "requests" / "cell-0000").mkdir(parents=True)
    pq.write_table(pa.Table.from_batches([v3]), tmp_path / "requests" / "cell-0000" / "actor-000.parquet")
    rows = read_cell(tmp_path, 0)
    assert rows.num_rows == 5 and rows["load_node"].null_count == rows["search_node"].null_count == 5
