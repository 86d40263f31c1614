"""A load generator in a process of its own, beside the Ray load actor that owns it.

A Ray worker is a busy interpreter: its core-worker threads hand calls to Python, Ray's metrics record
histograms, the driver's drains serialise Arrow batches into the object store. Each of those holds the GIL that
the generator needs to send on time and to stamp a reply when its bytes arrive: measured against a bare client
beside the same idle Ray, a generator inside the actor added ~1 ms to a 3 ms server's p99 while the same
generator in a plain process added nothing measurable. So for systems whose clients need no Ray (HTTP,
PostgreSQL, Neo4j, Milvus), the load actor starts this process once, and the generator, its system client and
its recorder live here: the actor only forwards calls and receives finished rows.

Calls go over a socket pair as length-prefixed pickles ``(id, op, args)`` and answers ``(id, ok, value)``; the
child answers each call in a task of its own, so drains are answered while a cell runs, and writes replies
without blocking its loop. The child exits at once when the socket closes (its load actor died or was killed),
so no orphan keeps sending load. A child that dies is reported as ``GeneratorProcessDied``.

    python -m perfray.load.generator_process FD ACTOR   (started by GeneratorProcess, never by hand)
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys

from perfray.load.host import GeneratorHost

HEADER = struct.Struct("<Q")
OPS = frozenset({"prime_system", "run_cell", "drain", "close_system"})


class GeneratorProcessDied(RuntimeError):
    """The generator process ended while its load actor still needed it."""


def _frame(message) -> bytes:
    payload = pickle.dumps(message, protocol=5)
    return HEADER.pack(len(payload)) + payload


async def _read(reader: asyncio.StreamReader):
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    return pickle.loads(await reader.readexactly(size))


class GeneratorProcess:
    """The calls of a ``GeneratorHost`` (``prime_system``, ``run_cell`` for a system's cell, ``drain``), answered
    by one in a child process started on first use. The catalogue crosses only when the system's plan changes."""

    def __init__(self, actor: int) -> None:
        self.actor = actor
        self.proc: subprocess.Popen | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future] = {}
        self._ids = itertools.count()
        self._sent_key = None
        self._reading: asyncio.Task | None = None
        self._died: str | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def _start(self) -> None:
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the actor's imports
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "perfray.load.generator_process", str(theirs.fileno()), str(self.actor)],
                pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_connection(sock=ours)
        self._reading = asyncio.ensure_future(self._read_answers(reader))

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                call_id, ok, value = await _read(reader)
                future = self._pending.pop(call_id, None)
                if future is None or future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as err:
            code = await asyncio.get_running_loop().run_in_executor(None, self._exit_code)
            self._died = f"load actor {self.actor}'s generator process (pid {self.pid}) ended: exit code {code} " \
                         f"({type(err).__name__})"
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(GeneratorProcessDied(self._died))
            self._pending.clear()

    def _exit_code(self):
        try:
            return self.proc.wait(5)
        except subprocess.TimeoutExpired:
            return None

    async def _call(self, op: str, *args):
        if self._died is not None:
            raise GeneratorProcessDied(self._died)
        if self.proc is None:
            await self._start()
        call_id = next(self._ids)
        future = self._pending[call_id] = asyncio.get_running_loop().create_future()
        self._writer.write(_frame((call_id, op, args)))
        await self._writer.drain()
        return await future

    def _catalogue_for(self, plan, catalogue):
        if plan.key == self._sent_key:
            return None  # the child keeps the client it built for this plan
        self._sent_key = plan.key
        return catalogue

    async def prime_system(self, plan, catalogue, gpu_handles, pool, k: int, rounds: int = 3) -> int:
        return await self._call("prime_system", plan, self._catalogue_for(plan, catalogue), None, pool, k, rounds)

    async def run_cell(self, plan, pool, gpu_handles, topology: str, system=None, catalogue=None) -> dict:
        return await self._call("run_cell", plan, pool, None, topology, system, self._catalogue_for(system, catalogue))

    async def drain(self):
        if self.proc is None:
            return None, 0, None
        return await self._call("drain")

    def close(self) -> None:
        """Stop the child: its socket closes, and it exits."""
        if self._writer is not None:
            self._writer.close()
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _answer(host: GeneratorHost, writer: asyncio.StreamWriter, call_id: int, op: str, args) -> None:
    try:
        if op not in OPS:
            raise ValueError(f"generator process: unknown call {op!r}")
        value = getattr(host, op)(*args)
        if asyncio.iscoroutine(value):
            value = await value
        frame = _frame((call_id, True, value))
    except Exception as err:
        try:
            frame = _frame((call_id, False, err))
        except Exception:  # an exception that does not pickle: its class and message still cross
            frame = _frame((call_id, False, RuntimeError(f"{type(err).__name__}: {err}")))
    writer.write(frame)
    await writer.drain()


async def serve(sock: socket.socket, actor: int) -> None:
    """The child's loop: answer calls until the socket closes, then exit at once (whatever is still running)."""
    reader, writer = await asyncio.open_connection(sock=sock)
    host = GeneratorHost(actor)
    running: set[asyncio.Task] = set()
    while True:
        try:
            call_id, op, args = await _read(reader)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            os._exit(0)  # the load actor is gone: stop sending now, flush nothing (its rows went with it)
        task = asyncio.ensure_future(_answer(host, writer, call_id, op, args))
        running.add(task)
        task.add_done_callback(running.discard)


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops runs; a terminal's Ctrl-C is the driver's
    from perfray.load.pacer import run_fast

    fd, actor = int(argv[0]), int(argv[1])
    run_fast(serve(socket.socket(fileno=fd), actor))


if __name__ == "__main__":
    main(sys.argv[1:])
