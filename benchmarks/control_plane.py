"""Control plane at scale, simulated: 10 load actors and 10…100 logical GPU actors on this machine (tiny
data). Reports actor start-up and gather (drain) times per cell from the manifest and checks that the cost
per actor does not grow with the number of actors (nothing worse than linear). With ``--nodes M`` the sweep runs
on a local multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head with no CPUs and M raylets sharing the
logical GPUs): placing the actors across the nodes, and the rows per second the driver drains from them.

    python benchmarks/control_plane.py [--gpus 10,25,50,100] [--load-actors 10] [--nodes 4]
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
    parser.add_argument("--nodes", type=int, default=0, help="worker nodes of a local multi-node Ray cluster")
    args = parser.parse_args()
    gpus = [int(g) for g in args.gpus.split(",")]
    cluster = _cluster(args.nodes, max(gpus), args.load_actors) if args.nodes else None
    try:
        doc = _sweep(gpus, args.load_actors, cluster.address if cluster else None)
    finally:
        if cluster is not None:
            cluster.shutdown()
    _report(doc, gpus, args)


def _cluster(nodes: int, gpus: int, load_actors: int):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    per_node = -(-gpus // nodes)
    for _ in range(nodes):
        cluster.add_node(num_cpus=max(1, -(-load_actors // nodes)), num_gpus=per_node)
    cluster.wait_for_nodes()
    return cluster


def _sweep(gpus: list[int], load_actors: int, address: str | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "perfray.sweep", "--quiet", "--no-report", "--results-dir", tmp,
               "--run-id", "cp", "--set", f"sweep={{search.n_gpus: {gpus}}}",
               "--set", "dataset={kind: synthetic, n: 2000, dim: 16, n_queries: 200}",
               "--set", f"load.actors={load_actors}", "--set", "target_qps=200", "--set", "duration_s=2",
               "--set", "warmup_s=0.5", "--set", "microbench.enabled=false", "--set", "targets=[]",
               "--set", "search.backend=numpy",
               "--set", "cluster.load_actor_cpus=0.1", "--set", "cluster.load_placement=spread",
               *(["--set", f"cluster.address={address}"] if address else [])]
        subprocess.run(cmd, check=False, timeout=1800)
        return json.loads((Path(tmp) / "cp" / "manifest.json").read_text())


def _report(doc: dict, gpus: list[int], args) -> None:
    rows = []
    print(f"{'GPU actors':>10} {'start s':>8} {'per actor ms':>12} {'load ready s':>12} {'nodes':>5} {'gather s':>9} "
          f"{'drains':>7} {'per drain ms':>12} {'rows/s drained':>14}")
    for cell, n in zip(doc["cells"], gpus, strict=False):
        t = cell.get("timings", {})
        per_actor = t.get("gpu_actors_ready_s", float("nan")) / n * 1e3
        per_drain = t.get("gather_s", float("nan")) / max(t.get("drains", 1), 1) * 1e3
        placement = cell.get("placement") or {}
        nodes = len(set(placement.get("load", [])) | set(placement.get("search", [])))
        requests = sum(s.get("requests", 0) for s in cell.get("actor_stats", []))
        rows.append((n, per_actor, per_drain))
        print(f"{n:>10} {t.get('gpu_actors_ready_s', float('nan')):>8.1f} {per_actor:>12.0f} "
              f"{t.get('load_actors_ready_s', float('nan')):>12.2f} {nodes:>5} {t.get('gather_s', float('nan')):>9.2f} "
              f"{t.get('drains', 0):>7} {per_drain:>12.1f} {requests / max(t.get('gather_s', 0), 1e-9):>14,.0f}")
    if len(rows) >= 2:
        growth = rows[-1][1] / rows[0][1]
        print(f"start-up cost per actor at {rows[-1][0]} vs {rows[0][0]} actors: {growth:.2f}x "
              f"({'no worse than linear' if growth <= 1.5 else 'WORSE than linear'}); "
              f"{args.load_actors} load actors, status {doc['status']}")
    print(f"rerun: python benchmarks/control_plane.py --gpus {args.gpus} --load-actors {args.load_actors}"
          + (f" --nodes {args.nodes}" if args.nodes else ""))


if __name__ == "__main__":
    main()
