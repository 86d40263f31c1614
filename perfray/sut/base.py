"""The system-under-test protocol, and what every system shares.

A system's constructor does no I/O; ``connect()`` opens clients (one line naming the store and URI if it
cannot), ``load(catalogue)`` writes the catalogue idempotently, ``prepare(catalogue)`` attaches to it for
serving, ``execute(queries, k, rows)`` answers one request (reading every result to the end) and
``close()`` lets go. Shared code reads the class flags, never a system's name.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from perfray.errors import UnavailableError


@dataclass
class Answer:
    """One request's result. ``ids``: the vector stage's top-k per query (recall is computed on them);
    ``items``: what the user would get, per query; ``stages``: span ns per stage and ``cache_hit``;
    ``sent_ns``/``done_ns``: when the request really left and came back, for a system that waits for a
    free connection itself (that wait is client-side queueing, not service)."""

    ids: np.ndarray | None = None
    items: list[np.ndarray] | None = None
    stages: dict | None = None
    sent_ns: int | None = None
    done_ns: int | None = None


class SystemUnderTest:
    """Base class of every system: flags plus do-nothing defaults."""

    name: ClassVar[str]
    stores: ClassVar[tuple[str, ...]] = ()  # stores it connects to (keys of ``StoresSpec``)
    thread_safe: ClassVar[bool] = True  # one instance may serve many client threads
    supported_ops: ClassVar[frozenset[str]] = frozenset()
    needs_gpu_actors: ClassVar[bool] = False
    micro_batched: ClassVar[bool] = False  # True: load actors send micro-batches to GPU actors themselves
    async_native: ClassVar[bool] = False  # True: ``execute_async`` runs on the load actor's event loop
    callback_native: ClassVar[bool] = False  # True: ``send(queries, k, rows, reply)`` starts it on that loop
    requires: ClassVar[tuple[str, ...]] = ()  # client modules (pip extras) it imports
    filterable: ClassVar[bool] = False  # True: applies ``workload.filter`` natively (``perfray.data.filters``)
    writable: ClassVar[bool] = False  # True: applies ``load.writes`` (``StoreWrites``, or its search actors)
    search_params: ClassVar[frozenset[str]] = frozenset()  # ``search.params`` it applies (config.SEARCH_PARAMS)

    def __init__(self, workload, stores) -> None:
        self.workload, self.stores_spec = workload, stores

    @classmethod
    def is_available(cls) -> bool:
        """Whether its client libraries are installed (``requires``)."""
        import importlib.util

        return all(importlib.util.find_spec(module) is not None for module in cls.requires)

    def label(self) -> str:
        """How reports name it (e.g. "Milvus Lite (embedded)")."""
        return self.name

    def connect(self) -> None: ...

    def load(self, catalogue, progress=None) -> dict:
        return {}

    def prepare(self, catalogue, gpu_handles: list | None = None) -> None:
        self.catalogue = catalogue

    def execute(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        raise NotImplementedError

    def pool_stats(self) -> dict[str, dict[str, int]]:
        """Connection-pool gauges per store: {store: {"active": n, "idle": n}}."""
        return {}

    def close(self) -> None: ...


class StoreSystem(SystemUnderTest):
    """A system served by one store client: ``make_store()`` builds it; loading, pool gauges and closing
    go to that client."""

    store = None

    def make_store(self):
        raise NotImplementedError  # each single-store system says which client it uses

    def connect(self) -> None:
        self.store = self.make_store()
        self.store.connect()

    def load(self, catalogue, progress=None) -> dict:
        return self.store.load(catalogue, progress)

    def pool_stats(self) -> dict[str, dict[str, int]]:
        stats = getattr(self.store, "stats", None)
        return {self.stores[0]: stats()} if stats else {}

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


class AsyncStoreSystem(StoreSystem):
    """A store-served system that also runs on the load actor's event loop (``execute_async``, through the store's
    async driver): ``warm`` opens that driver there and builds every pool row's query parameters once
    (``request_params``), so handing a request to the client is a lookup, not numpy and encoding. ``execute``
    (sync, the driver's checks and client threads) sends the same parameters."""

    async_native = True

    def prepare(self, catalogue, gpu_handles: list | None = None) -> None:
        super().prepare(catalogue)
        self.requests = PerRow(self.request_params)

    def request_params(self, vector: np.ndarray, row: int, k: int):
        raise NotImplementedError  # each system says what one row's query sends

    def params(self, queries: np.ndarray, k: int, rows: np.ndarray) -> list:
        """The query parameters of each of a request's rows."""
        return [self.requests.get(row, k, queries[i]) for i, row in enumerate(rows.tolist())]

    async def warm(self, queries: np.ndarray, k: int) -> None:
        await self.store.open_async()
        self.requests.fill(queries, k)


class StoreWrites:
    """``load.writes`` on a store-served system (``writable``), through its store's primitives:
    ``write_async(kind, item, vector) -> (sent_ns, done_ns)``, ``nearest_async(vector) -> (id, sent_ns)`` (the
    nearest item to a vector, for freshness probes), ``forget_load()`` (the store is about to change: its
    fingerprint goes, so a run that dies mid-cell reloads it) and ``restore(catalogue, touched)`` (the catalogue
    back, fingerprint and all)."""

    writable = True

    async def write_async(self, writes, j: int) -> tuple[int, int]:
        return await self.store.write_async(writes.kind, int(writes.ids[j]), writes.vectors[j])

    async def shows_async(self, writes, j: int) -> tuple[bool, int]:
        """Whether a search at write ``j``'s vector shows it; and when that search was sent."""
        from perfray.data.writes import shown

        top, sent_ns = await self.store.nearest_async(writes.vectors[j])
        return shown(writes, j, top), sent_ns

    def begin_writes(self) -> None:
        self.store.forget_load()

    def undo_writes(self, catalogue, writes) -> None:
        self.store.restore(catalogue, writes.touched)


async def each_in_turn(query, statement: str, params: list) -> tuple[list, int, int]:
    """``await query(statement, p) -> (rows, sent_ns, done_ns)`` for each of a request's parameter sets in turn:
    every result, the first query's sent stamp and the last one's done stamp."""
    found, sent_ns, done_ns = [], 0, 0
    for p in params:
        rows, sent, done_ns = await query(statement, p)
        found.append(rows)
        sent_ns = sent_ns or sent
    return found, sent_ns, done_ns


class PerRow:
    """What one query-pool row's request sends at one k, built once by ``build(vector, row, k)`` and looked up
    per request; ``fill`` builds a whole pool before load starts."""

    def __init__(self, build) -> None:
        self.build = build
        self._made: dict[tuple[int, int], object] = {}

    def get(self, row: int, k: int, vector: np.ndarray):
        made = self._made.get((row, k))
        if made is None:
            made = self._made[(row, k)] = self.build(vector, row, k)
        return made

    def fill(self, queries: np.ndarray, k: int) -> None:
        for row in range(queries.shape[0]):
            self.get(row, k, queries[row])


class TwoHandles:
    """A store client holding one sync handle and one async handle (``HANDLES``: their attribute names);
    ``close()`` closes the sync one now and the async one on its loop, once: both attributes end None."""

    HANDLES: ClassVar[tuple[str, str]]

    def close(self) -> None:
        sync, async_ = self.HANDLES
        handle = getattr(self, sync)
        if handle is not None:
            handle.close()
            setattr(self, sync, None)
        handle = getattr(self, async_)
        setattr(self, async_, None)
        if handle is not None:
            close_on_loop(handle)


def close_on_loop(client) -> None:
    """Close an async client (``await client.close()``) from sync code: on the running loop when there is one
    (its own), else on a loop of its own."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        try:
            asyncio.run(client.close())
        except RuntimeError:  # its loop is gone: its connections went with it
            pass
    else:
        loop.create_task(client.close())


def load_fingerprint(catalogue, *settings) -> str:
    """What a store's loaded data must match to be reused: the catalogue and the settings it was built with
    (index type and parameters), so a changed index is rebuilt rather than reported under the new name."""
    if not settings:
        return catalogue.fingerprint
    import hashlib
    import json

    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return f"{catalogue.fingerprint}_{hashlib.sha256(blob).hexdigest()[:12]}"


def unavailable(store: str, uri: str, err: BaseException) -> UnavailableError:
    """The one-line error for a store that cannot be reached."""
    from perfray.redact import redact

    detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    return UnavailableError(redact(f"{store} at {uri} is not reachable ({detail}); start it or fix stores.{store}"))


@contextmanager
def span(stages: dict, name: str):
    """Time a block into ``stages[name]`` (ns)."""
    started = time.perf_counter_ns()
    try:
        yield
    finally:
        stages[name] = time.perf_counter_ns() - started


def seed_items(catalogue, rows: np.ndarray, count: int) -> np.ndarray:
    """Items a graph or policy request starts from when no vector stage chose them: fixed per query row."""
    rows = np.asarray(rows, dtype=np.int64)
    return (rows[:, None] * 104_729 + np.arange(count) * 7_919) % catalogue.n_items


def env_secret(name: str) -> str | None:
    """A credential from the environment (never from config, never written anywhere)."""
    import os

    value = os.environ.get(name)
    return value or None
