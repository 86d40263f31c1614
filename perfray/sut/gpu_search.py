"""GpuSearchWorker: one per GPU. Holds a replica or a shard, answers micro-batched searches, and runs kernel
microbenchmarks in place. A plain class: ``perfray.cluster.actors`` wraps it as a Ray actor."""

from __future__ import annotations

import os
import time

import numpy as np

from perfray.backends import create_backend
from perfray.backends.base import ALL_ITEMS, answer_each, merge_topk, select_smallest, take_waiting
from perfray.sut.base import SystemUnderTest


class GpuSearchWorker:
    """A search index on one device (or on CPU, when the GPU is simulated)."""

    def __init__(self, backend: str = "auto", gpu_index: int = 0) -> None:
        self.backend_name = backend
        self.gpu_index = gpu_index
        self.backend = None
        self.id_offset = 0
        self.rows = 0
        self.dim = 0
        self.filterable = False
        self._attr: np.ndarray | None = None
        self._masked: dict[int, int] = {}  # load.writes: base rows deleted or upserted -> their original attribute
        self._delta = WrittenVectors(0)  # load.writes: the vectors written (inserted, upserted)

    def build(self, base: np.ndarray, shard: int = 0, n_shards: int = 1, attr: np.ndarray | None = None) -> dict:
        """Index rows ``[lo, hi)`` of ``base`` for shard ``shard`` of ``n_shards`` (1 = full replica), with the
        items' filter attribute when given (``perfray.data.filters``)."""
        self.backend = create_backend(self.backend_name)
        lo, hi = shard_bounds(base.shape[0], shard, n_shards)
        started = time.perf_counter_ns()
        self._attr = attr[lo:hi] if attr is not None else None  # as built: what a reset puts back
        self.backend.build(base[lo:hi], attr[lo:hi].copy() if attr is not None else None)  # its own: writes mask it
        self._masked, self._delta = {}, WrittenVectors(base.shape[1])
        self.filterable = attr is not None
        self.backend.synchronize()
        self.id_offset, self.rows, self.dim = lo, hi - lo, base.shape[1]
        return {**self.describe(), "build_ns": time.perf_counter_ns() - started}

    def search(self, queries: np.ndarray, k: int, windows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (global ids, squared L2) for a batch of queries, among the items inside each query's filter
        window when ``windows`` is given (id -1 past the items that passed); results are on the host."""
        filtered = windows is not None
        if windows is None and self._masked:  # deleted items are outside every window
            windows = np.tile(np.array(ALL_ITEMS, dtype=np.int64), (queries.shape[0], 1))
        if windows is None:
            ids, dists = self.backend.search(queries, min(k, self.rows))
        elif not self.filterable:
            raise ValueError("a filtered search reached a search worker built without the items' filter attribute")
        else:
            ids, dists = self.backend.search(queries, min(k, self.rows), windows)
        if self.id_offset:
            ids = np.where(ids >= 0, ids + self.id_offset, ids)
        if self._delta and not filtered:  # written items carry no filter attribute: a filter never passes them
            ids, dists = merge_topk([(ids, dists), self._delta.search(queries, k)], k)
        return ids, dists

    # ------------------------------------------------------------------------------------ load.writes
    def apply_write(self, kind: str, item: int, vector: np.ndarray | None = None) -> None:
        """One write of ``load.writes`` to this worker's items: a base item deleted or upserted is masked out
        of the index (its attribute set outside every window: the backends' filter path), an inserted or upserted
        vector joins a delta searched exactly beside it. Visible to the next search once this returns."""
        row = item - self.id_offset
        if 0 <= row < self.rows and item not in self._delta and row not in self._masked:
            set_attr = getattr(self.backend, "set_attr", None)
            if set_attr is None or not self.filterable:
                raise ValueError(f"load.writes: the {type(self.backend).name} backend cannot mask a written item")
            self._masked[row] = int(self._attr[row])
            set_attr(np.array([row]), np.array([-1]))
        if kind == "delete":
            self._delta.remove(item)
        else:
            self._delta.put(item, vector)

    def reset_writes(self) -> int:
        """Undo every write: masked items back, the delta gone (the next cell starts from the dataset)."""
        undone = len(self._masked) + len(self._delta)
        if self._masked:
            rows = np.fromiter(self._masked, dtype=np.int64)
            self.backend.set_attr(rows, np.fromiter(self._masked.values(), dtype=np.int64))
        self._masked, self._delta = {}, WrittenVectors(self.dim)
        return undone

    def describe(self) -> dict:
        backend = type(self.backend) if self.backend is not None else None
        return {
            "gpu": self.gpu_index,
            "pid": os.getpid(),
            "backend": backend.name if backend else self.backend_name,
            "device": self.backend.device_name() if self.backend is not None else None,
            "simulated": not (backend and backend.uses_gpu()),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "rows": self.rows,
            "dim": self.dim,
            "id_offset": self.id_offset,
        }

    def ping(self) -> int:
        return os.getpid()

    def microbench(self, queries: np.ndarray, batch_sizes: list[int], ks: list[int], repeats: int,
                   warmup: int) -> list[dict]:
        """Time ``search`` per (batch, k): one row per timed call. search() returns host arrays, so each
        timing ends after the device has finished (a device sync)."""
        info = self.describe()
        rows = []
        for k in ks:
            k_eff = min(k, self.rows)
            for batch in batch_sizes:
                q = np.ascontiguousarray(np.resize(queries, (batch, queries.shape[1])))
                for _ in range(warmup):
                    self.backend.search(q, k_eff)
                for rep in range(repeats):
                    started = time.perf_counter_ns()
                    self.backend.search(q, k_eff)
                    self.backend.synchronize()
                    took = time.perf_counter_ns() - started
                    rows.append({"gpu": self.gpu_index, "device": info["device"], "backend": info["backend"],
                                 "n": self.rows, "dim": self.dim, "batch": batch, "k": k_eff, "repeat": rep,
                                 "batch_ns": took, "qps": batch / (took / 1e9),
                                 "simulated": info["simulated"]})
        return rows


class WrittenVectors:
    """The vectors written to a search worker during a cell (``load.writes``), searched exactly on the host: a
    buffer whose capacity doubles, a removed item's slot taken by the last one, so a write costs one row and a
    search reads views of the buffer, never a copy of it."""

    def __init__(self, dim: int) -> None:
        self.ids = np.empty(0, dtype=np.int64)
        self.vectors = np.empty((0, dim), dtype=np.float32)
        self.norms = np.empty(0, dtype=np.float32)
        self.n = 0
        self._at: dict[int, int] = {}  # item -> its row

    def __len__(self) -> int:
        return self.n

    def __contains__(self, item: int) -> bool:
        return item in self._at

    def put(self, item: int, vector) -> None:
        row = self._at.get(item)
        if row is None:
            if self.n == self.ids.size:
                self._grow()
            row = self._at[item] = self.n
            self.n += 1
        self.ids[row], self.vectors[row] = item, vector
        self.norms[row] = self.vectors[row] @ self.vectors[row]

    def remove(self, item: int) -> None:
        row = self._at.pop(item, None)
        if row is None:
            return
        last = self.n - 1
        if row != last:
            self.ids[row], self.vectors[row], self.norms[row] = self.ids[last], self.vectors[last], self.norms[last]
            self._at[int(self.ids[row])] = row
        self.n = last

    def _grow(self) -> None:
        size = max(64, 2 * self.ids.size)
        self.ids = np.resize(self.ids, size)
        self.norms = np.resize(self.norms, size)
        vectors = np.empty((size, self.vectors.shape[1]), dtype=np.float32)
        vectors[: self.n] = self.vectors[: self.n]
        self.vectors = vectors

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k (ids, squared L2) among the written vectors."""
        n = self.n
        q = np.asarray(queries, dtype=np.float32)
        d = self.norms[None, :n] - 2.0 * (q @ self.vectors[:n].T) + np.einsum("ij,ij->i", q, q)[:, None]
        local, dists = select_smallest(np.maximum(d, 0.0), min(k, n))
        return self.ids[:n][local], dists


class SearchCoalescer:
    """Server-side batching in front of one search worker, on an event loop: micro-batches that arrive while a
    search runs are answered together by the next one (one kernel call, not one per caller), as a GPU search
    service does. ``search(queries, k, windows)`` is awaited by each caller; ``run(queries, k, windows)`` is the
    blocking search."""

    def __init__(self, run, max_rows: int = 4096) -> None:
        self._run, self.max_rows = run, max_rows
        self._waiting: list = []
        self._serving = False
        self.searches = 0
        # (start, end) perf_counter ns of the search that answered the callers just woken: they resume before the
        # next search runs (their wake-ups are queued before the next ``_serve``), so each reads its own
        self.last_span = (0, 0)

    async def search(self, queries: np.ndarray, k: int, windows: np.ndarray | None = None):
        import asyncio

        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self._waiting.append((queries, k, answer, windows))
        if not self._serving:
            self._serving = True
            loop.call_soon(self._serve)
        return await answer

    def _serve(self) -> None:
        import asyncio

        taken, queries, k_max, windows = take_waiting(self._waiting, self.max_rows)  # a caller that gave up: skipped
        if taken:
            started = time.perf_counter_ns()
            try:
                result = self._run(queries, k_max) if windows is None else self._run(queries, k_max, windows)
            except Exception as err:  # every waiting caller gets the search's error
                answer_each(taken, None, err)
            else:
                self.searches += 1
                self.last_span = (started, time.perf_counter_ns())
                answer_each(taken, result, None)
        if self._waiting:  # what arrived meanwhile: after the loop has taken in every call that is here
            asyncio.get_running_loop().call_soon(self._serve)
        else:
            self._serving = False


def shard_bounds(n: int, shard: int, n_shards: int) -> tuple[int, int]:
    """Contiguous, near-equal row ranges."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside 0..{n_shards - 1}")
    return n * shard // n_shards, n * (shard + 1) // n_shards


class GpuActorsVector:
    """The vector stage of a multi-store pipeline: the sweep's GPU search actors (a blocking call per
    request, round-robin over replicas or merged over shards), or, without Ray, a worker in this process."""

    def __init__(self, handles: list | None, base: np.ndarray, topology: str = "replicated",
                 attr: np.ndarray | None = None) -> None:
        self.handles, self.topology = list(handles or []), topology
        self._next = 0
        self.local = None
        if not self.handles:
            self.local = GpuSearchWorker("auto")
            self.local.build(base, attr=attr)

    def search(self, queries: np.ndarray, k: int, windows: np.ndarray | None = None) -> np.ndarray:
        if self.local is not None:
            return self.local.search(queries, k, windows)[0]
        import ray

        from perfray.backends.base import merge_topk

        if self.topology == "sharded":
            parts = ray.get([h.search.remote(queries, k, windows) for h in self.handles])
            return merge_topk([part[:2] for part in parts], k)[0]
        self._next = (self._next + 1) % len(self.handles)
        return ray.get(self.handles[self._next].search.remote(queries, k, windows))[0]


class GpuSearchSystem(SystemUnderTest):
    """Micro-batched search on the GPU actors: load actors route batches to them (no client of their own)."""

    name = "gpu_search"
    supported_ops = frozenset({"knn"})
    writable = True  # applied on every replica (or the owning shard): a mask plus an exact delta per worker
    needs_gpu_actors = True
    micro_batched = True
    filterable = True  # a mask on the search actors' distances
