"""Peak memory of the end-of-cell summary (the driver's ``_summarize``: the cell's summary, its phases and its
per-node table) per million request rows, read as the driver reads them (``CellFrame``: a column at a time)
side by side with the whole Arrow table that the driver read before (``read_cell``), on cells of 1M and 4M rows.

Each measurement runs in a fresh process that imports everything first; the peak is the process's RSS high
water mark (sampled every ms) above its RSS just before reading. The slope between the two sizes is the cost
per million rows; the intercept is fixed overhead (Parquet reader, thread pools).

    python benchmarks/summary_memory.py [--sizes 1000000,4000000] [--before-src DIR]

``--before-src DIR``: also measure an older perfray checkout's summary on the same rows (``git worktree add DIR
9e9f137``: the driver before the column-wise read), imported from DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, threading, time
import psutil
import scipy.stats  # noqa: F401  (imported before the baseline, as in the driver)
from pathlib import Path
from perfray.analysis.cells import summarize_phases
from perfray.analysis.nodes import cell_node_table
from perfray.config import LoadSpec, Workload
from perfray.results.writer import read_cell

run_dir, how = Path(sys.argv[1]), sys.argv[2]
if how == "frame":
    from perfray.results.frame import CellFrame
proc = psutil.Process()
peak = [0]
def sample():
    while True:
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.001)
cell = Workload(load=LoadSpec(phases=[{"name": "warmup", "duration_s": 10, "measured": False},
                                      {"name": "sustained", "duration_s": 90}], target_qps=10_000))
base = proc.memory_info().rss
peak[0] = base
threading.Thread(target=sample, daemon=True).start()
t0 = time.perf_counter()
rows = CellFrame.read(run_dir, 0) if how == "frame" else read_cell(run_dir, 0)
row, _ = summarize_phases(rows, cell, 0, "complete", 1_795_000_000_000_000_000, 2**62, {})
cell_node_table(rows, cell, {})
seconds = time.perf_counter() - t0
time.sleep(0.01)
print(json.dumps({"peak_mb": (peak[0] - base) / 1e6, "seconds": seconds, "p99_ms": row["p99_ms"]}))
"""


def measure(run_dir: Path, how: str, src: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": src} if src else None
    out = subprocess.run([sys.executable, "-c", CHILD, str(run_dir), "table" if src else how], capture_output=True,
                         text=True, check=True, env=env, cwd=src or None)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,4000000")
    parser.add_argument("--before-src", help="an older perfray checkout to measure beside (its table path)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    sys.path.insert(0, str(Path(__file__).parent))
    from analysis import write_rows

    results: dict[str, dict[int, dict]] = {"frame": {}, "table": {}, **({"before": {}} if args.before_src else {})}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            run_dir = Path(tmp) / f"rows-{n}"
            (run_dir / "requests").mkdir(parents=True)
            write_rows(run_dir, n, 1)
            for how in results:
                results[how][n] = r = measure(run_dir, how, args.before_src if how == "before" else None)
                print(f"{n:>10,} rows  {how:5}: peak +{r['peak_mb']:6.0f} MB  {r['seconds']:5.2f} s  "
                      f"p99 {r['p99_ms']:.4f} ms", flush=True)
    for n in sizes:  # same rows, same answer
        assert all(abs(results["frame"][n]["p99_ms"] - by[n]["p99_ms"]) < 1e-9 for by in results.values())
    lo, hi = min(sizes), max(sizes)
    for how, by in results.items():
        slope = (by[hi]["peak_mb"] - by[lo]["peak_mb"]) / ((hi - lo) / 1e6)
        print(f"{how}: {slope:.0f} MB per million rows (slope {lo:,} -> {hi:,} rows), "
              f"{by[lo]['peak_mb'] - slope * lo / 1e6:.0f} MB fixed")
    frame = (results["frame"][hi]["peak_mb"] - results["frame"][lo]["peak_mb"]) / ((hi - lo) / 1e6)
    print(f"goal <= 100 MB per million rows -> {'met' if frame <= 100 else 'missed'}")
    print("rerun: python benchmarks/summary_memory.py")


if __name__ == "__main__":
    main()
