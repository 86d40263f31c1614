"""Memory over a long run: RSS of the driver, the load actors and the GPU search actors, sampled while one sweep
cell runs at a steady rate, and each process's growth after warm-up (MB/min and % of its RSS then).

    python benchmarks/soak.py [--minutes 5] [--qps 1000] [--every-s 10] [--warmup-s 60]

Goal: flat within ±10% after warm-up over a 10-minute sustained cell.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

import psutil

ROLES = (("load actor", "LoadActorBody"), ("GPU actor", "GpuSearchActorBody"))


def sample(driver: psutil.Process) -> dict[str, float]:
    """RSS (MB) per role: the driver, and the largest process of each actor kind."""
    out = {"driver": driver.memory_info().rss / 2**20}
    for role, marker in ROLES:
        sizes = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if any(marker in part for part in proc.info["cmdline"] or []):
                    sizes.append(proc.memory_info().rss / 2**20)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        out[role] = max(sizes) if sizes else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--qps", type=float, default=1000.0)
    parser.add_argument("--every-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=60.0)
    args = parser.parse_args()
    results = tempfile.mkdtemp(prefix="perfray-soak-")
    cmd = [sys.executable, "-m", "perfray.sweep", "--quiet", "--no-report", "--results-dir", results,
           "--set", "sweep={}", "--set", f"load.target_qps={args.qps:g}", "--set", f"load.duration_s={args.minutes * 60:g}",
           "--set", "load.warmup_s=5", "--set", "load.actors=1", "--set", "search.n_gpus=1",
           "--set", "microbench.enabled=false", "--set", "targets=[]", "--set", "metrics.enabled=true"]
    driver = subprocess.Popen(cmd)
    proc = psutil.Process(driver.pid)
    started, rows = time.monotonic(), []
    print(f"one cell, {args.qps:g} QPS for {args.minutes:g} min (one load actor, one numpy search actor); RSS MB\n")
    print(f"{'t s':>6} {'driver':>8} {'load actor':>10} {'GPU actor':>9}")
    try:
        while driver.poll() is None:
            time.sleep(args.every_s)
            try:
                now = sample(proc)
            except psutil.NoSuchProcess:
                break
            t = time.monotonic() - started
            rows.append((t, now))
            print(f"{t:>6.0f} {now['driver']:>8.1f} {now['load actor']:>10.1f} {now['GPU actor']:>9.1f}", flush=True)
    finally:
        if driver.poll() is None:
            driver.terminate()
        driver.wait()
    # while the cell ran: every role alive (after it, the driver summarises the whole cell: not growth)
    after = [(t, r) for t, r in rows if t >= args.warmup_s and all(v == v for v in r.values())]
    if len(after) < 2:
        print("too short to judge growth after warm-up")
        return
    (t0, first), (t1, last) = after[0], after[-1]
    print(f"\ngrowth after {args.warmup_s:g} s of warm-up ({(t1 - t0) / 60:.1f} min):")
    for role in ("driver", "load actor", "GPU actor"):
        change = last[role] - first[role]
        print(f"  {role:<10} {first[role]:7.1f} -> {last[role]:7.1f} MB  {change / ((t1 - t0) / 60):+6.2f} MB/min "
              f"({100 * change / first[role]:+.1f}%)")
    print("rerun: python benchmarks/soak.py")


if __name__ == "__main__":
    main()
