"""``perfray compare --baseline-history``: a new run judged against the earlier runs of its series. It passes an
unchanged build, fails a slower one, and cries wolf at the rate it is set to."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
from support import write_fake_run

from perfray.history.gate import predict


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("history")
    rng = np.random.default_rng(7)
    for i in range(16):
        slower = 1.15 if i >= 13 else 1.0  # from run 13 on, every request takes 15% longer
        write_fake_run(root / f"run-{i:02d}", [rng.lognormal(np.log(4.0), 0.25, 3000) * slower])
    return root


def _gate(root, run, *extra):
    return subprocess.run([sys.executable, "-m", "perfray", "compare", "--baseline-history", str(root), str(run),
                           *extra], capture_output=True, text=True, timeout=120)


def test_the_gate_passes_an_unchanged_run_and_fails_the_slower_one(runs):
    same = _gate(runs, runs / "run-12")  # judged against runs 0-11: the ones before it
    assert same.returncode == 0 and "over 12 runs" in same.stdout and "WITHIN NOISE" in same.stdout, same.stdout
    slower = _gate(runs, runs / "run-13")  # 15% slower than runs 0-12
    assert slower.returncode == 1 and "over 13 runs" in slower.stdout and "REGRESSION" in slower.stdout, slower.stdout
    ratio = float(slower.stdout.split("(")[1].split("x")[0])
    assert ratio > 1.10 and ratio < 1.20
    # the p50 moved too; achieved QPS did not (every run served its schedule)
    assert _gate(runs, runs / "run-13", "--metric", "p50_ms,achieved_qps").stdout.count("REGRESSION") == 1
    # a change smaller than --magnitude is not a regression, however sure
    assert _gate(runs, runs / "run-13", "--magnitude", "0.5").returncode == 0


def test_a_series_too_short_is_not_judged_and_a_bad_call_is_one_line(runs, tmp_path):
    for name in ("run-00", "run-01", "run-13"):
        shutil.copytree(runs / name, tmp_path / name)
    out = _gate(tmp_path, tmp_path / "run-13")
    assert out.returncode == 0 and "2 earlier runs: too few to judge" in out.stdout, out.stdout
    two = subprocess.run([sys.executable, "-m", "perfray", "compare", "--baseline-history", str(tmp_path),
                          str(tmp_path / "run-00"), str(tmp_path / "run-01")], capture_output=True, text=True)
    assert two.returncode == 2 and len(two.stderr.strip().splitlines()) == 1 and "one run" in two.stderr
    # a magnitude below 0 would count every change as large enough; a speedup goal <= 0 met by every candidate
    negative = _gate(tmp_path, tmp_path / "run-13", "--magnitude", "-0.1")
    assert negative.returncode == 2 and negative.stderr.strip() == (
        "perfray: error: --magnitude: expected a share >= 0 (0.05: a 5% change), got -0.1"), negative.stderr
    for goal in ("0", "nan"):
        out = subprocess.run([sys.executable, "-m", "perfray", "compare", str(tmp_path / "run-00"),
                              str(tmp_path / "run-13"), "--min-speedup", goal], capture_output=True, text=True)
        assert out.returncode == 2 and out.stderr.strip().endswith(
            f"--min-speedup: expected a ratio above 0 (1.5: 50% better; 0.9: at most 10% worse), got {float(goal)}")


def test_the_prediction_bound_cries_wolf_at_its_alpha_and_finds_a_real_step():
    rng = np.random.default_rng(3)
    trials = 4000
    alarms = sum(predict(rng.lognormal(0, 0.1, 10), float(rng.lognormal(0, 0.1)), 0.01, False)["beyond"]
                 for _ in range(trials))
    assert 0.004 < alarms / trials < 0.02  # alpha 0.01, one-sided
    found = sum(predict(rng.lognormal(0, 0.05, 10), float(rng.lognormal(0, 0.05)) * 1.3, 0.01, False)["beyond"]
                for _ in range(500))
    assert found / 500 > 0.9
    # for a metric where more is better, the regression side is the low one
    assert predict(np.full(8, 100.0) * rng.lognormal(0, 0.02, 8), 70.0, 0.01, True)["beyond"]
    assert not predict(np.full(8, 100.0) * rng.lognormal(0, 0.02, 8), 130.0, 0.01, True)["beyond"]
