"""perfray's added latency, side by side: the same local server driven through ``python -m perfray.sweep``
(Ray, one load actor, the ``http`` system) and by a bare reference client (one asyncio.Protocol client,
pre-encoded requests, an open loop that sleeps on a timerfd and sends every request due at each wake, ``done``
stamped with the kernel's receive time of the reply's bytes, as perfray's http client does; ``--read-stamps``: when
they are read), at the same rates and
schedule. The reference runs twice per rate: alone on the box, and beside an idle embedded Ray started with the
sweep's own options, at the load actor's CPU priority (``raise_priority``). Ray's daemons wake on every core of a
small box (an idle head uses ~10% of a core in many short wakes); the second reference sees the same box perfray
does, so perfray minus it is perfray's own cost (its actor process, the driver's gathering), and perfray minus the
lone reference is everything a user of a 2-core laptop gets. Prints both differences (goal: <= 0.2 ms at p50,
<= 0.5 ms at p99), and the same sweep with the generator inside the Ray actor (``cluster.generator_process:
false``, the layout before the generator got a process of its own), then one sweep at 8,000 req/s against a server that answers at once (goal: no errors or drops,
lag p99 <= 1 ms, latency p99 <= 2 ms).

``--compare SETTING...`` runs perfray's sweep alone under each setting (``base``: none; ``a=1;b=2``: two), interleaved
over ``--rounds``: an A/B of perfray's own options on the same server.

``--pin`` puts the server alone on CPU 0 and the measured client (the reference, or perfray's load generator via
``cluster.generator_cpus``) with Ray and the driver on CPU 1, so the server's lateness is the same for every client.

    python benchmarks/http_sweep.py [--seconds 10] [--delay-ms 3] [--rounds 2] [--rates 500,5000] [--pin]
    python benchmarks/http_sweep.py --rates 5000 --rounds 4 --compare metrics.report_interval_ms=2000 base
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from perfray.load.pacer import Pacer, run_fast
from perfray.services.http_responder import RESPONSE
from perfray.services.process import free_port, wait_for_port
from perfray.sut.http_client import kernel_stamp_on_perf_counter

REPO = Path(__file__).resolve().parents[1]
EXTRA: list[str] = []
READ_STAMPS = False  # --read-stamps
PIN: dict = {}  # --pin: {"server": the server's own CPU, "client": the client's (and Ray's, and the driver's)}


def _on(pin: dict, which: str):
    """A ``preexec_fn`` that pins a child to ``pin[which]`` (None without ``--pin``)."""
    if not pin:
        return None
    cpu = pin[which]
    return lambda: os.sched_setaffinity(0, {cpu})
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
REQUEST = (b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
           b"\r\n{}")


def sweep(url: str, qps: float, seconds: float, out: Path, run_id: str, extra=()):
    """(latencies ns, schedule lags ns, non-ok rows, the generator's CPU µs per request) of one sweep cell."""
    cmd = [sys.executable, "-m", "perfray.sweep", "--quiet", "--config", "configs/smoke.yaml",
           "--results-dir", str(out), "--run-id", run_id, "--no-report"]
    for setting in ("system=http", f"stores.http.url={url}", "stores.http.ids_field=null", "dataset.n=2000",
                    "dataset.dim=16", "dataset.n_queries=200", "arrival=constant", f"load.target_qps={qps}",
                    f"load.duration_s={seconds}", "load.warmup_s=1", "batch_window_ms=0", "batch_max=1",
                    "load.concurrency=256", "microbench.enabled=false", "sweep={}", "targets=[]", *EXTRA, *extra):
        cmd += ["--set", setting]
    if PIN:  # the driver and the Ray it starts off the server's core, the load generator (pinned) with them
        cmd += ["--set", f"cluster.generator_cpus=[{PIN['client']}]"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, preexec_fn=_on(PIN, "client"))
    if done.returncode != 0:
        raise SystemExit(f"sweep failed ({done.returncode}): {done.stderr[-2000:]}")
    rows = pq.read_table(out / run_id / "requests").to_pandas()
    rows = rows[rows.phase != "warmup"]
    bad = (rows.status != "ok").sum()
    actors = json.loads((out / run_id / "manifest.json").read_text())["cells"][0]["actor_stats"]
    cpu = float(np.mean([a["generator_cpu_us_per_request"] for a in actors]))
    return rows.latency_ns.to_numpy(), rows.schedule_lag_ns.to_numpy(), int(bad), cpu


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


class _RefSocket:
    """A reference connection read with recvmsg: a reply is stamped with the kernel's receive time of its bytes
    (SO_TIMESTAMPNS), as perfray's http client does; ``write`` is the socket's send."""

    def __init__(self, client, port: int) -> None:
        self.client, self.pending, self.buffered = client, deque(), 0
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setblocking(False)
        self.transport = self
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def write(self, data: bytes) -> None:
        if self.sock.send(data) != len(data):  # ~100 bytes into an empty socket buffer
            raise SystemExit("the reference could not send a whole request at once")

    def _readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(65_536, socket.CMSG_SPACE(16))
        except BlockingIOError:
            return
        sec, nsec = struct.unpack("@qq", ancillary[0][2])
        now = kernel_stamp_on_perf_counter(sec * 1_000_000_000 + nsec)  # as perfray's client
        self.buffered += len(data)
        while self.buffered >= len(RESPONSE):
            self.buffered -= len(RESPONSE)
            self.client.done(self, self.pending.popleft(), now)


class Reference:
    """The bare open-loop client: constant arrivals, latency = reply bytes − intended send time (the kernel's
    receive stamp of the bytes, or with ``read_stamps`` the moment they are read)."""

    def __init__(self, rate: float, seconds: float, connections: int, read_stamps: bool = False) -> None:
        self.rate, self.seconds, self.connections, self.read_stamps = rate, seconds, connections, read_stamps

    async def run(self, port: int) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if self.read_stamps:
            conns = [(await loop.create_connection(lambda: _RefConn(self), "127.0.0.1", port))[1]
                     for _ in range(self.connections)]
        else:
            conns = [_RefSocket(self, port) for _ in range(self.connections)]
        self.idle, self.queue = deque(conns), deque()
        n = int(self.rate * (self.seconds + 1))
        start = time.perf_counter_ns() + 100_000_000
        self.intended = start + (np.arange(n) * 1e9 / self.rate).astype(np.int64) + int(0.5e9 / self.rate)
        self.latency = np.zeros(n, dtype=np.int64)
        self.left = n
        self.finished = loop.create_future()
        self.next, self.pacer = 0, Pacer(loop)
        self.pacer.arm(int(self.intended[0]), self._tick)
        try:
            await self.finished
        finally:
            self.pacer.close()
        first_measured = int(self.rate)  # the first second is warm-up, as in the sweep
        return self.latency[first_measured:]

    def _tick(self) -> None:
        """Send every request due by now, then sleep (timerfd) until the next one is due: no spinning core."""
        now, n = time.perf_counter_ns(), self.intended.size
        while self.next < n and self.intended[self.next] <= now:
            self._send(self.next)
            self.next += 1
        if self.next < n:
            self.pacer.arm(int(self.intended[self.next]), self._tick)

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


def reference(port: int, rate: float, seconds: float, out: Path, nice: bool):
    """The reference client in its own process (so its priority is its own): (latencies ns, CPU µs per request)."""
    path = out / f"ref-{rate:g}-{time.monotonic_ns()}.npz"
    subprocess.run([sys.executable, __file__, "--reference", str(port), str(rate), str(seconds), str(path),
                    "--nice" if nice else "--no-nice", "--read-stamps" if READ_STAMPS else "--kernel-stamps"],
                   check=True, timeout=seconds + 120, preexec_fn=_on(PIN, "client"))
    saved = np.load(path)
    return saved["latency"], float(saved["cpu_us"])


def _reference_main(port: str, rate: str, seconds: str, path: str, nice: str, stamps: str) -> None:
    if nice == "--nice":
        from perfray.load.host import raise_priority

        raise_priority()
    cpu = time.process_time()
    latency = run_fast(Reference(float(rate), float(seconds), 256, stamps == "--read-stamps").run(int(port)))
    np.savez(path, latency=latency, cpu_us=(time.process_time() - cpu) / latency.size * 1e6)


IDLE_RAY = """
import sys, ray
from perfray.cluster.actors import load_actor_class
from perfray.cluster.runtime import quiet_observers
from perfray.config import MetricsSpec
ray.init(address="local", num_cpus=2, log_to_driver=False, include_dashboard=None,
         _system_config={"metrics_report_interval_ms": MetricsSpec().report_interval_ms})  # the sweep's default
quiet_observers()  # as the sweep does to the Ray it embeds
actor = load_actor_class().options(num_cpus=1, max_concurrency=1000).remote(0, "idle", False)
ray.get(actor.pid.remote())
print("ready", flush=True)
sys.stdin.read()
"""


class IdleRay:
    """An embedded Ray started with the sweep's options (its observers at the sweep's lower priority) and one idle
    load actor, up until the block ends."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", IDLE_RAY], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=REPO, preexec_fn=_on(PIN, "client"))
        if self.proc.stdout.readline().strip() != "ready":
            raise SystemExit("the idle Ray did not start")
        time.sleep(5)  # the dashboard's start-up burst is over
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        self.proc.wait(60)


class Server:
    """The responder, keeping its own lateness: ``taken()`` is each delayed reply's write − due (ns) since the last
    call, so a client that kept a shared box's server from its work is told apart from one that mis-measured."""

    def __init__(self, out: Path, *args: str) -> None:
        self.port, self.path = free_port(), out / f"server-lateness-{time.monotonic_ns()}.npy"
        self.proc = subprocess.Popen([sys.executable, "-m", "perfray.services.http_responder", "--port", str(self.port),
                                      "--lateness-out", str(self.path), *args], preexec_fn=_on(PIN, "server"))
        wait_for_port(self.port, 20, "responder")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/search"

    def taken(self) -> np.ndarray:
        self.path.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                return np.load(self.path)
            except (OSError, ValueError, EOFError):  # not (completely) written yet
                time.sleep(0.05)
        raise SystemExit("the responder did not save its lateness")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Runs:
    """One client's runs at one rate, pooled: latencies, the server's lateness meanwhile, CPU per request."""

    def __init__(self, name: str, note: str = "") -> None:
        self.name, self.note, self.latency, self.server, self.cpu = name, note, [], [], []

    def add(self, latency: np.ndarray, server_late: np.ndarray, cpu_us: float) -> None:
        self.latency.append(latency)
        self.server.append(server_late)
        self.cpu.append(cpu_us)

    def quantiles(self) -> np.ndarray:
        return np.quantile(np.concatenate(self.latency), Q) / 1e6

    def row(self, rate: float) -> None:
        late = np.quantile(np.concatenate(self.server), 0.99) / 1e6
        _row(rate, self.name, self.quantiles(), f" {late:>9.3f} {np.mean(self.cpu):>8.1f}{self.note}")


Q = [0.5, 0.99, 0.999]


def _row(rate: float, name: str, q: np.ndarray, note: str = "") -> None:
    print(f"{rate:>7,.0f} {name:<22} {q[0]:>8.3f} {q[1]:>8.3f} {q[2]:>9.3f}{note}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--delay-ms", type=float, default=3.0, help="the server's steady service time")
    parser.add_argument("--rates", default="500,5000")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per rate (samples pooled)")
    parser.add_argument("--pin", action="store_true",
                        help="the server alone on CPU 0; the client measured (the reference, or perfray's load "
                        "generator through cluster.generator_cpus), Ray and the driver on CPU 1: every client alike")
    parser.add_argument("--skip-8000", action="store_true", help="leave out the 8,000 req/s sweep")
    parser.add_argument("--read-stamps", action="store_true",
                        help="the reference stamps a reply when it reads it, not with the kernel's receive time")
    parser.add_argument("--compare", nargs="+", metavar="KEY=VALUE[;KEY=VALUE]",
                        help="instead: perfray sweeps only, one per setting ('base' for none), interleaved over "
                        "--rounds; prints each round's p99 and the pooled quantiles (an A/B of perfray's own options)")
    if len(sys.argv) > 1 and sys.argv[1] == "--reference":
        return _reference_main(*sys.argv[2:8])
    args = parser.parse_args()
    if args.pin:
        PIN.update(server=0, client=1)
    global READ_STAMPS
    READ_STAMPS = args.read_stamps
    if args.compare:
        return compare(args)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        server = Server(out, "--delay-ms", str(args.delay_ms))
        try:
            print(f"server answers every request after {args.delay_ms:g} ms; {args.seconds:g} s per run, constant "
                  f"arrivals, 256 connections each, {args.rounds} interleaved rounds pooled; 'server late' is the "
                  "server's own lateness (reply written - due), 'CPU' the client's per request; "
                  + ("pinned: the server alone on CPU 0; the client measured, Ray and the driver on CPU 1" if PIN
                     else "nothing pinned") + "; the reference stamps replies "
                  + ("when it reads them" if READ_STAMPS else "with the kernel's receive time")
                  + "\n")
            print(f"{'rate/s':>7} {'client':<22} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'server late p99 ms':>9} "
                  f"{'CPU us':>8}")
            for rate in (float(r) for r in args.rates.split(",")):
                alone, beside = Runs("reference alone"), Runs("reference beside Ray")
                ours = Runs("perfray sweep")
                inline = Runs("  generator in actor", "   (cluster.generator_process: false)")
                bad = 0
                for r in range(args.rounds):  # interleaved, so a drift of the box hits every client alike
                    server.taken()
                    alone.add(*_first(reference(server.port, rate, args.seconds, out, nice=False), server))
                    with IdleRay():
                        server.taken()
                        beside.add(*_first(reference(server.port, rate, args.seconds, out, nice=True), server))
                    for runs, run_id, extra in ((ours, f"r{int(rate)}-{r}", []),
                                                (inline, f"r{int(rate)}-{r}-inline", ["cluster.generator_process=false"])):
                        server.taken()
                        lat, _, n_bad, cpu = sweep(server.url, rate, args.seconds, out, run_id, extra)
                        runs.add(lat, server.taken(), cpu)
                        bad += n_bad
                for runs in (alone, beside, ours, inline):
                    runs.row(rate)
                print(f"{'':>7} (non-ok rows in the sweeps: {bad})")
                _row(rate, "added vs beside Ray", ours.quantiles() - beside.quantiles(),
                     "   (goal: <= 0.2 at p50, <= 0.5 at p99)")
                _row(rate, "added vs alone", ours.quantiles() - alone.quantiles())
                _row(rate, "  in actor, vs beside", inline.quantiles() - beside.quantiles())
        finally:
            server.close()
        if args.skip_8000:
            return
        server = Server(out)
        try:
            lat, lag, bad, cpu = sweep(server.url, 8000, 20, out, "r8000")
            print(f"\nsweep at 8,000 req/s for 20 s, one load actor, server answers at once: {lat.size:,} measured rows, "
                  f"non-ok {bad}, lag p99 {np.quantile(lag, 0.99) / 1e6:.3f} ms, latency p50 "
                  f"{np.quantile(lat, 0.5) / 1e6:.3f} ms, p99 {np.quantile(lat, 0.99) / 1e6:.3f} ms, generator CPU "
                  f"{cpu:.1f} us/request (goal: 0 non-ok, lag p99 <= 1 ms, latency p99 <= 2 ms)")
        finally:
            server.close()
    print("rerun: python benchmarks/http_sweep.py " + " ".join(sys.argv[1:]))


def compare(args) -> None:
    """perfray sweeps under each of ``args.compare``'s settings, interleaved round by round at each rate."""
    variants = {name: [] if name == "base" else name.split(";") for name in args.compare}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        server = Server(out, "--delay-ms", str(args.delay_ms))
        try:
            for rate in (float(r) for r in args.rates.split(",")):
                runs = {name: Runs(name) for name in variants}
                for r in range(args.rounds):
                    for i, (name, settings) in enumerate(variants.items()):
                        server.taken()
                        lat, _, bad, cpu = sweep(server.url, rate, args.seconds, out, f"c{int(rate)}-{r}-{i}", settings)
                        runs[name].add(lat, server.taken(), cpu)
                        print(f"{rate:>7,.0f} round {r} {name:<40} p99 {np.quantile(lat, 0.99) / 1e6:.3f} ms "
                              f"(non-ok {bad})", flush=True)
                print(f"\n{'rate/s':>7} {'pooled':<22} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} "
                      f"{'server late p99 ms':>9} {'CPU us':>8}")
                for name in variants:
                    runs[name].row(rate)
        finally:
            server.close()
    print("rerun: python benchmarks/http_sweep.py " + " ".join(sys.argv[1:]))


def _first(measured, server: Server):
    """A reference run's (latencies, server lateness meanwhile, CPU per request)."""
    latency, cpu = measured
    return latency, server.taken(), cpu


if __name__ == "__main__":
    main()
