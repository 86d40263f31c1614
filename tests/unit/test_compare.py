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
    path, rows = compare(base, cand, "p50_ms", min_speedup=1.5)
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


def _with_repeats(path, repeats):
    """Relabel a fake run's cells as ``repeats`` repeats of each grid cell (interleaved, as the driver runs them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from perfray.analysis.repeats import add_repeat_spread

    summary = pq.read_table(path / "summary.parquet").to_pylist()
    grid = len(summary) // repeats
    for row in summary:
        row["base_cell"], row["repeat"] = row["cell"] % grid, row["cell"] // grid
    add_repeat_spread(summary)
    pq.write_table(pa.Table.from_pylist(summary), path / "summary.parquet")
    return path


def _run_of(tmp_path, name, scales, rng):
    return write_fake_run(tmp_path / name, [rng.lognormal(np.log(2.0), 0.3, 3000) * s for s in scales])


def test_a_tail_percentile_gets_no_verdict_without_repeats(runs):
    base, cand = runs
    _, rows = compare(base, cand, "p99_ms")
    assert all(r["verdict"].startswith("no verdict") and "within one run" in r["method"] for r in rows)
    assert rows[0]["point"] == pytest.approx(2.0, rel=1e-5)  # the figure is still shown


def test_between_run_noise_decides_with_repeats(tmp_path):
    """Each run's level moves by ~15% (a shared VM): an A/A pair must not be flagged although the within-run
    bootstrap would call it significant; a candidate twice as slow still is."""
    rng = np.random.default_rng(11)
    levels = lambda: np.exp(rng.normal(0, 0.15, 3))  # noqa: E731
    a = _with_repeats(_run_of(tmp_path, "a", levels(), rng), 3)
    a2 = _with_repeats(_run_of(tmp_path, "a2", levels(), rng), 3)
    slow = _with_repeats(_run_of(tmp_path, "slow", 2 * levels(), rng), 3)
    [same] = compare(a, a2, "p99_ms")[1]
    assert same["verdict"] == "below target" and "3 vs 3 repeats" in same["method"]
    [worse] = compare(a, slow, "p99_ms")[1]
    assert worse["verdict"] == "REGRESSION" and 0.3 < worse["point"] < 0.8
    [better] = compare(slow, a, "p99_ms", min_speedup=1.2)[1]
    assert better["verdict"] == "meets"
    too_few = _with_repeats(_run_of(tmp_path, "two", levels()[:2], rng), 2)
    [r] = compare(too_few, a, "p99_ms")[1]
    assert r["verdict"].startswith("no verdict") and "2 vs 3 repeats" in r["method"]
    [r] = compare(too_few, a, "p50_ms")[1]
    assert not r["verdict"].startswith("no verdict")  # the median may be judged with fewer


def test_repeat_spread_in_every_summary_row(tmp_path):
    import pyarrow.parquet as pq

    rng = np.random.default_rng(12)
    run = _with_repeats(_run_of(tmp_path, "r", [1.0, 1.0, 1.5, 1.5], rng), 2)  # 2 grid cells x 2 repeats
    summary = pq.read_table(run / "summary.parquet").to_pylist()
    assert [r["repeats"] for r in summary] == [2, 2, 2, 2]
    p99 = [r["p99_ms"] for r in summary]
    assert summary[0]["p99_ms_repeat_sd"] == pytest.approx(np.std([p99[0], p99[2]], ddof=1))
    assert summary[0]["p99_ms_repeat_sd"] == summary[2]["p99_ms_repeat_sd"] > 0.2


def test_between_run_intervals_hold_their_level_in_a_a_and_catch_a_2x_slowdown():
    """400 simulated A/A pairs (3 repeats a side, run levels moving ~15%): the 95% interval excludes 1 in about
    5% of them; a candidate twice as slow is flagged in nearly all."""
    from perfray.analysis.repeats import between_runs

    rng = np.random.default_rng(13)

    def run(scale):
        return list(scale * np.exp(rng.normal(0, 0.15, 3)) * rng.uniform(0.98, 1.02, 3))

    same = [between_runs(run(4.0), run(4.0), False) for _ in range(400)]
    wrong = sum(not (s["low"] <= 1 <= s["high"]) for s in same) / len(same)
    assert wrong <= 0.08, wrong
    slow = [between_runs(run(4.0), run(8.0), False) for _ in range(400)]
    assert sum(s["high"] < 1 for s in slow) / len(slow) >= 0.9


def test_a_run_compared_with_itself_or_its_copy_is_refused(runs, tmp_path):
    import shutil

    base, _ = runs
    with pytest.raises(UsageError, match="the same run as the baseline"):
        compare(base, base)
    copy = shutil.copytree(base, tmp_path / "copy")
    with pytest.raises(UsageError, match=r"copy: the same run as the baseline .*run_id 'base'"):
        compare(base, copy)
