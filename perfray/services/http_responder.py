"""A local keep-alive HTTP/1.1 responder of known behaviour, for calibration, tests and benchmarks.

Every request gets the same small JSON body (``{"ids": [0..9]}``, status ``--status``) after ``--delay-ms``
(0: at once), or, with ``--service-ms S``, from a single FIFO server of deterministic service time S: each reply
leaves at max(its arrival, the previous reply's departure) + S, so the capacity is exactly 1000 / S req/s. With
``--stall-every-s P --stall-ms H`` it holds every reply for the first H ms of each P-second period (periods
count from ``--epoch-ns``, Unix ns) and releases them together at the end of the hold; each release is logged
to ``--release-log`` as one JSON line ``{"period", "released_ns", "written_ns": [each reply's write, in order]}``
(Unix ns), so a test can compute the truth. With ``--lateness-out PATH`` the server keeps its own lateness (each
delayed reply's write − its due time) and, on SIGUSR1, saves those since the last signal to PATH (``.npy``, ns):
a benchmark then tells a client that mis-measured from one that kept a shared box's server from its work.

    python -m perfray.services.http_responder --port 8080 [--delay-ms 3] [--cpu 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from collections import deque

from perfray.load.pacer import Pacer, run_fast

BODY = json.dumps({"ids": list(range(10))}).encode()


def response(status: int = 200) -> bytes:
    return (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: ".encode()
            + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


RESPONSE = response()


class _Responder(asyncio.Protocol):
    """Answers each complete request on a keep-alive connection (requests carry Content-Length bodies)."""

    def __init__(self, server: Responder) -> None:
        self.server, self.buffer, self.transport = server, b"", None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
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
            self.server.answer(self.transport)


class Responder:
    """The server's behaviour: immediate, delayed, or held during stalls."""

    def __init__(self, delay_ms: float = 0.0, stall_every_s: float = 0.0, stall_ms: float = 0.0,
                 epoch_ns: int = 0, release_log: str | None = None, status: int = 200,
                 service_ms: float = 0.0) -> None:
        self.response = response(status)
        self.delay_ns = int(delay_ms * 1e6)
        self.service_ns, self._free_at = int(service_ms * 1e6), 0
        self._due: deque = deque()
        self._pacer = None
        self.period_ns, self.hold_ns = int(stall_every_s * 1e9), int(stall_ms * 1e6)
        self.epoch_ns = epoch_ns or time.time_ns()
        self.held: dict[int, list] = {}
        self.log = open(release_log, "a", buffering=1) if release_log else None  # noqa: SIM115 - lives as long as the server
        self.lateness: list[int] | None = None  # each delayed reply's write − due (ns), when asked for

    def answer(self, transport) -> None:
        if self.hold_ns:
            now = time.time_ns()
            period, into = divmod(now - self.epoch_ns, self.period_ns)
            if now >= self.epoch_ns and into < self.hold_ns:
                if period not in self.held:
                    self.held[period] = []
                    release_ns = self.epoch_ns + period * self.period_ns + self.hold_ns
                    self._at(release_ns, self._release, period)
                self.held[period].append(transport)
                return
        if self.service_ns:
            self._free_at = max(time.perf_counter_ns(), self._free_at) + self.service_ns
            self._delayed(transport, self._free_at)
        elif self.delay_ns:
            self._delayed(transport, time.perf_counter_ns() + self.delay_ns)
        else:
            transport.write(self.response)

    def _delayed(self, transport, due: int) -> None:
        """Reply at ``due`` (perf_counter ns), to the tens of microseconds (a loop timer is up to 1 ms late).
        Dues arrive in order (a constant delay, or a FIFO server's departures)."""
        if self._pacer is None:
            self._pacer = Pacer(asyncio.get_running_loop())
        self._due.append((due, transport))
        if len(self._due) == 1:
            self._pacer.arm(due, self._reply_due)

    def _reply_due(self) -> None:
        now = time.perf_counter_ns()
        while self._due and self._due[0][0] <= now:
            due, transport = self._due.popleft()
            if self.lateness is not None:
                self.lateness.append(now - due)
            self._write(transport)
        if self._due:
            self._pacer.arm(self._due[0][0], self._reply_due)

    def _at(self, unix_ns: int, fn, *args) -> None:
        """Run ``fn`` at ``unix_ns``: the loop timer gets close, the last stretch is a precise sleep."""
        loop = asyncio.get_running_loop()

        def fire():
            remaining = unix_ns - time.time_ns()
            if remaining > 0:
                time.sleep(remaining / 1e9)
            fn(*args)

        loop.call_later(max(unix_ns - time.time_ns() - 2_000_000, 0) / 1e9, fire)

    def _release(self, period: int) -> None:
        released = time.time_ns()
        written = []
        for transport in self.held.pop(period, []):
            self._write(transport)
            written.append(time.time_ns())
        if self.log is not None:
            self.log.write(json.dumps({"period": period, "released_ns": released, "written_ns": written}) + "\n")

    def _write(self, transport) -> None:
        if not transport.is_closing():
            transport.write(self.response)


def serve(port: int, responder: Responder, host: str = "127.0.0.1", lateness_out: str | None = None) -> None:
    """Serve forever (uvloop when installed)."""

    def save_lateness():
        import numpy as np

        np.save(lateness_out, np.array(responder.lateness, dtype=np.int64))
        responder.lateness = []

    async def main():
        loop = asyncio.get_running_loop()
        if lateness_out:
            responder.lateness = []
            loop.add_signal_handler(signal.SIGUSR1, save_lateness)
        await loop.create_server(lambda: _Responder(responder), host, port, backlog=4096)
        await asyncio.Event().wait()

    run_fast(main())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m perfray.services.http_responder", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--service-ms", type=float, default=0.0, help="a single FIFO server of this service time")
    parser.add_argument("--stall-every-s", type=float, default=0.0)
    parser.add_argument("--stall-ms", type=float, default=0.0)
    parser.add_argument("--epoch-ns", type=int, default=0)
    parser.add_argument("--release-log")
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--cpu", type=int, help="pin the server to this core")
    parser.add_argument("--lateness-out", help="on SIGUSR1, save the delayed replies' lateness (ns) here (.npy)")
    args = parser.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    serve(args.port, Responder(args.delay_ms, args.stall_every_s, args.stall_ms, args.epoch_ns, args.release_log,
                               args.status, args.service_ms), lateness_out=args.lateness_out)


if __name__ == "__main__":
    main()
