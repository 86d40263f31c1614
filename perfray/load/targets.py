"""Where a load generator sends micro-batches: search endpoints behind a replicated or sharded router.

``submit(queries, k, rows)`` (``rows``: the queries' pool rows) sends at once and returns an awaitable reply, so the generator's ``sent_ns`` is the
moment the request left, not when some task got scheduled. An endpoint says which of its exceptions mean it
is gone for good (``fatal_errors``), so routers never look at what kind of endpoint they hold.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from perfray.backends.base import answer_each, merge_topk, take_waiting
from perfray.data.filters import windows_of
from perfray.data.writes import shown
from perfray.load.eager import start_eagerly
from perfray.load.writing import write_and_probe
from perfray.timing import process_clock


class ThreadEndpoint:
    """A search worker in this process, served one batch at a time on its own thread (like an actor);
    ``filters``: the query pool's filter windows, when the cell filters."""

    fatal_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, worker, filters: np.ndarray | None = None) -> None:
        self.worker, self.filters = worker, filters
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="perfray-search")

    def submit(self, queries, k, rows=None):
        windows = windows_of(self.filters, rows)
        return asyncio.get_running_loop().run_in_executor(self._pool, self.worker.search, queries, k, windows)

    def apply_write(self, kind: str, item: int, vector):
        """On the worker's thread, in turn with its searches."""
        return asyncio.get_running_loop().run_in_executor(self._pool, self.worker.apply_write, kind, item, vector)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class SystemEndpoint:
    """A database system's client in this load actor, on one of three paths (``mode``, in the manifest):
    ``callback`` — the system starts the request on this loop itself and calls back (``send``); ``async`` —
    its ``execute_async`` coroutine runs on this loop, at most ``concurrency`` at once (one per pooled
    connection; the others wait here, in order); ``threads`` — a sync-only client runs each request on one of
    ``concurrency`` client threads. The reply carries the client's own ``sent_ns`` / ``done_ns`` (when
    the call began and returned): a hand-off to a thread, or a wait for a free connection, is perfray's time
    and shows as schedule lag, not as the system's service time. Latency is done − intended either way."""

    fatal_errors: tuple[type[BaseException], ...] = ()

    MODES = ("callback", "async", "threads")

    def __init__(self, system, concurrency: int, mode: str | None = None) -> None:
        self.system = system
        self.clock = process_clock()
        if mode is not None:  # a slower path on purpose (benchmarks compare them side by side)
            self.mode = mode
        elif getattr(system, "callback_native", False):
            self.mode = "callback"
        else:
            self.mode = "async" if getattr(system, "async_native", False) else "threads"
        if self.mode not in self.MODES:
            raise ValueError(f"client path {self.mode!r}: expected one of {', '.join(self.MODES)}")
        self.starts_on_send = self.mode != "threads"  # callback: written in send; async: started eagerly
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="perfray-client") \
            if self.mode == "threads" else None
        self._free, self._queued = concurrency, deque()  # the async path's slots and waiting requests

    def send(self, queries, k, rows, reply):
        if self.mode == "callback":
            return self.system.send(queries, k, rows, reply)
        if self.mode == "async":
            return self._enqueue(_AsyncRequest(self._call_async, queries, k, rows, reply))
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._call, queries, k, rows)
        future.add_done_callback(functools.partial(self._settled, reply))
        return future

    def write(self, writes, j: int, reply):
        """Write ``j`` of the cell's ``WriteSet`` (``load.writes``), in turn with the reads for a connection; a
        sampled write's freshness probes follow on the same slot."""
        if self.mode != "async":
            raise RuntimeError(f"load.writes: {self.system.name} writes on the async client path only, not {self.mode}")
        return self._enqueue(_AsyncRequest(self._write_async, writes, j, reply))

    def _enqueue(self, request):
        if self._free > 0:
            self._start(request)
        else:
            self._queued.append(request)
        return request

    async def call(self, queries, k, rows):
        """One request, awaited (priming before a cell)."""
        future = asyncio.get_running_loop().create_future()
        self.send(queries, k, rows, lambda **reply: future.done() or future.set_result(reply))
        reply = await future
        if reply.get("error") is not None:
            error = reply["error"]
            raise error if isinstance(error, BaseException) else RuntimeError(error)
        return reply

    async def warm(self, queries, k: int) -> None:
        """Let the system open its connections and encode its requests before load starts."""
        warm = getattr(self.system, "warm", None)
        if warm is not None and self.mode != "threads":  # it prepares the loop's own clients
            await warm(queries, k)

    def _start(self, request) -> None:
        """Started at once, up to the query going out (``start_eagerly``), then a task on this loop; it replies
        itself."""
        self._free -= 1
        request.task = start_eagerly(request.work(request))

    async def _call_async(self, request) -> None:
        queries, k, rows, reply = request.args
        sent_ns = self.clock.now_ns()  # started: later than send() when it waited for a slot
        try:
            answer = await self.system.execute_async(queries, k, rows)
        except Exception as err:  # a cancelled task (timed out) replies nothing
            reply(error=err, done_ns=self.clock.now_ns())
        else:
            self._replied(reply, answer, sent_ns, self.clock.now_ns())
        finally:
            self._slot_free()

    async def _write_async(self, request) -> None:
        writes, j, reply = request.args
        try:
            stamps = await write_and_probe(self.system, writes, j)
        except Exception as err:
            reply(error=err, done_ns=self.clock.now_ns())
        else:
            reply(**stamps)
        finally:
            self._slot_free()

    def _slot_free(self) -> None:
        self._free += 1
        while self._queued:
            waiting = self._queued.popleft()
            if not waiting.cancelled:
                self._start(waiting)
                break

    def _call(self, queries, k, rows):
        sent_ns = self.clock.now_ns()
        answer = self.system.execute(queries, k, rows)
        return answer, sent_ns, self.clock.now_ns()

    def _settled(self, reply, future) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            reply(error=error, done_ns=self.clock.now_ns())
            return
        self._replied(reply, *future.result())

    @staticmethod
    def _replied(reply, answer, sent_ns: int, done_ns: int) -> None:
        reply(result=(answer.ids, None, 0, answer.stages or None), sent_ns=answer.sent_ns or sent_ns,
              done_ns=answer.done_ns or done_ns)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)


class _AsyncRequest:
    """A request on ``SystemEndpoint``'s async path (``work(request)``: a read or a write): waiting for a slot,
    then a task."""

    __slots__ = ("work", "args", "task", "cancelled")

    def __init__(self, work, *args) -> None:
        self.work, self.args, self.task, self.cancelled = work, args, None, False

    def cancel(self) -> None:
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()


class RayEndpoint:
    """A ``GpuSearchActor`` handle; ``submit``'s third argument is the batch's filter windows (or None)."""

    def __init__(self, handle) -> None:
        from ray.exceptions import RayActorError

        self.handle = handle
        self.fatal_errors = (RayActorError,)

    def submit(self, queries, k, windows=None):
        return self.handle.search.remote(queries, k) if windows is None else \
            self.handle.search.remote(queries, k, windows)

    def apply_write(self, kind: str, item: int, vector):
        return self.handle.apply_write.remote(kind, item, vector)


class CoalescingEndpoint:
    """At most ``max_calls`` calls in flight to ``endpoint``; micro-batches that come meanwhile wait here and
    go together as the next call (one round trip instead of several: a Ray call costs ~1 ms and an actor
    serves ~2K of them a second on 2 cores). Each waiting batch's reply is its own rows of the merged one.
    ``filters``: the query pool's filter windows (the pool rows a batch asks become its windows), when the cell
    filters; ``endpoint.submit(queries, k, windows)``."""

    def __init__(self, endpoint, max_calls: int = 2, max_rows: int = 4096, filters: np.ndarray | None = None) -> None:
        self.endpoint, self.max_calls, self.max_rows, self.filters = endpoint, max_calls, max_rows, filters
        self.fatal_errors = endpoint.fatal_errors
        self._waiting: list = []
        self._in_flight = 0

    def submit(self, queries, k, rows=None):
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append((queries, k, answer, windows_of(self.filters, rows)))
        if self._in_flight < self.max_calls:
            self._dispatch()
        return answer

    def apply_write(self, kind: str, item: int, vector):
        """Straight to the endpoint: a write is not coalesced with searches."""
        return self.endpoint.apply_write(kind, item, vector)

    def _dispatch(self) -> None:
        taken, queries, k_max, windows = take_waiting(self._waiting, self.max_rows)  # a timed-out batch: not sent
        if not taken:
            return
        self._in_flight += 1
        try:
            reply = asyncio.ensure_future(self.endpoint.submit(queries, k_max, windows))
        except Exception as err:
            self._settle(taken, None, err)
            return
        reply.add_done_callback(functools.partial(self._replied, taken))

    def _replied(self, taken, reply) -> None:
        if reply.cancelled():
            self._settle(taken, None, asyncio.CancelledError())
        else:
            self._settle(taken, None if reply.exception() else reply.result(), reply.exception())

    def _settle(self, taken, result, error) -> None:
        self._in_flight -= 1
        answer_each(taken, result, error)
        if self._waiting and self._in_flight < self.max_calls:
            self._dispatch()


class NoLiveEndpoint(RuntimeError):
    """Every replica behind a router is gone."""


class _RoutedWrites:
    """``load.writes`` through a router (``perfray.load.writing``): a write is acknowledged once every endpoint
    that holds the item (``_owners``) has applied it; a probe is a one-query search routed like any other."""

    async def write_async(self, writes, j: int) -> tuple[int, int]:
        clock = process_clock()
        sent_ns = clock.now_ns()
        item, vector = int(writes.ids[j]), writes.vectors[j]
        await asyncio.gather(*(self.endpoints[i].apply_write(writes.kind, item, vector) for i in self._owners(writes, j)))
        return sent_ns, clock.now_ns()

    async def shows_async(self, writes, j: int) -> tuple[bool, int]:
        sent_ns = process_clock().now_ns()
        ids, *_ = await self.submit(writes.vectors[j][None, :], 1)
        return shown(writes, j, int(ids[0, 0])), sent_ns


class ReplicatedRouter(_RoutedWrites):
    """Each batch goes to the live replica with the fewest batches in flight (what a load balancer does)."""

    def __init__(self, endpoints: list) -> None:
        self.endpoints = list(endpoints)
        self.in_flight = [0] * len(endpoints)
        self.dead: set[int] = set()
        self._next = 0

    def _owners(self, writes, j: int) -> list[int]:
        """Every live replica holds every item."""
        return [i for i in range(len(self.endpoints)) if i not in self.dead]

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
            ids, dists, *spans = await reply  # spans: the search actor's queue and search times, when it gives them
        except Exception as err:
            if isinstance(err, endpoint.fatal_errors):  # an empty tuple matches nothing
                self.dead.add(pick)
            err.perfray_endpoint = pick  # an error row still names the replica that failed it (and so its node)
            raise
        finally:
            self.in_flight[pick] -= 1
        return ids, dists, pick, *spans


class ShardedRouter(_RoutedWrites):
    """Each batch goes to every shard; per-shard top-k lists are merged exactly."""

    def __init__(self, endpoints: list) -> None:
        self.endpoints = list(endpoints)

    def _owners(self, writes, j: int) -> list[int]:
        """The shard holding the item: a dataset item's own shard, a new one's by its number (spread evenly)."""
        from perfray.sut.gpu_search import shard_bounds

        item, n, shards = int(writes.ids[j]), writes.n_items, len(self.endpoints)
        if item >= n:
            return [(item - n) % shards]
        ends = [shard_bounds(n, s, shards)[1] for s in range(shards)]
        return [int(np.searchsorted(ends, item, side="right"))]

    def submit(self, queries, k, rows=None):
        return self._merge([endpoint.submit(queries, k, rows) for endpoint in self.endpoints], k)

    async def _merge(self, replies: list, k: int):
        parts = await asyncio.gather(*replies)
        ids, dists = merge_topk([part[:2] for part in parts], k)
        spans = [part[2] for part in parts if len(part) > 2]  # the slowest shard's queue and search
        return (ids, dists, -1, *([{name: max(s[name] for s in spans) for name in spans[0]}] if spans else []))


ROUTERS = {"replicated": ReplicatedRouter, "sharded": ShardedRouter}


def make_router(topology: str, endpoints: list):
    return ROUTERS[topology](endpoints)
