"""A load generator and the clients it sends through, in one process: what a load actor runs, either in its own
Ray worker (the GPU search path, and systems whose clients reach the GPU actors through Ray) or in a generator
process of its own (``perfray.load.generator_process``), which runs this same class."""

from __future__ import annotations

import os
import time

import numpy as np

from perfray.errors import UsageError
from perfray.load.generator import LoadGenerator
from perfray.load.targets import CoalescingEndpoint, RayEndpoint, SystemEndpoint, make_router

LOAD_ACTOR_NICE = -15


def raise_priority(nice: int = LOAD_ACTOR_NICE) -> int:
    """Give every thread of this process a higher CPU priority where allowed (root, CAP_SYS_NICE): a runnable
    generator that waits for a core sends late and stamps late, and on a shared box Ray's own daemons are what it
    waits behind (measured: 47 -> 27 ms/s of run-queue wait). Returns the nice value."""
    for tid in _threads():
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:  # not permitted: run at the default priority
            break
    return os.getpriority(os.PRIO_PROCESS, 0)


def pin_to(cpu: int | None) -> list[int]:
    """Pin every thread of this process to ``cpu`` (None: leave it); returns the CPUs it may run on. A CPU this
    node does not have (or may not use) is one line naming ``cluster.generator_cpus``."""
    if cpu is not None:
        try:
            for tid in _threads():
                os.sched_setaffinity(tid, {cpu})
        except OSError as err:
            raise UsageError(f"cluster.generator_cpus: cannot pin a load generator to CPU {cpu} on this node "
                             f"({os.cpu_count()} CPUs, 0-{os.cpu_count() - 1}): {err.strerror}") from None
    return sorted(os.sched_getaffinity(0))


def _threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


class GeneratorHost:
    """A LoadGenerator plus this process's client of the cell's system (kept across cells while the system's
    plan stays the same). Every call is a coroutine, so a load actor awaits it the same way whether the host is
    here or in a generator process."""

    def __init__(self, actor: int) -> None:
        self.generator = LoadGenerator(actor)
        self.system, self._system_key, self._endpoint = None, None, None

    def _system_endpoint(self, plan, catalogue, gpu_handles) -> SystemEndpoint:
        if plan.key != self._system_key:
            self.close_system()
            from perfray.config import Workload
            from perfray.sut.session import make_system
            from perfray.systems_config import StoresSpec

            workload = Workload.model_validate(plan.workload)
            system = make_system(plan.name, workload, StoresSpec.model_validate(plan.stores))
            system.connect()
            system.prepare(catalogue, gpu_handles)
            self.system, self._system_key = system, plan.key
            self._endpoint = SystemEndpoint(system, workload.load.concurrency)
        return self._endpoint

    async def prime_system(self, plan, catalogue, gpu_handles, pool, k: int, rounds: int = 3) -> int:
        """Connect, let the client prepare the query pool's requests, and send a few (connections, prepared
        statements, caches) before a cell."""
        endpoint = self._system_endpoint(plan, catalogue, gpu_handles)
        queries = pool.queries
        await endpoint.warm(queries, k)
        for i in range(rounds):
            await endpoint.call(queries[i % len(queries)][None, :], k, np.array([i % len(queries)]))
        return rounds

    async def run_cell(self, plan, pool, gpu_handles, topology: str, system=None, catalogue=None) -> dict:
        """This actor's share of a cell against the GPU actors or, given a SystemPlan, a database system."""
        if system is None:
            target = make_router(topology, [CoalescingEndpoint(RayEndpoint(h), filters=pool.filters)
                                            for h in gpu_handles])
        else:
            target = self._system_endpoint(system, catalogue, gpu_handles)
        nice, cpus = raise_priority(), pin_to(plan.cpu)
        cpu_ns = time.process_time_ns()
        stats = await self.generator.run_cell(plan, pool, target)
        cpu_ns = time.process_time_ns() - cpu_ns  # the whole process: sending, replies, the client, drains
        stats.update(nice=nice, cpus=cpus, client_path="gpu" if system is None else self._endpoint.mode,
                     generator_pid=os.getpid(), generator_cpu_us_per_request=cpu_ns / max(stats["requests"], 1) / 1e3)
        if system is not None:  # client pools at the end of the cell, for the manifest
            stats["pools"] = self.system.pool_stats()
            cache = getattr(self.system, "cache_stats", None)
            stats["cache"] = cache() if cache else None
        return stats

    async def drain(self):
        """(finished rows as ``DrainedRows`` or None, requests in flight, client pool gauges or None). The rows
        cross to the load actor as plain columns: it builds their Arrow batch, not the generator's process."""
        rows = await self.generator.drain_rows()
        return rows, self.generator.in_flight, self.system.pool_stats() if self.system is not None else None

    def close_system(self) -> None:
        if self._endpoint is not None:
            self._endpoint.close()
        if self.system is not None:
            self.system.close()
        self.system, self._system_key, self._endpoint = None, None, None
