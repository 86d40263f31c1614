"""Where a load generator sends micro-batches: search endpoints behind a replicated or sharded router.

An endpoint is an async callable ``(queries, k) -> (ids, dists)``; each says which of its exceptions mean
it is gone for good (``fatal_errors``), so routers never look at what kind of endpoint they hold.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from perfray.backends.base import merge_topk


class ThreadEndpoint:
    """A search worker in this process, served one batch at a time on its own thread (like an actor)."""

    fatal_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, worker) -> None:
        self.worker = worker
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="perfray-search")

    async def __call__(self, queries, k):
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.worker.search, queries, k)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class RayEndpoint:
    """A ``GpuSearchActor`` handle."""

    def __init__(self, handle) -> None:
        from ray.exceptions import RayActorError

        self.handle = handle
        self.fatal_errors = (RayActorError,)

    async def __call__(self, queries, k):
        return await self.handle.search.remote(queries, k)


class ReplicatedRouter:
    """Each batch goes to the live replica with the fewest batches in flight (what a load balancer does)."""

    def __init__(self, endpoints: list) -> None:
        self.endpoints = list(endpoints)
        self.in_flight = [0] * len(endpoints)
        self.dead: set[int] = set()
        self._next = 0

    async def search(self, queries, k):
        live = [i for i in range(len(self.endpoints)) if i not in self.dead]
        if not live:
            raise NoLiveEndpoint("every search replica has died")
        self._next = (self._next + 1) % len(self.endpoints)
        pick = min(live, key=lambda i: (self.in_flight[i], (i - self._next) % len(self.endpoints)))
        endpoint = self.endpoints[pick]
        self.in_flight[pick] += 1
        try:
            ids, dists = await endpoint(queries, k)
        except endpoint_fatal(endpoint):
            self.dead.add(pick)
            raise
        finally:
            self.in_flight[pick] -= 1
        return ids, dists, pick


class ShardedRouter:
    """Each batch goes to every shard; per-shard top-k lists are merged exactly."""

    def __init__(self, endpoints: list) -> None:
        self.endpoints = list(endpoints)

    async def search(self, queries, k):
        parts = await asyncio.gather(*(endpoint(queries, k) for endpoint in self.endpoints))
        ids, dists = merge_topk(list(parts), k)
        return ids, dists, -1


class NoLiveEndpoint(RuntimeError):
    """Every replica behind a router is gone."""


def endpoint_fatal(endpoint) -> tuple[type[BaseException], ...]:
    return getattr(endpoint, "fatal_errors", ()) or (NoLiveEndpoint,)


ROUTERS = {"replicated": ReplicatedRouter, "sharded": ShardedRouter}


def make_router(topology: str, endpoints: list):
    return ROUTERS[topology](endpoints)
