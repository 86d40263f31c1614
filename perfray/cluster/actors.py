"""Thin Ray wrappers around the plain classes. Nothing here imports Ray at module import time."""

from __future__ import annotations

import functools
import os

from perfray.load.generator import LoadGenerator
from perfray.load.targets import RayEndpoint, make_router
from perfray.sut.gpu_search import GpuSearchWorker


class LoadActorBody:
    """What a LoadActor runs: a LoadGenerator aimed at GPU search actors."""

    def __init__(self, actor: int) -> None:
        self.generator = LoadGenerator(actor)

    async def run_cell(self, plan, pool, gpu_handles: list, topology: str) -> dict:
        router = make_router(topology, [RayEndpoint(h) for h in gpu_handles])
        return await self.generator.run_cell(plan, pool, router)

    async def prime(self, gpu_handles: list, queries, k: int, rounds: int = 3) -> int:
        """Warm the path to every GPU actor (connections, first-call costs) before load is measured."""
        for _ in range(rounds):
            for handle in gpu_handles:
                await handle.search.remote(queries, k)
        return len(gpu_handles) * rounds

    async def drain(self):
        """Finished rows as an Arrow record batch (Ray ships its buffers without pickling the values)."""
        return self.generator.drain()

    async def pid(self) -> int:
        return os.getpid()


@functools.cache
def load_actor_class():
    import ray

    return ray.remote(max_restarts=0, max_task_retries=0)(LoadActorBody)


@functools.cache
def gpu_actor_class():
    import ray

    # Ray hands each actor one GPU (real or logical) through CUDA_VISIBLE_DEVICES.
    return ray.remote(max_restarts=0, max_task_retries=0)(GpuSearchWorker)


def start_load_actor(run_id: str, index: int, cpus: float):
    return load_actor_class().options(
        name=f"perfray-{run_id}-load-{index}", num_cpus=cpus, max_concurrency=1000,
    ).remote(index)


def start_gpu_actor(run_id: str, index: int, backend: str, cpus: float, generation: int):
    return gpu_actor_class().options(
        name=f"perfray-{run_id}-gpu-{index}-g{generation}", num_gpus=1, num_cpus=cpus,
    ).remote(backend, index)
