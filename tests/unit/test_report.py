import subprocess
import sys

import numpy as np
from support import write_fake_run

from perfray.analysis.report import write_report


def test_report_renders_facts_verdicts_and_figures_from_rows(tmp_path):
    rng = np.random.default_rng(1)
    run = write_fake_run(tmp_path / "ok", [rng.lognormal(np.log(4), 0.2, 2000) for _ in range(3)], n_gpus=[1, 2, 4])
    path, verdicts = write_report(run)
    text = path.read_text()
    assert [v["passed"] for v in verdicts] == [True, True, True]
    assert "Simulated GPUs" in text and "| 2 | p99_ms | <= 50 |" in text
    assert "## Scaling model" in text and "USL fit" in text
    assert "sustained QPS: goal" in text  # the seed's SLO table
    for name in ("latency_histogram", "latency_percentiles", "over_time", "schedule_lag", "scaling"):
        assert (run / f"{name}.png").is_file()


def test_report_exit_code_follows_must_pass_targets(tmp_path):
    good = write_fake_run(tmp_path / "good", [np.full(500, 3.0)])
    bad = write_fake_run(tmp_path / "bad", [np.full(500, 80.0)])
    cmd = [sys.executable, "-m", "perfray", "report"]
    assert subprocess.run([*cmd, str(good)], capture_output=True, timeout=120).returncode == 0
    out = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "✗ cell   0 p99_ms" in out.stdout
