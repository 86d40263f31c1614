"""How often ``perfray history`` and its CI gate (``compare --baseline-history``) cry wolf, and how often they find a
real step, on series whose run-to-run noise is measured here: N repeats of one smoke cell (``--repeat``,
interleaved) give the spread of p50 and p99 between runs; 200 A/A series of 20 runs drawn with that spread
(lognormal) count the change points' false alarms, and the same series with a 10% step at run 12 count how often
the step is found there, exactly. The gate: 2,000 A/A gates, each judging a new run of 4 cells (the smoke config's)
against 10 earlier runs drawn with the same spread, count the gates that fail (exit 1); the same with every cell
of the new run 10% / 25% slower count the ones that catch it; and each real repeat judged against the others
(leave one out) counts the gate's alarms on the measured values themselves.

    python benchmarks/history_alarms.py [--repeats 8] [--series 200]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from perfray.history import gate
from perfray.history.changes import ALPHA, MAGNITUDE, change_points


def measured_spread(repeats: int) -> dict[str, float]:
    """Run-to-run CV (std of log) of p50 and p99 over ``repeats`` repeats of one smoke cell."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "perfray.sweep", "--quiet", "--results-dir", tmp, "--run-id", "r",
                        "--repeat", str(repeats), "--set", "sweep={}", "--set", "duration_s=4", "--set", "warmup_s=1",
                        "--set", "microbench.enabled=false", "--set", "targets=[]"], check=True, capture_output=True)
        summary = pq.read_table(Path(tmp) / "r" / "summary.parquet").to_pylist()
    return {m: np.array([r[m] for r in summary]) for m in ("p50_ms", "p99_ms")}


def _fails(earlier: np.ndarray, new: np.ndarray) -> bool:
    """Whether the gate fails a new run (one value per cell) against earlier runs (runs x cells): the rule of
    ``perfray.history.gate`` (shared alpha, magnitude; the runs here carry no interval)."""
    share = gate.ALPHA / new.size
    for cell in range(new.size):
        fit = gate.predict(earlier[:, cell], float(new[cell]), share, False)
        if fit["beyond"] and abs(fit["ratio"] - 1) >= gate.MAGNITUDE:
            return True
    return False


def gate_rates(cv: float, gates: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """(false alarms, a 10% slowdown caught, a 25% slowdown caught) over ``gates`` gates of 4 cells x 10 runs."""
    alarms = sum(_fails(rng.lognormal(0, cv, (10, 4)), rng.lognormal(0, cv, 4)) for _ in range(gates))
    caught = [sum(_fails(rng.lognormal(0, cv, (10, 4)), rng.lognormal(0, cv, 4) * step) for _ in range(gates))
              for step in (1.10, 1.25)]
    return alarms / gates, caught[0] / gates, caught[1] / gates


def leave_one_out(values: np.ndarray) -> int:
    """Gates failed when each real repeat is judged against the others."""
    return sum(_fails(np.delete(values, i)[:, None], values[i:i + 1]) for i in range(values.size))


def rates(cv: float, series: int, rng: np.random.Generator) -> tuple[float, float]:
    alarms = sum(bool(change_points(rng.lognormal(0.0, cv, 20))) for _ in range(series))
    found = 0
    for _ in range(series):
        values = rng.lognormal(0.0, cv, 20)
        values[12:] *= 1.10
        found += [c["index"] for c in change_points(values)] == [12]
    return alarms / series, found / series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--series", type=int, default=200)
    args = parser.parse_args()
    spread = measured_spread(args.repeats)
    rng = np.random.default_rng(0)
    print(f"change points: alpha {ALPHA:g} (permutation test of the best cut), magnitude >= {MAGNITUDE:.0%}")
    for metric, values in spread.items():
        cv = float(np.std(np.log(values), ddof=1))
        alarm, found = rates(cv, args.series, rng)
        print(f"{metric}: run-to-run spread {cv:.1%} (std of log, {args.repeats} repeats of one smoke cell); "
              f"{args.series} A/A series of 20 runs: false-alarm rate {alarm:.1%}; a 10% step at run 12 found "
              f"there {found:.0%} of the time")
    print(f"gate (compare --baseline-history): alpha {gate.ALPHA:g} per gate, magnitude >= {gate.MAGNITUDE:.0%}")
    for metric, values in spread.items():
        cv = float(np.std(np.log(values), ddof=1))
        alarm, ten, quarter = gate_rates(cv, 2000, rng)
        print(f"{metric}: 2,000 A/A gates (4 cells, 10 earlier runs, spread {cv:.1%}): false-alarm rate "
              f"{alarm:.2%}; all cells 10% slower caught {ten:.0%}, 25% slower {quarter:.0%}; the {values.size} "
              f"real repeats, each judged against the others: {leave_one_out(values)} alarms")
    print("rerun: python benchmarks/history_alarms.py")


if __name__ == "__main__":
    main()
