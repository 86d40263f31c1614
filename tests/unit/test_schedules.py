import numpy as np
import pytest

from perfray.load.profiles import MIXES, assign_ops, op_mix
from perfray.load.schedules import PhaseRates, arrival_offsets_ns


def offsets(phases, arrival, seed=0):
    return arrival_offsets_ns(phases, arrival, np.random.default_rng(seed))


def test_constant_rate_gives_exactly_rate_times_duration_evenly_spaced():
    t, phase = offsets([PhaseRates("s", 2.0, 1000, 1000, True)], "constant")
    assert t.size == 2000
    gaps = np.diff(t)
    assert np.allclose(gaps, 1_000_000, atol=1)
    assert t[0] >= 0 and t[-1] < 2_000_000_000
    assert (phase == 0).all()


def test_poisson_offers_exactly_the_rate_with_exponential_gaps():
    from scipy import stats

    t, _ = offsets([PhaseRates("s", 20.0, 5000, 5000, True)], "poisson")
    assert t.size == 100_000  # conditioned on its count: the configured rate, exactly
    gaps = np.diff(t) / 1e9
    assert gaps.mean() == pytest.approx(1 / 5000, rel=0.01)
    assert stats.kstest(gaps, "expon", args=(0, 1 / 5000)).pvalue > 0.001  # exponential gaps
    assert stats.kstest(gaps, "uniform", args=(0, 2 / 5000)).pvalue < 1e-6  # (a check that can fail)
    assert (np.diff(t) >= 0).all()


def test_ramp_is_linear_in_rate():
    t, _ = offsets([PhaseRates("ramp", 10.0, 0, 2000, True)], "constant")
    assert t.size == 10_000  # mean rate 1000 over 10 s
    first_half = (t < 5e9).sum()
    assert first_half == pytest.approx(2500, abs=2)  # integral of the ramp over the first half


def test_phases_are_consecutive_and_labelled():
    phases = [PhaseRates("warmup", 1.0, 100, 100, False), PhaseRates("burst", 0.5, 1000, 1000, True),
              PhaseRates("pause", 1.0, 0, 0, True)]
    t, phase = offsets(phases, "constant")
    assert (phase == 0).sum() == 100 and (phase == 1).sum() == 500 and (phase == 2).sum() == 0
    assert t[phase == 1].min() >= 1_000_000_000 and t[phase == 1].max() < 1_500_000_000


def test_op_mix_weights_and_k_cap():
    ops = op_mix("complex", 10, 50)
    assert [o.k for o in ops] == [10, 50, 10, 50]
    assert sum(o.weight for o in ops) == pytest.approx(1.0)
    picks = assign_ops(100_000, ops, np.random.default_rng(0))
    shares = np.bincount(picks, minlength=len(ops)) / picks.size
    assert np.allclose(shares, [w for w, _, _ in MIXES["complex"]], atol=0.01)


@pytest.mark.parametrize("arrival, cv", [("gamma:0.5", 0.5), ("gamma:3", 3.0), ("pareto:3", 1 / np.sqrt(3))])
def test_bursty_arrivals_keep_the_rate_and_count_with_the_configured_burstiness(arrival, cv):
    t, _ = offsets([PhaseRates("s", 20.0, 2000, 2000, True)], arrival)
    assert t.size == 40_000 and 0 <= t[0] and t[-1] <= 20_000_000_000 and (np.diff(t) >= 0).all()
    gaps = np.diff(t).astype(np.float64)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.15)
    assert (offsets([PhaseRates("s", 20.0, 2000, 2000, True)], arrival)[0] == t).all()  # seeded


def test_gamma_bursts_are_bursts_not_poisson():
    from scipy import stats

    t, _ = offsets([PhaseRates("s", 10.0, 5000, 5000, True)], "gamma:3")
    gaps = np.diff(t) / 1e9
    assert stats.kstest(gaps, "expon", args=(0, gaps.mean())).pvalue < 1e-6
    counts = np.bincount((t // 10_000_000).astype(np.int64))  # requests per 10 ms window
    assert counts.std() / counts.mean() > 2 * (1 / np.sqrt(50))  # well above a Poisson count's spread


def test_heavy_tailed_pareto_has_rare_long_silences():
    t, _ = offsets([PhaseRates("s", 10.0, 5000, 5000, True)], "pareto:1.5")
    gaps = np.diff(t).astype(np.float64)
    assert gaps.max() > 50 * gaps.mean() and np.median(gaps) < 0.7 * gaps.mean()


def test_bursty_arrivals_follow_a_ramp():
    t, _ = offsets([PhaseRates("r", 10.0, 100, 1900, True)], "gamma:2")
    assert t.size == 10_000
    first, last = (t < 1e9).sum(), (t >= 9e9).sum()
    assert 150 < first < 450 and 1500 < last < 2200  # ~190 and ~1810 expected


def test_a_trace_is_replayed_at_the_cells_rate(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    recorded = np.cumsum(rng.exponential(1.0, 500) * np.repeat(rng.choice([0.05, 3.0], 50), 10))
    csv = tmp_path / "trace.csv"
    csv.write_text("offset_s\n" + "\n".join(f"{v:.6f}" for v in recorded))
    pq.write_table(pa.table({"t": recorded}), tmp_path / "trace.parquet")
    for path in (csv, tmp_path / "trace.parquet"):
        t, _ = offsets([PhaseRates("s", 2.0, 200, 200, True)], f"trace:{path}")
        assert t.size == 400 and t[-1] <= 2_000_000_000
        # the recorded pattern, scaled: its gaps are the trace's gaps times one factor (the first request comes
        # one recorded gap after the phase starts)
        ratio = np.diff(t)[:300] / np.diff(recorded)[1:301]
        assert ratio.std() / ratio.mean() < 0.01
    t, _ = offsets([PhaseRates("s", 10.0, 200, 200, True)], f"trace:{csv}")  # 2,000 > 500: repeated
    assert t.size == 2000 and (np.diff(t) >= 0).all()


def test_bad_arrivals_are_one_line_config_errors(tmp_path):
    from perfray.config import load_config
    from perfray.errors import UsageError

    for value, words in (("gamma:0", "coefficient of variation"), ("pareto:0.9", "alpha > 1"),
                         ("weibull", "expected constant, poisson"),
                         (f"trace:{tmp_path / 'none.csv'}", "cannot read the trace")):
        with pytest.raises(UsageError, match=f"load.arrival.*{words}"):
            load_config(None, [f"load.arrival={value}"])
    (tmp_path / "one.csv").write_text("5\n")
    with pytest.raises(UsageError, match="at least two"):
        load_config(None, [f"load.arrival=trace:{tmp_path / 'one.csv'}"])


def test_zipf_popularity_over_a_seeded_order_of_the_pool():
    from perfray.load.profiles import query_rows

    n, pool = 200_000, 5_000
    uniform = np.bincount(query_rows(n, pool, "uniform", np.random.default_rng(1)), minlength=pool)
    assert uniform.max() < 3 * n / pool
    rows = query_rows(n, pool, "zipf:1.1", np.random.default_rng(1))
    counts = np.sort(np.bincount(rows, minlength=pool))[::-1]
    expected = 1.0 / np.arange(1, pool + 1) ** 1.1
    expected *= n / expected.sum()
    assert counts[:5] == pytest.approx(expected[:5], rel=0.05)  # rank r asked with weight 1 / r**1.1
    popular = np.argsort(np.bincount(rows, minlength=pool))[::-1][:20]
    assert popular.max() > pool // 2  # spread over the pool, not rows 0..19
    assert (query_rows(n, pool, "zipf:1.1", np.random.default_rng(1)) == rows).all()


def test_bad_query_skew_is_a_config_error():
    from perfray.config import load_config
    from perfray.errors import UsageError

    for value in ("zipf", "zipf:0", "zipf:x", "pareto:2"):
        with pytest.raises(UsageError, match="load.query_skew.*expected uniform or zipf"):
            load_config(None, [f"load.query_skew={value}"])
