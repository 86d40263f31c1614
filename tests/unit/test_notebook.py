"""notebooks/analysis.ipynb runs top to bottom against a run and agrees with the run's summary."""

from pathlib import Path

import numpy as np
import pytest
from support import REPO, write_fake_run

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")


def test_notebook_executes_against_a_run(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    run = write_fake_run(tmp_path / "nb-run", [rng.lognormal(np.log(3), 0.3, 1500) for _ in range(2)])
    monkeypatch.setenv("PERFRAY_RUN_DIR", str(run))
    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(Path(tmp_path))}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "every must-pass target met: True" in outputs
    assert "3,000 request rows" in outputs
