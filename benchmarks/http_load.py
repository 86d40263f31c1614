"""HTTP load per core: perfray's open-loop ``http`` system vs Locust's FastHttpUser, side by side in one run,
at the same offered rate against the same local keep-alive server (``perfray.services.http_responder``,
pinned to the last core; both clients pinned to core 0). Then perfray alone up a ladder of rates: the highest
rate one core holds with every request answered and schedule lag p99 <= 1 ms.

Figure of merit: client CPU time per request (process CPU / requests answered) -> requests per core.
Locust gets its best settings for throughput: FastHttpUser (geventhttpclient), a constant-throughput wait,
enough users, no web UI, only a summary.

    pip install locust    # the reference, not a perfray dependency
    python benchmarks/http_load.py [--qps 4000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LADDER = (4000, 8000, 12_000, 16_000, 20_000, 24_000, 28_000, 32_000, 36_000, 40_000, 48_000)
LAG_P99_LIMIT_MS = 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpus() -> tuple[int, int]:
    """(client core, server core)."""
    n = os.cpu_count() or 1
    return 0, n - 1


def run_perfray(url: str, qps: float, seconds: float, concurrency: int) -> dict:
    from perfray.config import Workload
    from perfray.load.generator import CellPlan, LoadGenerator, QueryPool
    from perfray.load.pacer import run_fast
    from perfray.load.profiles import op_mix
    from perfray.load.schedules import PhaseRates
    from perfray.load.targets import SystemEndpoint
    from perfray.sut.session import make_system
    from perfray.systems_config import StoresSpec

    workload = Workload.model_validate({"system": "http", "load": {"concurrency": concurrency}})
    system = make_system("http", workload, StoresSpec(http={"url": url, "ids_field": None}))
    system.connect()
    system.prepare(None)
    queries = np.random.default_rng(0).standard_normal((256, 16)).astype(np.float32)
    generator = LoadGenerator(0)
    endpoint = SystemEndpoint(system, concurrency)

    async def go():
        await endpoint.warm(queries, 10)
        plan = CellPlan(cell=0, actor=0, n_actors=1, start_unix_ns=time.time_ns() + 200_000_000,
                        phases=[PhaseRates("warmup", 1.0, qps, qps, False), PhaseRates("m", seconds, qps, qps, True)],
                        arrival="poisson", ops=op_mix("simple", 10, 100), seed=1, batch_window_ns=0, batch_max=1,
                        max_in_flight=100_000, timeout_ns=10**10)
        try:
            return await generator.run_cell(plan, QueryPool(queries), endpoint)
        finally:
            system.close()

    cpu = time.process_time()
    stats = run_fast(go())
    cpu = time.process_time() - cpu
    rows = generator.drain().to_pandas()
    ok = rows[(rows.status == "ok") & (rows.phase == "m")]
    return {"answered": len(ok), "cpu_s": cpu * len(ok) / max((rows.status == "ok").sum(), 1),
            "all_ok": bool((rows.status == "ok").all()), "p50_ms": ok.latency_ns.quantile(0.5) / 1e6,
            "p99_ms": ok.latency_ns.quantile(0.99) / 1e6, "lag_p99_ms": ok.schedule_lag_ns.quantile(0.99) / 1e6,
            "loop": stats["event_loop"], "pacer": stats["pacer"]}


LOCUSTFILE = '''
import json
from locust import constant_throughput, task
from locust.contrib.fasthttp import FastHttpUser

class Client(FastHttpUser):
    wait_time = constant_throughput({per_user})

    @task
    def search(self):
        self.client.post("/search", data=json.dumps({{"vector": [0.0] * 16, "k": 10, "user": 1}}),
                         headers={{"Content-Type": "application/json"}})
'''


def run_locust(host: str, qps: float, seconds: float, users: int, cpu: int) -> dict:
    import psutil

    with tempfile.TemporaryDirectory() as tmp:
        locustfile = Path(tmp) / "locustfile.py"
        locustfile.write_text(LOCUSTFILE.format(per_user=qps / users))
        cmd = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", str(users),
               "-r", str(users), "-t", f"{seconds:g}s", "--host", host, "--csv", str(Path(tmp) / "out"),
               "--only-summary", "--loglevel", "ERROR"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ps = psutil.Process(proc.pid)
        ps.cpu_affinity([cpu])
        used = 0.0
        while proc.poll() is None:
            try:
                times = ps.cpu_times()
                used = times.user + times.system
            except psutil.NoSuchProcess:
                break
            time.sleep(0.2)
        stats = (Path(tmp) / "out_stats.csv").read_text().splitlines()
        header, total = stats[0].split(","), stats[-1].split(",")
        row = dict(zip(header, total, strict=False))
    return {"answered": int(row["Request Count"]), "cpu_s": used, "all_ok": int(row["Failure Count"]) == 0,
            "p50_ms": float(row["50%"]), "p99_ms": float(row["99%"]), "lag_p99_ms": float("nan"),
            "loop": "gevent", "pacer": "-"}


def _line(name: str, r: dict, seconds: float) -> str:
    per_req = r["cpu_s"] / max(r["answered"], 1) * 1e6
    return (f"{name:<24} {r['answered'] / seconds:>10,.0f} {per_req:>10.1f} {1e6 / per_req:>14,.0f} {r['p50_ms']:>7.2f} "
            f"{r['p99_ms']:>7.2f} {r['lag_p99_ms']:>10.3f}  {r['loop']}/{r['pacer']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qps", type=float, default=4000, help="the side-by-side rate (Locust's is ~4K/core)")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=64, help="perfray: connections per load actor")
    parser.add_argument("--users", type=int, default=64, help="Locust users")
    parser.add_argument("--no-ladder", action="store_true")
    args = parser.parse_args()
    client_cpu, server_cpu = _cpus()
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "perfray.services.http_responder", "--port", str(port),
                               "--cpu", str(server_cpu)])
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {client_cpu})
    time.sleep(1.5)
    url = f"http://127.0.0.1:{port}/search"
    header = (f"{'client':<24} {'answered/s':>10} {'CPU µs/req':>10} {'req/s per core':>14} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'lag p99 ms':>10}  loop/pacer")
    try:
        results = {"perfray (open loop)": run_perfray(url, args.qps, args.seconds, args.concurrency)}
        try:
            results["Locust FastHttpUser"] = run_locust(f"http://127.0.0.1:{port}", args.qps, args.seconds,
                                                        args.users, client_cpu)
        except (ImportError, FileNotFoundError, KeyError) as err:
            print(f"Locust not measured ({type(err).__name__}: {err}); pip install locust")
        print(f"offered {args.qps:,.0f} req/s for {args.seconds:g} s against a local keep-alive server "
              f"(client on core {client_cpu}, server on core {server_cpu})\n")
        print(header)
        for name, r in results.items():
            print(_line(name, r, args.seconds))
        locust_max = None
        if len(results) == 2:
            ours, theirs = (r["cpu_s"] / max(r["answered"], 1) for r in results.values())
            print(f"\nperfray / Locust CPU per request at the same offered rate: {theirs / ours:.2f}x")
            # Locust's own ceiling: offered far more than it can send, so its one core is the limit.
            locust_max = run_locust(f"http://127.0.0.1:{port}", 4 * args.qps, args.seconds, 2 * args.users, client_cpu)
            print(_line(f"Locust @ {4 * args.qps:,.0f}/s offered", locust_max, args.seconds))
        if not args.no_ladder:
            print(f"\nperfray alone, one core, rising rate ({args.seconds:g} s each; held = all answered and lag p99 "
                  f"<= {LAG_P99_LIMIT_MS:g} ms):\n{header}")
            best = 0
            for rate in LADDER:
                r = run_perfray(url, rate, args.seconds, args.concurrency)
                held = r["all_ok"] and r["answered"] >= 0.99 * rate * args.seconds and r["lag_p99_ms"] <= LAG_P99_LIMIT_MS
                print(_line(f"perfray @ {rate:,}/s" + (" held" if held else ""), r, args.seconds))
                if not held:
                    break
                best = rate
            print(f"\nperfray's highest rate per core with lag p99 <= {LAG_P99_LIMIT_MS:g} ms: {best:,} req/s (goal >= 12,000)")
            if locust_max is not None:
                locust_per_core = locust_max["answered"] / max(locust_max["cpu_s"], 1e-9)
                print(f"requests per core, each client at its ceiling: perfray {best:,} (lag p99 <= 1 ms) vs Locust "
                      f"{locust_per_core:,.0f} (answered / CPU s) = {best / locust_per_core:.2f}x (goal >= 3.5x)")
    finally:
        server.terminate()
    print("lag = sent - intended: perfray's own queueing (a saturated client shows here, not as service time)")
    print("rerun: python benchmarks/http_load.py")


if __name__ == "__main__":
    main()
