"""perfray's added latency, side by side: the same local server driven through ``python -m perfray.sweep``
(Ray, one load actor, the ``http`` system) and by a bare reference client (one asyncio.Protocol client,
pre-encoded requests, a spin-paced open loop, ``done`` stamped on the reply's bytes), at the same rates and
schedule. Prints perfray's p50/p99/p99.9 minus the reference's (goal: <= 0.2 ms at p50, <= 0.5 ms at p99),
then one sweep at 8,000 req/s against a server that answers at once (goal: no errors or drops, lag p99 <= 1 ms,
latency p99 <= 2 ms).

    python benchmarks/http_sweep.py [--seconds 10] [--delay-ms 3]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from perfray.load.pacer import run_fast
from perfray.services.http_responder import RESPONSE
from perfray.services.process import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[1]
EXTRA: list[str] = []
REQUEST = (b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
           b"\r\n{}")


def sweep(url: str, qps: float, seconds: float, out: Path, run_id: str) -> np.ndarray:
    """Latencies (ns) of the measured rows of one sweep cell."""
    cmd = [sys.executable, "-m", "perfray.sweep", "--quiet", "--config", "configs/smoke.yaml",
           "--results-dir", str(out), "--run-id", run_id, "--no-report"]
    for setting in ("system=http", f"stores.http.url={url}", "stores.http.ids_field=null", "dataset.n=2000",
                    "dataset.dim=16", "dataset.n_queries=200", "arrival=constant", f"load.target_qps={qps}",
                    f"load.duration_s={seconds}", "load.warmup_s=1", "batch_window_ms=0", "batch_max=1",
                    "load.concurrency=256", "microbench.enabled=false", "sweep={}", "targets=[]", *EXTRA):
        cmd += ["--set", setting]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"sweep failed ({done.returncode}): {done.stderr[-2000:]}")
    rows = pq.read_table(out / run_id / "requests").to_pandas()
    rows = rows[rows.phase != "warmup"]
    bad = (rows.status != "ok").sum()
    return rows.latency_ns.to_numpy(), rows.schedule_lag_ns.to_numpy(), int(bad)


class _RefConn(asyncio.Protocol):
    def __init__(self, client):
        self.client, self.pending, self.buffered = client, deque(), 0

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        now = time.perf_counter_ns()
        self.buffered += len(data)
        while self.buffered >= len(RESPONSE):
            self.buffered -= len(RESPONSE)
            self.client.done(self, self.pending.popleft(), now)


class Reference:
    """The bare open-loop client: constant arrivals, latency = reply bytes − intended send time."""

    def __init__(self, rate: float, seconds: float, connections: int) -> None:
        self.rate, self.seconds, self.connections = rate, seconds, connections

    async def run(self, port: int) -> np.ndarray:
        loop = asyncio.get_running_loop()
        conns = [(await loop.create_connection(lambda: _RefConn(self), "127.0.0.1", port))[1]
                 for _ in range(self.connections)]
        self.idle, self.queue = deque(conns), deque()
        n = int(self.rate * (self.seconds + 1))
        start = time.perf_counter_ns() + 100_000_000
        self.intended = start + (np.arange(n) * 1e9 / self.rate).astype(np.int64) + int(0.5e9 / self.rate)
        self.latency = np.zeros(n, dtype=np.int64)
        self.left = n
        self.finished = loop.create_future()
        due = self.intended.tolist()
        for i, t in enumerate(due):
            gap = (t - time.perf_counter_ns()) / 1e9
            if gap > 0.0015:
                await asyncio.sleep(gap - 0.0015)
            while time.perf_counter_ns() < t:  # yield-spin: replies are read while it waits
                await asyncio.sleep(0)
            self._send(i)
        await self.finished
        first_measured = int(self.rate)  # the first second is warm-up, as in the sweep
        return self.latency[first_measured:]

    def _send(self, i: int) -> None:
        if self.idle:
            _write(self.idle.popleft(), i)
        else:
            self.queue.append(i)

    def done(self, conn, i: int, now: int) -> None:
        self.latency[i] = now - self.intended[i]
        self.left -= 1
        if self.queue:
            _write(conn, self.queue.popleft())
        else:
            self.idle.append(conn)
        if self.left == 0:
            self.finished.set_result(None)


def _write(conn, i: int) -> None:
    conn.pending.append(i)
    conn.transport.write(REQUEST)


def reference(port: int, rate: float, seconds: float) -> np.ndarray:
    return run_fast(Reference(rate, seconds, 256).run(port))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--delay-ms", type=float, default=3.0, help="the server's steady service time")
    parser.add_argument("--rates", default="500,5000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "perfray.services.http_responder", "--port", str(port),
                                   "--delay-ms", str(args.delay_ms)])
        try:
            wait_for_port(port, 20, "responder")
            print(f"server answers every request after {args.delay_ms:g} ms; {args.seconds:g} s per run, constant "
                  "arrivals, 256 connections each\n")
            print(f"{'rate/s':>7} {'client':<10} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}")
            for rate in (float(r) for r in args.rates.split(",")):
                ref = reference(port, rate, args.seconds)
                ours, _, bad = sweep(f"http://127.0.0.1:{port}/search", rate, args.seconds, out, f"r{int(rate)}")
                q = [0.5, 0.99, 0.999]
                a, b = np.quantile(ours, q) / 1e6, np.quantile(ref, q) / 1e6
                print(f"{rate:>7,.0f} {'reference':<10} {b[0]:>8.3f} {b[1]:>8.3f} {b[2]:>9.3f}")
                print(f"{rate:>7,.0f} {'perfray':<10} {a[0]:>8.3f} {a[1]:>8.3f} {a[2]:>9.3f}   (non-ok rows: {bad})")
                print(f"{rate:>7,.0f} {'added':<10} {a[0] - b[0]:>+8.3f} {a[1] - b[1]:>+8.3f} {a[2] - b[2]:>+9.3f}   "
                      "(goal: <= 0.2 at p50, <= 0.5 at p99)")
        finally:
            server.terminate()
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "perfray.services.http_responder", "--port", str(port)])
        try:
            wait_for_port(port, 20, "responder")
            lat, lag, bad = sweep(f"http://127.0.0.1:{port}/search", 8000, 20, out, "r8000")
            print(f"\nsweep at 8,000 req/s for 20 s, one load actor, server answers at once: {lat.size:,} measured rows, "
                  f"non-ok {bad}, lag p99 {np.quantile(lag, 0.99) / 1e6:.3f} ms, latency p50 "
                  f"{np.quantile(lat, 0.5) / 1e6:.3f} ms, p99 {np.quantile(lat, 0.99) / 1e6:.3f} ms "
                  "(goal: 0 non-ok, lag p99 <= 1 ms, latency p99 <= 2 ms)")
        finally:
            server.terminate()
    print("rerun: python benchmarks/http_sweep.py")


if __name__ == "__main__":
    main()
