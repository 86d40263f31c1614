"""Open a finished (or interrupted) run directory: manifest, summary and raw request rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from perfray import SCHEMA_VERSION
from perfray.errors import UsageError


@dataclass
class Run:
    """A run as written by the sweep driver."""

    path: Path
    manifest: dict
    summary: list[dict]
    rows: pa.Table
    phases: list[dict] | None = None

    def cell_rows(self, cell: int, measured_only: bool = False) -> pa.Table:
        rows = self.rows.filter(pc.equal(self.rows["cell"], cell))
        if measured_only:
            names = pa.array(self.measured_phases(cell), pa.string())
            rows = rows.filter(pc.is_in(pc.cast(rows["phase"], pa.string()), value_set=names))
        return rows

    def measured_phases(self, cell: int) -> list[str]:
        """Names of the cell's measured phases, from its workload in the manifest."""
        from perfray.config import Workload

        workload = Workload.model_validate(self.manifest["cells"][cell]["workload"])
        return [p.name for p in workload.load.phase_plan() if p.measured]

    def column(self, table: pa.Table, name: str) -> np.ndarray:
        col = table[name]
        if pa.types.is_dictionary(col.type):
            col = pc.cast(col, pa.string())
        return col.to_numpy(zero_copy_only=False)


def open_run(path: Path) -> Run:
    """Load a run directory or raise a one-line UsageError saying what is wrong with it."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise UsageError(f"{path}: not a perfray run (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(f"{manifest_path}: not valid JSON (line {err.lineno})") from None
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UsageError(f"{manifest_path}: schema_version {version!r} is newer than this perfray reads "
                         f"({SCHEMA_VERSION}); upgrade perfray")
    summary_path = path / "summary.parquet"
    summary = pq.read_table(summary_path).to_pylist() if summary_path.is_file() else []
    requests = path / "requests"
    files = sorted(requests.glob("cell-*/*.parquet")) if requests.is_dir() else []
    from perfray.schema import REQUEST_SCHEMA

    rows = (pa.concat_tables([pq.read_table(f, schema=REQUEST_SCHEMA) for f in files])
            if files else REQUEST_SCHEMA.empty_table())
    phases_path = path / "phases.parquet"
    phases = pq.read_table(phases_path).to_pylist() if phases_path.is_file() else []
    return Run(path, manifest, summary, rows, phases)
