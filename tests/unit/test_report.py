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


def test_a_cell_whose_generator_fell_behind_is_flagged_and_only_that_one(tmp_path):
    """Cell 1's requests left 2-6 ms after they were due (1 ms micro-batch window): the generator limited it.
    Cell 0's lag stays inside the window: not flagged."""
    rng = np.random.default_rng(3)
    lat = [rng.uniform(5, 9, 2000), rng.uniform(5, 9, 2000)]
    lag = [rng.uniform(0.0, 0.9, 2000), rng.uniform(3.0, 7.0, 2000)]
    run = write_fake_run(tmp_path / "run", lat, lag_ms_by_cell=lag)
    report, _ = write_report(run)
    text = report.read_text()
    section = text.split("## Generator-limited cells", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| cell")]
    assert [line.split("|")[1].strip() for line in table] == ["1"]
    expected = np.percentile(lag[1] - 1.0, 99)
    assert abs(float(table[0].split("|")[6]) - expected) < 0.01 and "not calibrated" in table[0]

    quiet = write_fake_run(tmp_path / "quiet", lat, lag_ms_by_cell=[lag[0], lag[0]])
    assert "Generator-limited" not in write_report(quiet)[0].read_text()


def test_a_cell_that_asks_a_load_actor_for_over_half_its_calibrated_ceiling_is_flagged(tmp_path):
    """1,000 QPS on one load actor: over half of a 1,500/s ceiling (cell 1), not of a 4,000/s one (cell 0),
    even though neither fell behind."""
    rng = np.random.default_rng(4)
    lat = [rng.uniform(5, 9, 2000), rng.uniform(5, 9, 2000)]
    run = write_fake_run(tmp_path / "run", lat, ceiling_qps_by_cell=[4000.0, 1500.0])
    text = write_report(run)[0].read_text()
    section = text.split("## Generator-limited cells", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| cell")]
    assert [line.split("|")[1].strip() for line in table] == ["1"]
    assert "67% of 1,500/s" in table[0] and "| async |" in table[0]
