"""Where a load generator sends micro-batches: search endpoints behind a replicated or sharded router.

``submit(queries, k, rows)`` (``rows``: the queries' pool rows) sends at once and returns an awaitable reply, so the generator's ``sent_ns`` is the
moment the request left, not when some task got scheduled. An endpoint says which of its exceptions mean it
is gone for good (``fatal_errors``), so routers never look at what kind of endpoint they hold.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from perfray.backends.base import merge_topk
from perfray.timing import Clock


class ThreadEndpoint:
    """A search worker in this process, served one batch at a time on its own thread (like an actor)."""

    fatal_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, worker) -> None:
        self.worker = worker
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="perfray-search")

    def submit(self, queries, k, rows=None):
        return asyncio.get_running_loop().run_in_executor(self._pool, self.worker.search, queries, k)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class SystemEndpoint:
    """A database system's client in this load actor: each batch runs on one of ``concurrency`` client
    threads (the client's connection pool is the system's concern). Replies carry the stage spans and the
    client thread's own ``sent_ns`` / ``done_ns`` (when the call began and returned): handing the request to a
    thread and the reply back to the event loop is perfray's time, so it shows as schedule lag (queueing
    for a free client included), not as the system's service time. Latency is done − intended either way."""

    fatal_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, system, concurrency: int) -> None:
        self.system = system
        self.clock = Clock()
        self._async = bool(getattr(system, "async_native", False))
        self._pool = None if self._async else ThreadPoolExecutor(max_workers=concurrency,
                                                                  thread_name_prefix="perfray-client")

    def submit(self, queries, k, rows=None):
        if self._async:  # the request is started now, on this loop
            return asyncio.ensure_future(self._call_async(queries, k, rows))
        return asyncio.get_running_loop().run_in_executor(self._pool, self._call, queries, k, rows)

    async def _call_async(self, queries, k, rows):
        sent_ns = self.clock.now_ns()  # the task runs: later than submit() when the loop is saturated
        answer = await self.system.execute_async(queries, k, rows)
        return self._reply(answer, sent_ns, self.clock.now_ns())

    def _call(self, queries, k, rows):
        sent_ns = self.clock.now_ns()
        answer = self.system.execute(queries, k, rows)
        return self._reply(answer, sent_ns, self.clock.now_ns())

    @staticmethod
    def _reply(answer, sent_ns: int, done_ns: int):
        stamps = {"sent_ns": answer.sent_ns or sent_ns, "done_ns": answer.done_ns or done_ns}
        return answer.ids, None, 0, {**(answer.stages or {}), **stamps}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)


class RayEndpoint:
    """A ``GpuSearchActor`` handle."""

    def __init__(self, handle) -> None:
        from ray.exceptions import RayActorError

        self.handle = handle
        self.fatal_errors = (RayActorError,)

    def submit(self, queries, k, rows=None):
        return self.handle.search.remote(queries, k)


class NoLiveEndpoint(RuntimeError):
    """Every replica behind a router is gone."""


class ReplicatedRouter:
    """Each batch goes to the live replica with the fewest batches in flight (what a load balancer does)."""

    def __init__(self, endpoints: list) -> None:
        self.endpoints = list(endpoints)
        self.in_flight = [0] * len(endpoints)
        self.dead: set[int] = set()
        self._next = 0

    def submit(self, queries, k, rows=None):
        live = [i for i in range(len(self.endpoints)) if i not in self.dead]
        if not live:
            raise NoLiveEndpoint("every search replica has died")
        self._next = (self._next + 1) % len(self.endpoints)
        pick = min(live, key=lambda i: (self.in_flight[i], (i - self._next) % len(self.endpoints)))
        reply = self.endpoints[pick].submit(queries, k, rows)
        self.in_flight[pick] += 1
        return self._reply(pick, reply)

    async def _reply(self, pick: int, reply):
        endpoint = self.endpoints[pick]
        try:
            ids, dists = await reply
        except endpoint.fatal_errors:  # an empty tuple catches nothing
            self.dead.add(pick)
            raise
        finally:
            self.in_flight[pick] -= 1
        return ids, dists, pick


class ShardedRouter:
    """Each batch goes to every shard; per-shard top-k lists are merged exactly."""

    def __init__(self, endpoints: list) -> None:
        self.endpoints = list(endpoints)

    def submit(self, queries, k, rows=None):
        return self._merge([endpoint.submit(queries, k, rows) for endpoint in self.endpoints], k)

    async def _merge(self, replies: list, k: int):
        parts = await asyncio.gather(*replies)
        ids, dists = merge_topk(list(parts), k)
        return ids, dists, -1


ROUTERS = {"replicated": ReplicatedRouter, "sharded": ShardedRouter}


def make_router(topology: str, endpoints: list):
    return ROUTERS[topology](endpoints)
