"""The ``cluster`` section of a config: which Ray to use, and where perfray places its actors on it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from perfray.config_model import Strict


class ClusterSpec(Strict):
    address: str | None = Field(None, description="Ray address; default: RAY_ADDRESS, else embedded local Ray")
    logical_gpus: Literal["auto", "always", "never"] = Field(
        "auto", description="declare logical GPUs on an embedded Ray without enough real ones (a simulated run)")
    load_actor_cpus: float = Field(0.5, ge=0, description="CPUs Ray reserves for each load actor")
    gpu_actor_cpus: float = Field(0.0, ge=0, description="CPUs Ray reserves for each GPU search actor")
    # Each drain is a burst of work in the generator (at its raised priority), the load actor and the driver that a
    # co-located system under test waits behind: against a local asyncio server on 2 cores, p99 with a drain every
    # 1 s instead of 0.5 s went 0.89 -> 0.36 ms at 5,000 req/s in one sitting, 0.51 -> 0.48 and (8,000 req/s)
    # 1.26 -> 1.06 ms in another, never worse (live metrics off: no better; a bare client: 0.16-0.25 ms;
    # benchmarks/results/colocation-2026-12-07.txt). A second still bounds what a dead actor takes with it.
    drain_interval_s: float = Field(1.0, gt=0, le=1.0, description="how often the driver gathers rows from the load "
                                    "actors (and notices a dead one)")
    actor_start_timeout_s: float = Field(120.0, gt=0, description="how long search actors may take to build their "
                                         "index, and load actors to prime")
    generator_process: bool = Field(True, description="a load actor runs a system's client and its generator in a "
                                    "process of its own (off the Ray worker's GIL); false: in the actor")
    generator_cpus: list[Annotated[int, Field(ge=0)]] = Field(
        [], description="pin load actor i's generator (its process, or the actor when it runs there) to CPU "
        "generator_cpus[i % len]: cores kept apart from the system under test and Ray's daemons; [] pins nothing")
    search_actor_nice: int | None = Field(
        0, ge=-20, le=19, description="CPU priority (nice) of the GPU search actors, the system under test on the "
        "default path: Ray starts workers at 15, below everything else on a shared host; null keeps Ray's; raising "
        "priority needs root or CAP_SYS_NICE (each actor's manifest entry says what it got)")
    gpu_placement: Literal["spread", "pack"] = Field(
        "spread", description="search actors through a placement group, a bundle per GPU: spread over nodes (a node "
        "lost costs the fewest GPUs) or packed onto the fewest nodes")
    load_placement: Literal["separate", "spread", "colocate"] = Field(
        "separate", description="load actors on nodes without a search actor when the cluster has such nodes, else "
        "spread (separate); one per node in turn over every node that can host one (spread); on the search "
        "actors' nodes (colocate)")
    load_resources: dict[str, float] = Field(
        {}, description="custom Ray resources each load actor asks for, e.g. {loadgen: 1} for a node group of load "
        "generators; only nodes that declare them host load actors")
    placement_timeout_s: float = Field(60.0, gt=0, description="how long a placement may wait for the cluster before "
                                       "the run stops (exit 3)")
    on_node_loss: Literal["continue", "stop"] = Field(
        "continue", description="after a cell that lost a node: run the next cells on the surviving nodes (continue; "
        "a cell is labelled with the GPUs it really had) or stop the run (exit 3, rows kept)")

    @field_validator("load_resources")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError(f"{name}: a load actor's CPUs are load_actor_cpus; name a custom resource here")
            if not amount > 0:
                raise ValueError(f"{name}: expected an amount > 0, got {amount}")
        return value
