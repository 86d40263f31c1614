import numpy as np
import pytest
from support import write_fake_run

from perfray.analysis.compare import compare
from perfray.errors import UsageError


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(0)
    fast = [rng.lognormal(np.log(2.0), 0.3, 3000) for _ in range(2)]
    base = write_fake_run(tmp_path / "base", [f * 2.0 for f in fast])
    cand = write_fake_run(tmp_path / "cand", fast)
    return base, cand


def test_twice_as_fast_candidate_has_speedup_2_with_a_tight_ci(runs):
    base, cand = runs
    path, rows = compare(base, cand, "p99_ms", min_speedup=1.5)
    for r in rows:
        assert r["point"] == pytest.approx(2.0, rel=1e-5)
        assert r["low"] > 1.8 and r["low"] <= 2.0 <= r["high"] < 2.2
        assert r["verdict"] == "meets"
    text = path.read_text()
    assert "| 0 | 1 | 1,000 |" in text and "meets" in text and "Regressions (candidate significantly worse): none" in text


def test_slower_candidate_is_flagged_as_regression(runs):
    base, cand = runs
    _, rows = compare(cand, base, "p50_ms", min_speedup=1.5)
    assert all(r["verdict"] == "REGRESSION" and r["point"] == pytest.approx(0.5, rel=1e-5) for r in rows)


def test_runs_whose_cells_do_not_match_are_refused(tmp_path):
    a = write_fake_run(tmp_path / "a", [np.ones(100)])
    b = write_fake_run(tmp_path / "b", [np.ones(100), np.ones(100)])
    with pytest.raises(UsageError, match="cells don't match: 1 cells in"):
        compare(a, b)
    c = write_fake_run(tmp_path / "c", [np.ones(100)], n_gpus=[2])
    with pytest.raises(UsageError, match="cell 0 has n_gpus=1 in the baseline and 2 in the candidate"):
        compare(a, c)
