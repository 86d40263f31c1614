"""Store systems through client threads vs their async driver on the load actor's loop (psycopg's
AsyncConnections in perfray's lean pool, Neo4j's AsyncDriver), side by side in one run, same server, same schedule: the
hand-off (the client's own start − the generator's send: perfray's time between deciding to send and the
query starting), the generator's own lateness (send − intended), the schedule lag (their sum) and the
service time (the query itself) of each path.

    python benchmarks/async_clients.py [--systems postgres,neo4j] [--qps 200] [--seconds 6] [--items 5000]

Goal: hand-off p50 <= 30 µs on the async path, service time unchanged.
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
from perfray.load.generator import CellPlan, LoadGenerator, QueryPool
from perfray.load.pacer import run_fast
from perfray.load.profiles import op_mix
from perfray.load.schedules import PhaseRates
from perfray.load.targets import SystemEndpoint
from perfray.services.neo4j import LocalNeo4j
from perfray.services.postgres import LocalPostgres
from perfray.sut.base import Answer
from perfray.sut.session import make_system
from perfray.systems_config import StoresSpec
from perfray.timing import process_clock


def open_loop(system, mode: str, pool: QueryPool, qps: float, seconds: float, concurrency: int):
    endpoint = SystemEndpoint(system, concurrency, mode=mode)
    generator = LoadGenerator(0)

    async def go():
        await endpoint.warm(pool.queries, 10)
        for i in range(20):  # prepared statements, caches
            await endpoint.call(pool.queries[i:i + 1], 10, np.array([i]))
        plan = CellPlan(cell=0, actor=0, n_actors=1, start_unix_ns=time.time_ns() + 200_000_000,
                        phases=[PhaseRates("m", seconds, qps, qps, True)], arrival="poisson",
                        ops=op_mix("simple", 10, 10**6), seed=1, batch_window_ns=0, batch_max=1,
                        max_in_flight=10_000, timeout_ns=10**10)
        return await generator.run_cell(plan, pool, endpoint)

    try:
        stats = run_fast(go())
    finally:
        endpoint.close()
    return generator.drain().to_pandas(), stats


class NoopAsyncSystem:
    """A client that does nothing but wait 0.3 ms on the loop: perfray's own hand-off, without a driver's."""

    async_native = True

    def __init__(self) -> None:
        self.clock = process_clock()

    async def execute_async(self, queries, k, rows):
        sent_ns = self.clock.now_ns()
        await asyncio.sleep(0.0003)
        return Answer(sent_ns=sent_ns, done_ns=self.clock.now_ns())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default="postgres,neo4j")
    parser.add_argument("--qps", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    names = args.systems.split(",")
    root = Path(tempfile.mkdtemp(prefix="perfray-async-"))
    pg = LocalPostgres(root / "pg").start() if "postgres" in names else None
    neo = LocalNeo4j(root / "neo4j").start() if any(n.startswith("neo4j") for n in names) else None
    try:
        stores = StoresSpec(**({"postgres": pg.settings()} if pg else {}), **({"neo4j": neo.settings()} if neo else {}))
        workload = Workload.model_validate({"dataset": {"kind": "synthetic", "n": args.items, "dim": 16, "n_queries": 500},
                                            "load": {"concurrency": args.concurrency}})
        dataset = load_dataset(workload.dataset)
        catalogue = build_catalogue(dataset, workload.catalogue)
        pool = QueryPool(dataset.queries)
        print(f"{', '.join(names)}: {args.items:,} items, open loop {args.qps:g} QPS Poisson for {args.seconds:g} s "
              f"each, {args.concurrency} connections; paths interleaved (the box drifts)\n")
        print(f"{'system':<10} {'client path':<12} {'rows ok':>7} {'hand-off p50 µs':>15} {'p99':>6} "
              f"{'generator late p50 µs':>21} {'lag p50 µs':>10} {'service p50 ms':>14} {'service p99':>11} "
              f"{'latency p99 ms':>14}")
        noop_rows, noop = open_loop(NoopAsyncSystem(), "async", pool, args.qps, args.seconds, args.concurrency)
        print(f"{'no-op':<10} {'async':<12} {int((noop_rows.status == 'ok').sum()):>7} "
              f"{noop['client_handoff_p50_ns'] / 1e3:>15.0f} {noop['client_handoff_p99_ns'] / 1e3:>6.0f} "
              f"{noop['generator_lateness_p50_ns'] / 1e3:>21.0f} {noop_rows.schedule_lag_ns.quantile(0.5) / 1e3:>10.0f}"
              "   (perfray's own hand-off: no driver)")
        for name in names:
            for mode in ("threads", "async", "threads", "async"):
                system = make_system(name, workload.model_copy(update={"system": name}), stores)
                system.connect()
                system.load(catalogue)
                system.prepare(catalogue)
                try:
                    rows, stats = open_loop(system, mode, pool, args.qps, args.seconds, args.concurrency)
                finally:
                    system.close()
                ok = rows[rows.status == "ok"]
                print(f"{name:<10} {mode:<12} {len(ok):>7} {stats['client_handoff_p50_ns'] / 1e3:>15.0f} "
                      f"{stats['client_handoff_p99_ns'] / 1e3:>6.0f} {stats['generator_lateness_p50_ns'] / 1e3:>21.0f} "
                      f"{ok.schedule_lag_ns.quantile(0.5) / 1e3:>10.0f} {ok.service_ns.quantile(0.5) / 1e6:>14.3f} "
                      f"{ok.service_ns.quantile(0.99) / 1e6:>11.3f} {ok.latency_ns.quantile(0.99) / 1e6:>14.3f}")
        print("\nhand-off = the client's own start - the generator's send (threads: a client thread picks the request "
              "up;\nasync: the task starts, looks up the row's parameters, takes a pooled connection); lag = "
              "generator lateness + hand-off\nrerun: python benchmarks/async_clients.py")
    finally:
        for server in (neo, pg):
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
