"""Open a finished (or interrupted) run directory: manifest, summary, and its raw request rows cell by cell."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from perfray import SCHEMA_VERSION
from perfray.errors import UsageError
from perfray.results.frame import CellFrame


@dataclass
class Run:
    """A run as written by the sweep driver. Request rows stay on disk: a cell's are read a column at a time
    (``frame``), so a report on a run of tens of millions of rows holds one cell's few columns at once."""

    path: Path
    manifest: dict
    summary: list[dict]
    phases: list[dict] | None = None

    @property
    def n_rows(self) -> int:
        files = sorted((self.path / "requests").glob("cell-*/*.parquet"))
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)

    def frame(self, cell: int) -> CellFrame:
        return CellFrame.read(self.path, cell)

    def measured(self, cell: int) -> tuple[CellFrame, np.ndarray]:
        """The cell's rows and the mask of those in its measured phases."""
        frame = self.frame(cell)
        return frame, frame.isin("phase", self.measured_phases(cell))

    def latencies_ms(self, cell: int) -> np.ndarray:
        """Latencies (ms) of the cell's measured ok and timeout rows: what its percentiles are taken over."""
        frame, measured = self.measured(cell)
        timed = measured & frame.isin("status", ("ok", "timeout"))
        return frame.floats("latency_ns")[timed] / 1e6

    def measured_phases(self, cell: int) -> list[str]:
        """Names of the cell's measured phases, from its workload in the manifest."""
        from perfray.config import Workload

        workload = Workload.model_validate(self.manifest["cells"][cell]["workload"])
        return [p.name for p in workload.load.phase_plan() if p.measured]


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
    phases_path = path / "phases.parquet"
    phases = pq.read_table(phases_path).to_pylist() if phases_path.is_file() else []
    return Run(path, manifest, summary, phases)
