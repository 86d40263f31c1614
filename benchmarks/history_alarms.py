"""How often ``perfray history`` cries wolf, and how often it finds a real step, on series whose run-to-run noise
is measured here: N repeats of one smoke cell (``--repeat``, interleaved) give the spread of p50 and p99 between
runs; 200 A/A series of 20 runs drawn with that spread (lognormal) count the false alarms, and the same series
with a 10% step at run 12 count how often the step is found there, exactly.

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

from perfray.history.changes import ALPHA, MAGNITUDE, change_points


def measured_spread(repeats: int) -> dict[str, float]:
    """Run-to-run CV (std of log) of p50 and p99 over ``repeats`` repeats of one smoke cell."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "perfray.sweep", "--quiet", "--results-dir", tmp, "--run-id", "r",
                        "--repeat", str(repeats), "--set", "sweep={}", "--set", "duration_s=4", "--set", "warmup_s=1",
                        "--set", "microbench.enabled=false", "--set", "targets=[]"], check=True, capture_output=True)
        summary = pq.read_table(Path(tmp) / "r" / "summary.parquet").to_pylist()
    return {m: float(np.std(np.log([r[m] for r in summary]), ddof=1)) for m in ("p50_ms", "p99_ms")}


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
    for metric, cv in spread.items():
        alarm, found = rates(cv, args.series, rng)
        print(f"{metric}: run-to-run spread {cv:.1%} (std of log, {args.repeats} repeats of one smoke cell); "
              f"{args.series} A/A series of 20 runs: false-alarm rate {alarm:.1%}; a 10% step at run 12 found "
              f"there {found:.0%} of the time")
    print("rerun: python benchmarks/history_alarms.py")


if __name__ == "__main__":
    main()
