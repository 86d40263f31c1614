"""PostgreSQL systems through client threads vs psycopg's async pool on the load actor's loop, side by side in
one run, same server, same schedule: the hand-off lag (schedule lag p50: perfray's time before the query
starts) and the service time (the query itself) of each path.

    python benchmarks/async_clients.py [--qps 200] [--seconds 6] [--items 5000]

Goal: hand-off lag p50 <= 30 µs on the async path, service time unchanged.
"""

from __future__ import annotations

import argparse
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
from perfray.services.postgres import LocalPostgres
from perfray.sut.session import make_system
from perfray.systems_config import StoresSpec


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
        run_fast(go())
    finally:
        endpoint.close()
    return generator.drain().to_pandas()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qps", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="perfray-async-"))
    pg = LocalPostgres(root / "pg").start()
    try:
        stores = StoresSpec(postgres=pg.settings())
        workload = Workload.model_validate({"system": "postgres",
                                            "dataset": {"kind": "synthetic", "n": args.items, "dim": 16, "n_queries": 500},
                                            "load": {"concurrency": args.concurrency}})
        dataset = load_dataset(workload.dataset)
        catalogue = build_catalogue(dataset, workload.catalogue)
        pool = QueryPool(dataset.queries)
        print(f"postgres policy rank, {args.items:,} items, open loop {args.qps:g} QPS Poisson for {args.seconds:g} s, "
              f"{args.concurrency} connections\n")
        print(f"{'client path':<12} {'rows ok':>8} {'lag p50 µs':>10} {'lag p99 µs':>10} {'service p50 ms':>14} "
              f"{'service p99 ms':>14} {'latency p99 ms':>14}")
        for mode in ("threads", "async", "threads", "async"):  # interleaved: the box drifts
            system = make_system("postgres", workload, stores)
            system.connect()
            system.load(catalogue)
            system.prepare(catalogue)
            try:
                rows = open_loop(system, mode, pool, args.qps, args.seconds, args.concurrency)
            finally:
                system.close()
            ok = rows[rows.status == "ok"]
            print(f"{mode:<12} {len(ok):>8} {ok.schedule_lag_ns.quantile(0.5) / 1e3:>10.0f} "
                  f"{ok.schedule_lag_ns.quantile(0.99) / 1e3:>10.0f} {ok.service_ns.quantile(0.5) / 1e6:>14.3f} "
                  f"{ok.service_ns.quantile(0.99) / 1e6:>14.3f} {ok.latency_ns.quantile(0.99) / 1e6:>14.3f}")
        print("\nlag = sent - intended: for threads, the hand-off to a client thread; for async, the task's start "
              "on the loop\nrerun: python benchmarks/async_clients.py")
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
