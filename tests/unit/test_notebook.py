"""notebooks/analysis.ipynb runs top to bottom against a run and agrees with the run's summary."""

from pathlib import Path

import numpy as np
import pytest
from support import REPO, write_fake_run

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")


def _execute(run: Path, tmp_path: Path, monkeypatch) -> str:
    monkeypatch.setenv("PERFRAY_RUN_DIR", str(run))
    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(Path(tmp_path))}}).execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_notebook_executes_against_a_run(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    run = write_fake_run(tmp_path / "nb-run", [rng.lognormal(np.log(3), 0.3, 1500) for _ in range(2)])
    outputs = _execute(run, tmp_path, monkeypatch)
    assert "every must-pass target met: True (2/2 checks passed)" in outputs
    assert "3,000 request rows" in outputs


def test_notebook_verdicts_are_the_runs_and_a_summary_that_disagrees_stops_it(tmp_path, monkeypatch):
    """The notebook's verdicts are perfray's (a cell over its p99 target fails there too), and its own
    recomputation of p50/p99 from the rows must agree with summary.parquet or it stops."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    slow = write_fake_run(tmp_path / "slow", [rng.lognormal(np.log(3), 0.3, 1500), np.full(1500, 80.0)])
    assert "every must-pass target met: False (1/2 checks passed)" in _execute(slow, tmp_path, monkeypatch)
    summary = pq.read_table(slow / "summary.parquet").to_pylist()
    summary[0]["p99_ms"] *= 1.5  # a summary that does not follow from its rows
    pq.write_table(pa.Table.from_pylist(summary), slow / "summary.parquet")
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="AssertionError"):
        _execute(slow, tmp_path, monkeypatch)
