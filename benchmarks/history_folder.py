"""A folder of real runs with one change midway, as issue 24 asks: N runs of the smoke config's first cell (one
cell, short), the search made slower from run K on (``search.service_ms_per_query``: each search actor spends that
much longer per query, in arrival order: a slower backend). Then ``perfray history`` on the folder (its change
points, which should be one, at run K) and the CI gate (``compare --baseline-history``) on run K-1 (unchanged:
should pass) and on run K (changed: should fail).

    python benchmarks/history_folder.py [--runs 20] [--change-at 12] [--slower-ms 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def perfray(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perfray", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--change-at", type=int, default=12)
    parser.add_argument("--slower-ms", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; {args.runs} runs of the smoke config's first "
          f"cell ({args.seconds:g} s measured), search {args.slower_ms:g} ms slower per query from run "
          f"{args.change_at}; python benchmarks/history_folder.py")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i in range(args.runs):
            slower = args.slower_ms if i >= args.change_at else 0.0
            out = perfray("sweep", "--quiet", "--no-report", "--results-dir", str(folder), "--run-id", f"run-{i:02d}",
                          "--set", "sweep={}", "--set", f"duration_s={args.seconds}", "--set", "warmup_s=1",
                          "--set", "microbench.enabled=false", "--set", "targets=[]",
                          "--set", f"search.service_ms_per_query={slower}")
            if out.returncode != 0:
                raise SystemExit(f"run {i} failed ({out.returncode}): {out.stderr[-1500:]}")
            time.sleep(1.0)  # distinct creation times
        history = perfray("history", str(folder), "--out", str(folder / "h"))
        print(history.stdout.strip())
        for name, run in (("unchanged", args.change_at - 1), ("changed", args.change_at)):
            gate = perfray("compare", "--baseline-history", str(folder), str(folder / f"run-{run:02d}"))
            print(f"gate on run-{run:02d} ({name}): exit {gate.returncode}: {gate.stdout.strip()}")
    print("rerun: python benchmarks/history_folder.py")


if __name__ == "__main__":
    main()
