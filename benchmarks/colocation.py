"""Co-location, measured: a loopback HTTP service heavier than perfray's own responder (Python asyncio streams:
a StreamReader per connection, headers parsed into a dict, the JSON body decoded, the reply encoded per request),
on the same cores as the client, driven at the same rates and schedule by

- a bare reference client (``http_sweep.Reference``: one process, pre-encoded requests, an open loop on a timerfd,
  kernel receive stamps), and
- ``python -m perfray.sweep`` (the ``http`` system, one load actor) under each setting given (``base``: none),

interleaved over ``--rounds``. Per variant: p50/p99/p99.9 latency, the server's own CPU (cores, from its process
times) and, for perfray, what its own processes took on the host (the cell's ``host_cpu`` in ``manifest.json``:
load actors, driver, Ray daemons). perfray minus the reference is what a user of a shared small box gets from the
harness itself.

    python benchmarks/colocation.py [--rates 5000,8000] [--delay-ms 0] [--seconds 10] [--rounds 2]
                                    [--variants base "metrics.enabled=false"]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_sweep import REPO, reference, sweep  # noqa: E402

from perfray.services.http_responder import RESPONSE  # noqa: E402
from perfray.services.process import free_port, wait_for_port  # noqa: E402

HEAVY_SERVER = r'''
import asyncio, json, sys
DELAY_S = float(sys.argv[2]) / 1000

def reply() -> bytes:
    body = json.dumps({"ids": list(range(10))}).encode()
    head = f"HTTP/1.1 200 X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body

async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:] if l)}
            body = await reader.readexactly(int(headers.get("content-length", 0)))
            json.loads(body or b"{}")
            if DELAY_S:
                await asyncio.sleep(DELAY_S)
            writer.write(reply())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    async with server:
        await server.serve_forever()

asyncio.run(main())
'''


class HeavyServer:
    def __init__(self, delay_ms: float) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-c", HEAVY_SERVER, str(self.port), str(delay_ms)])
        wait_for_port(self.port, 20, "heavy server")
        self.ps = psutil.Process(self.proc.pid)

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _settings(variant: str) -> list[str]:
    return [] if variant == "base" else [s for s in variant.split(";") if s]


def one(server: HeavyServer, variant: str, rate: float, seconds: float, out: Path, n: int) -> dict:
    cpu0, t0 = server.cpu_s(), time.monotonic()
    if variant == "reference":
        latency, _ = reference(server.port, rate, seconds, out, nice=False)
        harness = None
    else:
        run_id = f"r{n}"
        latency, _lag, bad, _ = sweep(f"http://127.0.0.1:{server.port}/search", rate, seconds, out, run_id,
                                      _settings(variant))
        if bad:
            print(f"    ({variant}: {bad} non-ok rows)")
        harness = json.loads((out / run_id / "manifest.json").read_text())["cells"][0]["host_cpu"]
    # the server's cores while it was driven: over the reference's run; over the sweep's cell (its host_cpu
    # "other", busy time no perfray process accounts for), not over the sweep's start-up
    served = harness["other_cores"] if harness else (server.cpu_s() - cpu0) / (time.monotonic() - t0)
    return {"latency": latency, "server_cores": served, "harness": harness}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="5000,8000")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="the server's wait before each reply")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["base"], metavar="KEY=VALUE[;KEY=VALUE]")
    args = parser.parse_args()
    variants = ["reference", *args.variants]
    server = HeavyServer(args.delay_ms)
    assert RESPONSE == subprocess.run([sys.executable, "-c", HEAVY_SERVER.split("async def serve")[0]
                                       + "sys.stdout.buffer.write(reply())", "0", "0"],
                                      capture_output=True, check=True).stdout, "the reply must match the reference's"
    print(f"# {time.strftime('%Y-%m-%d')} {psutil.cpu_count()} CPUs; heavy asyncio-streams server, delay "
          f"{args.delay_ms:g} ms; {args.seconds:g} s per run (1 s warm-up), {args.rounds} interleaved rounds; "
          f"python {sys.version.split()[0]}; commit {_commit()}")
    print(f"# {'rate':>6} {'variant':<44} {'p50 ms':>8} {'p99 ms':>8} {'p99.9':>8} {'server':>7} {'harness':>8} "
          f"{'load':>6} {'driver':>6} {'Ray':>6} {'host busy':>9}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            n = 0
            for rate in [float(r) for r in args.rates.split(",")]:
                pooled = {v: [] for v in variants}
                for _ in range(args.rounds):
                    for v in variants:
                        n += 1
                        pooled[v].append(one(server, v, rate, args.seconds, Path(tmp), n))
                for v in variants:
                    _row(rate, v, pooled[v])
    finally:
        server.close()


def _row(rate: float, variant: str, runs: list[dict]) -> None:
    q = np.percentile(np.concatenate([r["latency"] for r in runs]), [50, 99, 99.9]) / 1e6
    server = np.mean([r["server_cores"] for r in runs])
    if runs[0]["harness"] is None:
        cpu = " " * 8 + "   " + " " * 34
    else:
        h = {k: np.mean([r["harness"][k] for r in runs]) for k in
             ("harness_cores", "load_cores", "driver_cores", "ray_cores", "busy_share")}
        cpu = (f"{h['harness_cores']:8.2f} {h['load_cores']:6.2f} {h['driver_cores']:6.2f} {h['ray_cores']:6.2f} "
               f"{h['busy_share']:9.0%}")
    print(f"{rate:8,.0f} {variant[:44]:<44} {q[0]:8.3f} {q[1]:8.3f} {q[2]:8.3f} {server:7.2f} {cpu}")


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() or "?"


if __name__ == "__main__":
    main()
