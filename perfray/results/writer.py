"""Parquet output of a run: ``requests/cell-NNNN/actor-AA.parquet`` (zstd), plus whole tables.

Batches from actors are gathered into row groups of up to ``ROW_GROUP_ROWS`` rows or ``ROW_GROUP_S`` seconds,
whichever comes first, and written then; ``close_cell``/``close`` (also on Ctrl-C and on errors) write what is
still gathered, so an interrupted run keeps everything it gathered. A row group per drained batch (two a
second) made the open file's footer metadata grow ~19 KB per row group, ~2.3 MB a minute in the driver.
"""

from __future__ import annotations

import os
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from perfray.errors import UsageError, make_dir
from perfray.schema import REQUEST_SCHEMA

# Dictionary-encode only the label columns: trying it on int64 times (pyarrow's default) halves the write
# rate and grows the file (benchmarks/results_pipeline.py: 2.9M -> 4.7M rows/s, 18 -> 10 B/row).
PARQUET_OPTIONS = {
    "compression": "zstd",
    "compression_level": 1,
    "use_dictionary": [f.name for f in REQUEST_SCHEMA if pa.types.is_dictionary(f.type)],
}

ROW_GROUP_ROWS = 65_536
ROW_GROUP_S = 10.0

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_run_id(run_id: str) -> None:
    """A run id is a folder name: letters, digits, '.', '_', '-'; never empty (an explicit '' is a mistake)."""
    if not RUN_ID.match(run_id) or ".." in run_id:
        what = "must not be empty" if not run_id else "use letters, digits, '.', '_' or '-' (no path separators)"
        raise UsageError(f"--run-id {run_id!r}: {what}")


def prepare_run_dir(results_dir: Path, run_id: str) -> Path:
    """Create ``results_dir/run_id`` (new, inside results_dir, writable) or raise a one-line UsageError."""
    check_run_id(run_id)
    results_dir = make_dir(results_dir, "--results-dir")
    run_dir = (results_dir / run_id).resolve()
    if run_dir.parent != results_dir.resolve():
        raise UsageError(f"--run-id {run_id!r}: would write outside --results-dir {results_dir}")
    if run_dir.exists():
        raise UsageError(f"--run-id {run_id!r}: {run_dir} already exists; results are never overwritten")
    if not os.access(results_dir, os.W_OK | os.X_OK):
        raise UsageError(f"--results-dir {results_dir}: not writable")
    try:
        (run_dir / "requests").mkdir(parents=True)
    except OSError as err:
        raise UsageError(f"--results-dir {results_dir}: cannot write there ({err.strerror})") from None
    return run_dir


class RequestWriter:
    """One open Parquet writer per (cell, actor); each drained batch becomes part of a row group.

    Encoding runs on one background thread (pyarrow releases the GIL), so the driver gathers the next batches
    while the last ones are written; one thread keeps each file's batches in order. ``close_cell``/``close``
    wait for everything queued and raise the first write error, if any."""

    def __init__(self, run_dir: Path) -> None:
        self.root = Path(run_dir) / "requests"
        self._open: dict[tuple[int, int], pq.ParquetWriter] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="perfray-parquet")
        self._pending: list[Future] = []
        self._gathered: dict[tuple[int, int], tuple[float, list[pa.RecordBatch], int]] = {}
        self.rows_written = 0

    def write(self, cell: int, actor: int, batch: pa.RecordBatch) -> None:
        """Gather ``batch`` into its file's next row group; write the group once it is big or old enough."""
        self.rows_written += batch.num_rows
        key = (cell, actor)
        since, batches, rows = self._gathered.get(key, (time.monotonic(), [], 0))
        batches.append(batch)
        rows += batch.num_rows
        self._gathered[key] = (since, batches, rows)
        if rows >= ROW_GROUP_ROWS or time.monotonic() - since >= ROW_GROUP_S:
            self._flush(key)
        self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]

    def _flush(self, key: tuple[int, int]) -> None:
        _, batches, _ = self._gathered.pop(key, (0.0, [], 0))
        if batches:
            self._pending.append(self._pool.submit(self._write, *key, pa.Table.from_batches(batches)))

    def _wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def _write(self, cell: int, actor: int, table: pa.Table) -> None:
        key = (cell, actor)
        writer = self._open.get(key)
        if writer is None:
            folder = self.root / f"cell-{cell:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            path = _free_name(folder, f"actor-{actor:03d}")
            writer = pq.ParquetWriter(path, REQUEST_SCHEMA, **PARQUET_OPTIONS)
            self._open[key] = writer
        writer.write_table(table, row_group_size=max(table.num_rows, 1))

    def close_cell(self, cell: int) -> None:
        for key in [k for k in self._gathered if k[0] == cell]:
            self._flush(key)
        self._pool.submit(self._close_files, cell).result()
        self._wait()

    def close(self) -> None:
        try:
            for key in list(self._gathered):
                self._flush(key)
            self._pool.submit(self._close_files, None).result()
            self._wait()
        finally:
            self._pool.shutdown(wait=True)

    def _close_files(self, cell: int | None) -> None:
        for key in [k for k in self._open if cell is None or k[0] == cell]:
            self._open.pop(key).close()


def _free_name(folder: Path, stem: str) -> Path:
    path = folder / f"{stem}.parquet"
    part = 1
    while path.exists():
        path = folder / f"{stem}-part{part}.parquet"
        part += 1
    return path


def read_cell(run_dir: Path, cell: int) -> pa.Table:
    """Every request row of one cell."""
    folder = Path(run_dir) / "requests" / f"cell-{cell:04d}"
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return REQUEST_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f, schema=REQUEST_SCHEMA) for f in files], promote_options="permissive")


def write_table(path: Path, table: pa.Table) -> None:
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
