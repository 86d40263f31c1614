"""Two runs compared on their whole latency distributions: a p99.9-only regression is found, while the p50 (the
scalar most dashboards watch) says nothing moved; identical distributions are called no different."""

import re
import subprocess
import sys

import numpy as np
from support import write_fake_run

from perfray.analysis.distributions import quantile_shifts


def _tail_slower(rng, n=40_000):
    base = rng.lognormal(np.log(4.0), 0.25, n)
    new = rng.lognormal(np.log(4.0), 0.25, n)
    worst = new >= np.quantile(new, 0.995)
    new[worst] *= 3  # the slowest 0.5% of requests take 3x longer: p99.9 moves, p50 and p99 do not
    return base, new


def test_a_tail_only_regression_is_found_at_its_quantile_and_nowhere_else():
    base, new = _tail_slower(np.random.default_rng(1))
    got = {s["q"]: s for s in quantile_shifts(base, new)}
    assert [got[q]["verdict"] for q in (0.5, 0.9, 0.99, 0.999)] == ["no difference", "no difference",
                                                                    "no difference", "slower"]
    assert got[0.999]["ratio"] > 2 and got[0.999]["new_ci"][0] > got[0.999]["base_ci"][1]
    assert [s["verdict"] for s in quantile_shifts(new, base)][-1] == "faster"
    # too few samples for a p99.9 interval: undecided, not a verdict
    assert quantile_shifts(base[:500], new[:500])[-1]["verdict"] == "undecided"


def test_identical_distributions_are_rarely_called_different():
    rng = np.random.default_rng(2)
    moved = sum(any(s["verdict"] in ("slower", "faster") for s in
                    quantile_shifts(rng.lognormal(1, 0.3, 1000), rng.lognormal(1, 0.3, 1000)))
                for _ in range(200))
    assert moved <= 10  # all four quantiles of both runs hold together at 95%: at most ~5% of pairs


def test_compare_shows_the_tail_regression_that_its_p50_misses(tmp_path):
    base, new = _tail_slower(np.random.default_rng(3), 20_000)
    write_fake_run(tmp_path / "base", [base])
    write_fake_run(tmp_path / "new", [new])
    out = subprocess.run([sys.executable, "-m", "perfray", "compare", str(tmp_path / "base"), str(tmp_path / "new"),
                          "--metric", "p50_ms", "--min-speedup", "0.9"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr  # on p50 the candidate is as fast: it meets 0.9x
    assert re.search(r"p50 [01]\.\d\dx no difference", out.stdout) and re.search(r"p99\.9 \d\.\d\dx slower", out.stdout)
    page = (tmp_path / "new" / "comparison.md").read_text()
    assert "## Whole distributions" in page and "| p99.9 |" in page and "| slower |" in page
