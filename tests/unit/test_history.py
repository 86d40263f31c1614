"""``perfray history`` over a folder of runs written by the real writer, summary and manifest code: one series,
its only change point at the run where the system got slower, found again incrementally."""

import subprocess
import sys

import numpy as np
from support import write_fake_run

from perfray.history.index import index_runs


def test_twenty_runs_with_a_slower_system_midway_have_one_change_point_there(tmp_path):
    rng = np.random.default_rng(11)
    for i in range(22):
        slower = 1.15 if i >= 13 else 1.0  # from run 13 on, every request takes 15% longer
        write_fake_run(tmp_path / f"run-{i:02d}", [rng.lognormal(np.log(4.0), 0.25, 3000) * slower])
    out = subprocess.run([sys.executable, "-m", "perfray", "history", str(tmp_path), "--out", str(tmp_path / "h")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "22 runs; run 13 +" in out.stdout, out.stdout
    page = (tmp_path / "h" / "history.md").read_text()
    assert page.count("- at run ") == 1 and "(run-13)" in page
    assert len(list((tmp_path / "h").glob("trend-*-p99_ms.png"))) == 1
    # the p50 series finds the same step; no change on recall, which did not move
    assert "run 13" in subprocess.run([sys.executable, "-m", "perfray", "history", str(tmp_path), "--metric", "p50_ms",
                                       "--out", str(tmp_path / "h50")], capture_output=True, text=True).stdout
    recall = subprocess.run([sys.executable, "-m", "perfray", "history", str(tmp_path), "--metric", "recall_mean",
                             "--out", str(tmp_path / "hr")], capture_output=True, text=True).stdout
    assert "no change point" in recall


def test_the_index_reads_a_run_once_and_again_only_when_it_changed(tmp_path, monkeypatch):
    import perfray.history.index as index

    rng = np.random.default_rng(1)
    for i in range(3):
        write_fake_run(tmp_path / f"run-{i}", [rng.lognormal(1.0, 0.2, 200)])
    assert index_runs(tmp_path).num_rows == 3
    read = []
    original = index.run_rows
    monkeypatch.setattr(index, "run_rows", lambda run, manifest: read.append(run.name) or original(run, manifest))
    assert index_runs(tmp_path).num_rows == 3 and read == []
    (tmp_path / "run-1" / "manifest.json").touch()
    write_fake_run(tmp_path / "run-3", [rng.lognormal(1.0, 0.2, 200)])
    assert index_runs(tmp_path).num_rows == 4 and sorted(read) == ["run-1", "run-3"]


def test_a_runs_repeats_are_one_point_with_their_spread_as_its_interval():
    from perfray.history.index import per_run
    from perfray.history.report import series

    base = {"workload": "w", "hardware": "h", "search": -1}
    rows = [{**base, "run_id": "a", "time_unix_s": 1, "repeat": r, "p99_ms": v, "p99_ms_lo": v * 0.99,
             "p99_ms_hi": v * 1.01} for r, v in enumerate((4.0, 5.0, 6.25))]
    rows.append({**base, "run_id": "b", "time_unix_s": 2, "repeat": 0, "p99_ms": 5.0, "p99_ms_lo": 4.5,
                 "p99_ms_hi": 5.5})
    merged = {r["run_id"]: r for r in per_run(rows, "p99_ms")}
    a = merged["a"]
    assert a["repeats"] == 3 and abs(a["p99_ms"] - 5.0) < 1e-9  # the geometric mean of 4, 5, 6.25
    # t(0.975, 2) = 4.303 on the logs' standard error: far wider than one repeat's own +-1%
    assert a["p99_ms_lo"] < 3.0 and a["p99_ms_hi"] > 8.0
    assert merged["b"]["p99_ms_lo"] == 4.5 and "repeats" not in merged["b"]  # no repeats: its own interval
    [one] = series(rows, "p99_ms")
    assert [r["run_id"] for r in one["runs"]] == ["a", "b"]  # two points, not four
