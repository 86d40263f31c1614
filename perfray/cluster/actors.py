"""Thin Ray wrappers around the plain classes. Nothing here imports Ray at module import time."""

from __future__ import annotations

import asyncio
import functools
import os
import time

from perfray.cluster.nodes import gpu_identity, here
from perfray.load.generator_process import GeneratorProcess, GeneratorProcessDied
from perfray.load.host import GeneratorHost, raise_priority
from perfray.load.targets import CoalescingEndpoint, RayEndpoint, make_router
from perfray.metrics.nvml import GpuSampler
from perfray.metrics.recorder import MetricsRecorder
from perfray.metrics.sinks import NullSink, RaySink, warn
from perfray.sut.gpu_search import GpuSearchWorker, SearchCoalescer


class LoadActorBody:
    """What a LoadActor runs: a GeneratorHost, here for the GPU search path (its requests travel through Ray)
    or, for a system whose clients need no Ray, in a generator process of its own (``isolate``; see
    ``perfray.load.generator_process``); it reports live metrics from the rows it drains."""

    def __init__(self, actor: int, run_id: str = "", metrics: bool = False, isolate: bool = True) -> None:
        self.actor = actor
        self.inline = GeneratorHost(actor)
        self.process = GeneratorProcess(actor) if isolate else None
        self.host = self.inline  # where the current cell runs (and its rows are drained from)
        self.metrics = MetricsRecorder(RaySink() if metrics else NullSink(), run_id, actor, defer_histograms=True)
        self.cell = -1
        self._observing = None

    def _host_for(self, system):
        if system is None or self.process is None or system.needs_ray:
            return self.inline
        return self.process

    async def run_cell(self, plan, pool, gpu_handles: list, topology: str, system=None, catalogue=None) -> dict:
        """Run this actor's share of a cell against the GPU actors or, given a SystemPlan, a database system."""
        self.host = self._host_for(system)
        self.cell = plan.cell
        if self.metrics is not None:
            self.metrics.cell_started(plan.cell, plan.extra.get("target_qps", 0.0) / plan.n_actors)
        stats = await self._guarded(self.host.run_cell(plan, pool, gpu_handles, topology, system, catalogue))
        stats["generator"] = "process" if self.host is self.process else "actor"
        return stats

    async def prime_system(self, plan, catalogue, gpu_handles: list, pool, k: int, rounds: int = 3) -> int:
        """Connect, let the client prepare the query pool's requests, and send a few (connections, prepared
        statements, caches) before a cell."""
        host = self._host_for(plan)
        return await self._guarded(host.prime_system(plan, catalogue, gpu_handles, pool, k, rounds))

    async def _guarded(self, call):
        """A generator process that dies takes its load actor with it: the driver then accounts the actor's
        unreported requests as ``lost``, as for any dead load actor."""
        try:
            return await call
        except GeneratorProcessDied as err:
            warn(f"perfray: {err}; load actor {self.actor} exits")
            os._exit(1)

    async def prime(self, gpu_handles: list, queries, k: int, rounds: int = 3) -> int:
        """Warm the path to every GPU actor (connections, first-call costs) before load is measured."""
        for _ in range(rounds):
            for handle in gpu_handles:
                await handle.search.remote(queries, k)
        return len(gpu_handles) * rounds

    async def drain(self):
        """Finished rows as an Arrow record batch (Ray ships its buffers without pickling the values), built here
        from the generator's plain columns."""
        rows, in_flight, pools = await self._guarded(self.host.drain())
        await asyncio.sleep(0)  # the loop's turn between two pieces of drain work
        batch = rows.to_batch() if rows is not None else None
        if self.metrics is not None:
            await asyncio.sleep(0)
            try:
                self.metrics.rows(batch, self.cell, in_flight)
                if pools is not None:
                    self.metrics.pools(pools)
            except Exception as err:  # live metrics never cost a recorded row
                self._metrics_failed(err)
            else:
                if self._observing is None or self._observing.done():
                    self._observing = asyncio.ensure_future(self._observe())
        return batch

    async def _observe(self) -> None:
        """Histogram values go to Ray's metrics a slice per loop turn, never all at once."""
        try:
            while self.metrics is not None and self.metrics.observe_some():
                await asyncio.sleep(0)
        except Exception as err:
            self._metrics_failed(err)

    def _metrics_failed(self, err: Exception) -> None:
        warn(f"live metrics stopped on load actor {self.actor}: {type(err).__name__}: {err}")
        self.metrics = None

    async def pid(self) -> int:
        return os.getpid()

    async def where(self) -> dict:
        """This actor's node, host, IP and pid."""
        return here()

    async def clock(self) -> int:
        """This node's Unix time in ns: the driver measures its clock's offset from a few round trips."""
        return time.time_ns()

    async def generator_process_pid(self) -> int | None:
        """The pid of this actor's generator process, once started (None before, or when not isolated)."""
        return self.process.pid if self.process is not None else None


class GpuSearchActorBody(GpuSearchWorker):
    """A GpuSearchWorker that also reports how busy it is (and, on a real GPU, NVML figures). An async actor:
    calls that queue while a search runs are answered by one search (``SearchCoalescer``)."""

    _busy_ns = 0
    _calls = 0
    _rows = 0
    _coalescer = None
    _added_s = 0.0
    _per_query_s = 0.0

    async def search(self, queries, k, windows=None):
        if self._coalescer is None:
            self._coalescer = SearchCoalescer(self._timed_search)
        self._calls += 1
        self._rows += len(queries)
        arrived = time.perf_counter_ns()
        ids, dists = await self._coalescer.search(queries, k, windows)
        started, ended = self._coalescer.last_span
        # the request's own split: waiting here behind other searches, then the search itself (the rest of the
        # caller's service time is the Ray call there and back)
        return ids, dists, {"queue_ns": max(started - arrived, 0), "vector_ns": ended - started}

    def _timed_search(self, queries, k, windows=None):
        started = time.perf_counter_ns()
        try:
            pause = self._added_s + self._per_query_s * len(queries)
            if pause:
                time.sleep(pause)  # on the actor's loop: one search at a time, in arrival order
            return GpuSearchWorker.search(self, queries, k, windows)
        finally:
            self._busy_ns += time.perf_counter_ns() - started

    def build(self, base, shard: int = 0, n_shards: int = 1, attr=None, nice: int | None = None) -> dict:
        """``GpuSearchWorker.build`` at CPU priority ``nice`` (``cluster.search_actor_nice``; None: Ray's); the
        description says what the actor got."""
        if nice is not None:
            raise_priority(nice)
        return {**GpuSearchWorker.build(self, base, shard, n_shards, attr), "nice": os.getpriority(os.PRIO_PROCESS, 0)}

    async def add_service_time(self, ms: float) -> None:
        """Fault injection: every later search takes ``ms`` longer, as on a throttled GPU (the slow-node check's
        own test, and a way to rehearse a degraded device)."""
        self._added_s = ms / 1e3

    async def simulate_service(self, ms_per_query: float) -> None:
        """``search.service_ms_per_query``: every later search also takes this long per query (a known capacity)."""
        self._per_query_s = ms_per_query / 1e3

    async def hold(self, seconds: float) -> None:
        """Returns after ``seconds``, or fails as soon as this actor dies: the driver's early word of a lost search
        actor (and so of its node) while a cell runs."""
        await asyncio.sleep(seconds)

    async def apply_write(self, kind: str, item: int, vector=None) -> None:
        """On the actor's loop, between searches (which run there too): visible to the next one."""
        GpuSearchWorker.apply_write(self, kind, item, vector)

    async def reset_writes(self) -> int:
        return GpuSearchWorker.reset_writes(self)

    def counters(self) -> dict:
        """Running totals the driver differences over a cell: busy time, calls received, searches run (fewer
        when queued calls were coalesced) and NVML utilisation samples."""
        sampler = getattr(self, "_sampler", None)
        searches = self._coalescer.searches if self._coalescer is not None else 0
        return {"busy_ns": self._busy_ns, "t_ns": time.perf_counter_ns(), "calls": self._calls, "rows": self._rows,
                "searches": searches, "util_sum": sampler.util_sum if sampler else 0.0,
                "util_samples": sampler.util_samples if sampler else 0}

    def where(self) -> dict:
        """This actor's node, host, IP and pid, with its GPU's model and UUID when NVML sees a real one."""
        return {**here(), **gpu_identity()}

    def start_metrics(self, run_id: str, nvml: bool) -> bool:
        info = self.describe()
        self._sampler = GpuSampler(RaySink(), run_id, self.gpu_index, info["device"] or "", lambda: self._busy_ns)
        return self._sampler.start(nvml)


@functools.cache
def load_actor_class():
    import ray

    return ray.remote(max_restarts=0, max_task_retries=0)(LoadActorBody)


@functools.cache
def gpu_actor_class():
    import ray

    # Ray hands each actor one GPU (real or logical) through CUDA_VISIBLE_DEVICES.
    return ray.remote(max_restarts=0, max_task_retries=0)(GpuSearchActorBody)


def start_load_actor(run_id: str, index: int, cpus: float, metrics: bool, isolate: bool = True,
                     placement: dict | None = None):
    """A load actor; ``placement``: Ray options that choose its node (``perfray.cluster.placement``)."""
    return load_actor_class().options(
        name=f"perfray-{run_id}-load-{index}", num_cpus=cpus, max_concurrency=1000, **(placement or {}),
    ).remote(index, run_id, metrics, isolate)


def start_gpu_actor(run_id: str, index: int, backend: str, cpus: float, generation: int,
                    placement: dict | None = None):
    """A GPU search actor; ``placement``: its bundle of the group's placement group."""
    return gpu_actor_class().options(
        name=f"perfray-{run_id}-gpu-{index}-g{generation}", num_gpus=1, num_cpus=cpus, **(placement or {}),
    ).remote(backend, index)


class NoopSearchBody:
    """A search actor that answers at once with nothing found: the GPU path's own cost, for calibration."""

    async def search(self, queries, k: int, windows=None):
        import numpy as np

        n = len(queries)
        return np.full((n, k), -1, dtype=np.int64), np.full((n, k), np.inf, dtype=np.float32)


class NoopSearchPath:
    """``with NoopSearchPath() as make:`` — Ray (started here unless it already is) and one no-op search actor;
    ``make()`` gives a load actor's target for it (a router over a coalescing endpoint, as in sweeps) and a
    no-op close."""

    def __enter__(self):
        import ray

        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address="local", num_cpus=os.cpu_count() or 1, log_to_driver=False, include_dashboard=False)
        self.actor = ray.remote(max_restarts=0)(NoopSearchBody).options(max_concurrency=1000).remote()
        ray.get(self.actor.search.remote([[0.0]], 1))
        return lambda: (make_router("replicated", [CoalescingEndpoint(RayEndpoint(self.actor))]), lambda: None)

    def __exit__(self, *exc) -> None:
        import ray

        ray.kill(self.actor)
        if self._started:
            ray.shutdown()
