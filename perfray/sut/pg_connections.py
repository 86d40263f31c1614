"""PostgreSQL connections on a load actor's event loop: a lean pool of psycopg ``AsyncConnection``s.

Taking an idle connection is a ``deque.pop()``: psycopg_pool's ``AsyncConnectionPool.connection()`` costs
11-12 µs per request on a cold 200 QPS path (its lock, stats and context manager), 0.2 µs here, measured
side by side (``benchmarks/async_clients.py``, hand-off). What psycopg_pool does that a benchmark needs is
kept: at most ``size`` connections, opened as demand grows; a request waits for one in turn (first come, first
served) for at most ``wait_s`` and then fails with ``PoolTimeout``; a broken connection (the server died, the
request was cancelled mid-query) is closed, never lent again, and replaced in the background, retrying with
backoff until the server answers again.
"""

from __future__ import annotations

import asyncio
from collections import deque

RETRY_FIRST_S = 0.05  # the first pause between failed reconnects, doubled up to RETRY_MAX_S
RETRY_MAX_S = 0.5


class AsyncConnections:
    """``await take()`` a connection, ``give(conn)`` it back when its result has been read."""

    def __init__(self, connect, size: int, min_size: int, wait_s: float, name: str) -> None:
        self._connect = connect  # async () -> a configured AsyncConnection
        self.size, self.min_size, self.wait_s, self.name = size, min(min_size, size), wait_s, name
        self._idle: deque = deque()
        self._waiters: deque[asyncio.Future] = deque()
        self._live = 0  # open connections, idle or lent
        self._connecting = 0
        self._tasks: set[asyncio.Task] = set()
        self.closed = False

    async def open(self, timeout_s: float) -> None:
        """Open ``min_size`` connections (at least one, so an unreachable server fails here, not per request)."""
        from psycopg_pool import PoolTimeout

        try:
            made = await asyncio.wait_for(asyncio.gather(
                *(self._connect() for _ in range(max(1, self.min_size))), return_exceptions=True), timeout_s)
        except TimeoutError:
            raise PoolTimeout(f"{self.name}: no connection within {timeout_s:g} s") from None
        conns = [c for c in made if not isinstance(c, BaseException)]
        if len(conns) < len(made):
            for conn in conns:
                await conn.close()
            raise next(c for c in made if isinstance(c, BaseException))
        self._live += len(conns)
        self._idle.extend(conns)

    async def take(self):
        if self._idle:
            return self._idle.pop()  # the most recently used: its socket and server backend are warm
        return await self._wait()

    async def _wait(self):
        from psycopg_pool import PoolClosed, PoolTimeout

        if self.closed:
            raise PoolClosed(f"{self.name} is closed")
        if self._live + self._connecting < self.size:
            self._grow()
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        expiry = loop.call_later(self.wait_s, _expire, waiter,
                                 PoolTimeout(f"{self.name}: no connection free within {self.wait_s:g} s"))
        try:
            return await waiter
        except BaseException:  # timed out, closed, or this request was cancelled: no connection may be lost
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.give(waiter.result())
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        finally:
            expiry.cancel()

    def give(self, conn) -> None:
        from psycopg.pq import TransactionStatus

        if self.closed or conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
            self._discard(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _discard(self, conn) -> None:
        self._live -= 1
        self._spawn(conn.close())
        if not self.closed and self._live + self._connecting < max(self.min_size, min(len(self._waiters), self.size)):
            self._grow()

    def _grow(self) -> None:
        self._connecting += 1
        self._spawn(self._connect_one())

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect_one(self) -> None:
        """One more connection, retried with backoff while the server does not answer."""
        import psycopg

        pause = RETRY_FIRST_S
        try:
            while not self.closed:
                try:
                    conn = await self._connect()
                except (psycopg.Error, OSError):
                    await asyncio.sleep(pause)
                    pause = min(2 * pause, RETRY_MAX_S)
                    continue
                self._live += 1
                self.give(conn)
                return
        finally:
            self._connecting -= 1

    def stats(self) -> dict[str, int]:
        idle = len(self._idle)
        return {"active": self._live - idle, "idle": idle, "waiting": sum(not w.done() for w in self._waiters)}

    async def close(self) -> None:
        """Close idle connections now and lent ones as they come back; waiting requests fail."""
        from psycopg_pool import PoolClosed

        self.closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosed(f"{self.name} is closed"))
        while self._idle:
            self._live -= 1
            await self._idle.pop().close()
        for task in list(self._tasks):
            task.cancel()


def _expire(waiter: asyncio.Future, err: Exception) -> None:
    if not waiter.done():
        waiter.set_exception(err)
