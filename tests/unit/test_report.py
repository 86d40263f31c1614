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
    # every cell served the 1,000 QPS offered: latency vs GPUs, and no efficiency or USL fit from the offered load
    assert "## Scaling model" in text and "Throughput was bounded by the offered load: 3 of 3 cells" in text
    assert "USL fit (R²" not in text and "| GPUs | offered QPS | achieved QPS | p50 ms | p99 ms |" in text
    # no slo: in the config, no SLO table: the report never invents goals
    assert "Service-level objectives" not in text and "| GPU search busy | GPU util (NVML) |" in text
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


def test_report_figures_plot_the_rows_own_values(tmp_path, monkeypatch):
    """Each figure's plotted data, read back from the matplotlib objects, is what the raw rows say."""
    from perfray.analysis import figures

    kept = {}

    def keep(fig, out, name):
        kept[name] = fig
        return out / name

    monkeypatch.setattr(figures, "_save", keep)
    rng = np.random.default_rng(7)
    lat = [rng.lognormal(np.log(4), 0.3, 2000), rng.lognormal(np.log(8), 0.3, 2000), rng.lognormal(np.log(2), 0.3, 2000)]
    run = write_fake_run(tmp_path / "fig", lat, n_gpus=[1, 2, 4])
    write_report(run)
    qs = 1 - np.logspace(0, -4, 200)[:-1]
    spectrum = kept["latency_percentiles.png"].axes[0].lines
    for line, values in zip(spectrum, lat, strict=False):
        assert np.allclose(line.get_ydata(), np.percentile(values, qs * 100))
    assert len(spectrum) == 4  # a line per cell, and the SLO line
    over = kept["over_time.png"].axes[0].lines
    offered = [line.get_ydata() for line in over if line.get_linestyle() == ":"]
    assert [int(np.sum(o)) for o in offered] == [len(values) for values in lat]
    p99 = kept["over_time.png"].axes[1].lines
    assert np.nanmax(p99[0].get_ydata()) <= np.max(lat[0]) and np.nanmin(p99[0].get_ydata()) >= np.min(lat[0])
    import pyarrow.parquet as pq

    summary = pq.read_table(run / "summary.parquet").to_pylist()
    [qps_line] = kept["scaling.png"].axes[0].lines
    assert list(qps_line.get_xdata()) == [1, 2, 4]
    assert np.allclose(qps_line.get_ydata(), [r["achieved_qps"] for r in summary])


def test_a_run_that_did_not_finish_never_reports_success(tmp_path, capsys):
    """A driver that failed after its first cell leaves verdicts for that cell only; they pass, but the run did not:
    ``report`` says so in the report and exits 3, never 0."""
    import json

    from perfray import cli

    run = write_fake_run(tmp_path / "cut", [np.full(500, 3.0), np.full(500, 3.0)])
    doc = json.loads((run / "manifest.json").read_text())
    doc.update(status="failed", error="RuntimeError: the driver broke")
    doc["cells"][1]["status"] = "pending"
    (run / "manifest.json").write_text(json.dumps(doc))
    assert cli.main(["report", str(run)]) == 3
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (f"perfray: error: {run}: the run is failed (RuntimeError: the driver broke): 1 of 2 cells ran; "
                    "the others were never judged")
    assert "> **Not finished.** The run is failed (RuntimeError: the driver broke): 1 of 2 cells ran" in (
        run / "report.md").read_text()
    for cell in doc["cells"]:
        cell["status"] = "pending"
    doc["status"] = "not_started"
    (run / "manifest.json").write_text(json.dumps(doc))
    assert cli.main(["report", str(run)]) == 3
    assert capsys.readouterr().err.strip().endswith("the driver broke): nothing was measured")
    doc.update(status="complete")
    (run / "manifest.json").write_text(json.dumps(doc))
    assert cli.main(["report", str(run)]) == 0 and "Not finished" not in (run / "report.md").read_text()
