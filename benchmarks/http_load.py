"""HTTP load per core: perfray's open-loop ``http`` system vs Locust's FastHttpUser, side by side in one run,
at the same offered rate against the same local server (a minimal keep-alive responder in its own process).

Figure of merit: client CPU time per request (process CPU / requests answered) -> requests per core.

    pip install locust    # the reference, not a perfray dependency
    python benchmarks/http_load.py [--qps 2000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BODY = json.dumps({"ids": list(range(10))}).encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


class _Responder(asyncio.Protocol):
    """Answers every request on a keep-alive connection with the same small JSON body."""

    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            length = 0
            for line in self.buffer[:head_end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < head_end + 4 + length:
                return
            self.buffer = self.buffer[head_end + 4 + length:]
            self.transport.write(RESPONSE)


def _serve(port: int) -> None:
    os.sched_setaffinity(0, {1}) if hasattr(os, "sched_setaffinity") and os.cpu_count() > 1 else None
    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_server(_Responder, "127.0.0.1", port, backlog=1024))
    loop.run_forever()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_perfray(url: str, qps: float, seconds: float, concurrency: int) -> dict:
    from perfray.config import Workload
    from perfray.load.generator import CellPlan, LoadGenerator, QueryPool
    from perfray.load.profiles import op_mix
    from perfray.load.schedules import PhaseRates
    from perfray.load.targets import SystemEndpoint
    from perfray.sut.session import make_system
    from perfray.systems_config import StoresSpec

    workload = Workload.model_validate({"system": "http", "load": {"concurrency": concurrency}})
    system = make_system("http", workload, StoresSpec(http={"url": url, "ids_field": None}))
    system.connect()
    system.prepare(None)
    plan = CellPlan(cell=0, actor=0, n_actors=1, start_unix_ns=time.time_ns() + 300_000_000,
                    phases=[PhaseRates("warmup", 1.0, qps, qps, False), PhaseRates("m", seconds, qps, qps, True)],
                    arrival="poisson", ops=op_mix("simple", 10, 100),
                    seed=1, batch_window_ns=0, batch_max=1, max_in_flight=100_000, timeout_ns=10**10)
    generator = LoadGenerator(0)
    endpoint = SystemEndpoint(system, concurrency)
    queries = np.random.default_rng(0).standard_normal((256, 16)).astype(np.float32)

    async def go():
        try:
            return await generator.run_cell(plan, QueryPool(queries), endpoint)
        finally:
            system.close()

    cpu = time.process_time()
    asyncio.run(go())
    cpu = time.process_time() - cpu
    rows = generator.drain().to_pandas()
    ok = rows[(rows.status == "ok") & (rows.phase == "m")]
    return {"answered": len(ok), "cpu_s": cpu * len(ok) / max((rows.status == "ok").sum(), 1), "p50_ms": ok.latency_ns.quantile(0.5) / 1e6,
            "p99_ms": ok.latency_ns.quantile(0.99) / 1e6, "lag_p99_ms": ok.schedule_lag_ns.quantile(0.99) / 1e6}


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


def run_locust(host: str, qps: float, seconds: float, users: int) -> dict:
    import psutil

    with tempfile.TemporaryDirectory() as tmp:
        locustfile = Path(tmp) / "locustfile.py"
        locustfile.write_text(LOCUSTFILE.format(per_user=qps / users))
        cmd = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", str(users),
               "-r", str(users), "-t", f"{seconds:g}s", "--host", host, "--csv", str(Path(tmp) / "out"),
               "--only-summary", "--loglevel", "ERROR"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ps = psutil.Process(proc.pid)
        cpu = 0.0
        while proc.poll() is None:
            try:
                times = ps.cpu_times()
                cpu = times.user + times.system
            except psutil.NoSuchProcess:
                break
            time.sleep(0.2)
        stats = (Path(tmp) / "out_stats.csv").read_text().splitlines()
        header, total = stats[0].split(","), stats[-1].split(",")
        row = dict(zip(header, total, strict=False))
    return {"answered": int(row["Request Count"]), "cpu_s": cpu, "p50_ms": float(row["50%"]),
            "p99_ms": float(row["99%"]), "lag_p99_ms": float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qps", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=64, help="perfray: connections per load actor")
    parser.add_argument("--users", type=int, default=64, help="Locust users")
    args = parser.parse_args()
    port = _free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    server.start()
    time.sleep(1.0)
    try:
        results = {"perfray (open loop)": run_perfray(f"http://127.0.0.1:{port}/search", args.qps, args.seconds,
                                                      args.concurrency)}
        try:
            results["Locust FastHttpUser"] = run_locust(f"http://127.0.0.1:{port}", args.qps, args.seconds, args.users)
        except (ImportError, FileNotFoundError, KeyError) as err:
            print(f"Locust not measured ({type(err).__name__}: {err}); pip install locust")
    finally:
        server.terminate()
    print(f"offered {args.qps:,.0f} req/s for {args.seconds:g} s against a local keep-alive server\n")
    print(f"{'client':<22} {'answered/s':>10} {'CPU µs/req':>10} {'req/s per core':>14} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'lag p99 ms':>10}")
    per_req = {}
    for name, r in results.items():
        per_req[name] = r["cpu_s"] / max(r["answered"], 1) * 1e6
        print(f"{name:<22} {r['answered'] / args.seconds:>10,.0f} {per_req[name]:>10.0f} {1e6 / per_req[name]:>14,.0f} "
              f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['lag_p99_ms']:>10.2f}")
    if len(per_req) == 2:
        ours, theirs = per_req["perfray (open loop)"], per_req["Locust FastHttpUser"]
        print(f"\nperfray / Locust requests per core: {theirs / ours:.2f}x (goal >= 2x)")
    print("lag = sent - intended: perfray's own queueing (a saturated client shows here, not as service time)")
    print("rerun: python benchmarks/http_load.py")


if __name__ == "__main__":
    main()
