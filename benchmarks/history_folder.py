"""A folder of real runs with one change midway, as issue 24 asks: N runs of the smoke config's first cell (one
cell, short) against a local HTTP service (perfray's responder, replying after ``--delay-ms``), the service made
slower from run K on (``--slower-ms`` more per reply: a slower release of the system under test, which is not part
of the workload, so the runs stay one series). Then ``perfray history`` on the folder (its change points: one, at
run K, is the right answer) and the CI gate (``compare --baseline-history``) on run K-1 (unchanged: should pass)
and on run K (changed: should fail). Each run's p99 is printed.

    python benchmarks/history_folder.py [--runs 20] [--change-at 12] [--delay-ms 2] [--slower-ms 1]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from perfray.services.process import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[1]


class Responder:
    def __init__(self, delay_ms: float) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "perfray.services.http_responder", "--port",
                                      str(self.port), "--delay-ms", str(delay_ms)])
        wait_for_port(self.port, 20, "responder")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def perfray(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perfray", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--change-at", type=int, default=12)
    parser.add_argument("--delay-ms", type=float, default=2.0)
    parser.add_argument("--slower-ms", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; {args.runs} runs of the smoke config's first "
          f"cell ({args.seconds:g} s measured, http system at 500 QPS) against a local responder replying after "
          f"{args.delay_ms:g} ms, {args.slower_ms:g} ms slower from run {args.change_at}; "
          "python benchmarks/history_folder.py")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = None
        try:
            for i in range(args.runs):
                if i in (0, args.change_at):
                    if server is not None:
                        server.close()
                    server = Responder(args.delay_ms + (args.slower_ms if i >= args.change_at else 0.0))
                out = perfray("sweep", "--quiet", "--no-report", "--results-dir", str(folder), "--run-id",
                              f"run-{i:02d}", "--set", "sweep={}", "--set", "system=http",
                              "--set", f"stores.http.url=http://127.0.0.1:{server.port}/search",
                              "--set", "stores.http.ids_field=null", "--set", f"duration_s={args.seconds}",
                              "--set", "warmup_s=1", "--set", "microbench.enabled=false", "--set", "targets=[]")
                if out.returncode != 0:
                    raise SystemExit(f"run {i} failed ({out.returncode}): {out.stderr[-1500:]}")
                summary = pq.read_table(folder / f"run-{i:02d}" / "summary.parquet").to_pylist()[0]
                print(f"run-{i:02d}: p50 {summary['p50_ms']:.3f} ms, p99 {summary['p99_ms']:.3f} ms "
                      f"({summary['p99_ms_lo']:.3f}-{summary['p99_ms_hi']:.3f})", flush=True)
        finally:
            if server is not None:
                server.close()
        history = perfray("history", str(folder), "--out", str(folder / "h"))
        print(history.stdout.strip())
        for name, run in (("unchanged", args.change_at - 1), ("changed", args.change_at)):
            gate = perfray("compare", "--baseline-history", str(folder), str(folder / f"run-{run:02d}"))
            print(f"gate on run-{run:02d} ({name}): exit {gate.returncode}: {gate.stdout.strip()}")
    print("rerun: python benchmarks/history_folder.py")


if __name__ == "__main__":
    main()
