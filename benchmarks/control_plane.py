"""Control plane at scale, simulated: 10 load actors and 10…100 logical GPU actors on this machine (tiny
data). Reports actor start-up and gather (drain) times per cell from the manifest and checks that the cost
per actor does not grow with the number of actors (nothing worse than linear).

    python benchmarks/control_plane.py [--gpus 10,25,50,100] [--load-actors 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", default="10,25,50,100")
    parser.add_argument("--load-actors", type=int, default=10)
    args = parser.parse_args()
    gpus = [int(g) for g in args.gpus.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "perfray.sweep", "--quiet", "--no-report", "--results-dir", tmp,
               "--run-id", "cp", "--set", f"sweep={{search.n_gpus: {gpus}}}",
               "--set", "dataset={kind: synthetic, n: 2000, dim: 16, n_queries: 200}",
               "--set", f"load.actors={args.load_actors}", "--set", "target_qps=200", "--set", "duration_s=2",
               "--set", "warmup_s=0.5", "--set", "microbench.enabled=false", "--set", "targets=[]",
               "--set", "search.backend=numpy",
               "--set", "cluster.load_actor_cpus=0.1"]
        subprocess.run(cmd, check=False, timeout=1800)
        doc = json.loads((Path(tmp) / "cp" / "manifest.json").read_text())
    rows = []
    print(f"{'GPU actors':>10} {'start s':>8} {'per actor ms':>12} {'gather s':>9} {'drains':>7} {'per drain ms':>12}")
    for cell, n in zip(doc["cells"], gpus, strict=False):
        t = cell.get("timings", {})
        per_actor = t.get("gpu_actors_ready_s", float("nan")) / n * 1e3
        per_drain = t.get("gather_s", float("nan")) / max(t.get("drains", 1), 1) * 1e3
        rows.append((n, per_actor, per_drain))
        print(f"{n:>10} {t.get('gpu_actors_ready_s', float('nan')):>8.1f} {per_actor:>12.0f} "
              f"{t.get('gather_s', float('nan')):>9.2f} {t.get('drains', 0):>7} {per_drain:>12.1f}")
    if len(rows) >= 2:
        growth = rows[-1][1] / rows[0][1]
        print(f"start-up cost per actor at {rows[-1][0]} vs {rows[0][0]} actors: {growth:.2f}x "
              f"({'no worse than linear' if growth <= 1.5 else 'WORSE than linear'}); "
              f"{args.load_actors} load actors, status {doc['status']}")
    print("rerun: python benchmarks/control_plane.py")


if __name__ == "__main__":
    main()
