"""A cell's request rows for analysis, read one column at a time, row group by row group, into compact numpy
arrays: label columns (status, phase, op, nodes) as small integer codes, numbers as one array each, never a
whole Arrow table nor a Python string per row.

A summary of a million-row cell this way peaks at tens of MB above the process, not the ~700 MB that reading the
table and filtering copies of it took (``benchmarks/summary_memory.py``). Columns a file lacks (an older schema)
read as nulls. Only label codes are kept between calls (1-2 B/row); a number column is read each time it is
asked for, so a caller holds at most the few it is working on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from perfray.schema import REQUEST_SCHEMA


class CellFrame:
    """Rows of one cell (from its Parquet files, or an in-memory table), as columns on demand."""

    def __init__(self, files: list[Path] | None = None, table: pa.Table | None = None) -> None:
        self._files = [pq.ParquetFile(f, pre_buffer=False) for f in files or []]
        self._table = table
        self.n = table.num_rows if table is not None else sum(f.metadata.num_rows for f in self._files)
        self._codes: dict[str, tuple[np.ndarray, list[str]]] = {}

    @classmethod
    def read(cls, run_dir: Path, cell: int) -> CellFrame:
        folder = Path(run_dir) / "requests" / f"cell-{cell:04d}"
        return cls(files=sorted(folder.glob("*.parquet")) if folder.is_dir() else [])

    @classmethod
    def of(cls, rows: pa.Table | CellFrame) -> CellFrame:
        return rows if isinstance(rows, CellFrame) else cls(table=rows)

    def has(self, name: str) -> bool:
        """The column exists and holds at least one value."""
        if self._table is not None:
            return name in self._table.column_names and self._table[name].null_count < self._table.num_rows
        for f in self._files:
            if name not in f.schema_arrow.names:
                continue
            j = f.schema_arrow.names.index(name)
            for i in range(f.metadata.num_row_groups):
                stats = f.metadata.row_group(i).column(j).statistics
                if stats is None or not stats.has_null_count or stats.null_count < f.metadata.row_group(i).num_rows:
                    return True
        return False

    def _chunks(self, name: str) -> Iterator[pa.Array]:
        """The column, chunk by chunk (a row group at a time from files); nulls where a source lacks it."""
        kind = REQUEST_SCHEMA.field(name).type if name in REQUEST_SCHEMA.names else pa.null()
        if self._table is not None:
            if name not in self._table.column_names:
                yield pa.nulls(self.n, kind)
                return
            yield from self._table[name].chunks
            return
        for f in self._files:
            present = name in f.schema_arrow.names
            for i in range(f.metadata.num_row_groups):
                if present:
                    yield from f.read_row_group(i, columns=[name]).column(0).chunks
                else:
                    yield pa.nulls(f.metadata.row_group(i).num_rows, kind)

    def floats(self, name: str) -> np.ndarray:
        """A number column as float64, NaN for nulls."""
        out = np.empty(self.n, dtype=np.float64)
        at = 0
        for chunk in self._chunks(name):
            # bools and ints too (unchecked: ns timestamps above 2**53 round, as float64 must)
            out[at:at + len(chunk)] = (chunk.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
                                       if chunk.type != pa.null() else np.nan)
            at += len(chunk)
        return out

    def ints(self, name: str, fill: int = 0) -> np.ndarray:
        """An integer column as int64 (exact: ns timestamps), ``fill`` for nulls."""
        out = np.empty(self.n, dtype=np.int64)
        at = 0
        for chunk in self._chunks(name):
            if chunk.null_count:
                chunk = chunk.fill_null(fill) if chunk.type != pa.null() else pa.array(np.full(len(chunk), fill))
            out[at:at + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
            at += len(chunk)
        return out

    def valid(self, name: str) -> np.ndarray:
        """True where the column holds a value."""
        out = np.empty(self.n, dtype=bool)
        at = 0
        for chunk in self._chunks(name):
            out[at:at + len(chunk)] = chunk.is_valid().to_numpy(zero_copy_only=False)
            at += len(chunk)
        return out

    def codes(self, name: str) -> tuple[np.ndarray, list[str]]:
        """A label column as (int16 codes, names): ``names[codes[i]]`` is row i's label, code -1 a null. Kept."""
        if name in self._codes:
            return self._codes[name]
        index: dict[str, int] = {}
        out = np.empty(self.n, dtype=np.int16)
        at = 0
        for chunk in self._chunks(name):
            if chunk.type == pa.null():
                out[at:at + len(chunk)] = -1
            else:
                if not pa.types.is_dictionary(chunk.type):
                    chunk = chunk.dictionary_encode()
                local = np.array([index.setdefault(s, len(index)) for s in chunk.dictionary.to_pylist()] + [-1],
                                 dtype=np.int16)
                ids = chunk.indices.fill_null(-1).to_numpy(zero_copy_only=False)
                out[at:at + len(chunk)] = local[ids]  # -1 picks the trailing -1: null stays null
            at += len(chunk)
        self._codes[name] = (out, list(index))
        return self._codes[name]

    def isin(self, name: str, values: Iterable[str]) -> np.ndarray:
        """True where the label column's value is one of ``values``."""
        codes, names = self.codes(name)
        wanted = [i for i, s in enumerate(names) if s in set(values)]
        return np.isin(codes, wanted) if wanted else np.zeros(self.n, dtype=bool)

    def labels(self, name: str, where: np.ndarray | None = None) -> np.ndarray:
        """Label strings (object array; None for nulls) of the chosen rows: for small selections and tests."""
        codes, names = self.codes(name)
        table = np.array([*names, None], dtype=object)
        return table[codes if where is None else codes[where]]
