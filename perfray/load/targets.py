"""Where a load generator sends micro-batches: search endpoints behind a replicated or sharded router.

``submit(queries, k)`` sends at once and returns an awaitable reply, so the generator's ``sent_ns`` is the
moment the request left, not when some task got scheduled. An endpoint says which of its exceptions mean it
is gone for good (``fatal_errors``), so routers never look at what kind of endpoint they hold.
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

    def submit(self, queries, k):
        return asyncio.get_running_loop().run_in_executor(self._pool, self.worker.search, queries, k)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class RayEndpoint:
    """A ``GpuSearchActor`` handle."""

    def __init__(self, handle) -> None:
        from ray.exceptions import RayActorError

        self.handle = handle
        self.fatal_errors = (RayActorError,)

    def submit(self, queries, k):
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

    def submit(self, queries, k):
        live = [i for i in range(len(self.endpoints)) if i not in self.dead]
        if not live:
            raise NoLiveEndpoint("every search replica has died")
        self._next = (self._next + 1) % len(self.endpoints)
        pick = min(live, key=lambda i: (self.in_flight[i], (i - self._next) % len(self.endpoints)))
        reply = self.endpoints[pick].submit(queries, k)
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

    def submit(self, queries, k):
        return self._merge([endpoint.submit(queries, k) for endpoint in self.endpoints], k)

    async def _merge(self, replies: list, k: int):
        parts = await asyncio.gather(*replies)
        ids, dists = merge_topk(list(parts), k)
        return ids, dists, -1


ROUTERS = {"replicated": ReplicatedRouter, "sharded": ShardedRouter}


def make_router(topology: str, endpoints: list):
    return ROUTERS[topology](endpoints)
