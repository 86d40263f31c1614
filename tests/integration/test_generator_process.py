"""The generator process a load actor runs a system's client in (no Ray here: it is a plain class): every
scheduled request a row, drains answered while a cell runs, errors that cross with their class, and no orphan
once its owner is gone."""

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from support import alive, make_plan

from perfray.config import Workload
from perfray.errors import UnavailableError
from perfray.load.generator import QueryPool
from perfray.load.generator_process import GeneratorProcess, GeneratorProcessDied
from perfray.services.process import free_port
from perfray.sut.session import SystemPlan
from perfray.systems_config import StoresSpec

PINNED = max(os.sched_getaffinity(0))  # cluster.generator_cpus: [PINNED]
POOL = QueryPool(np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32))


def http_plan(url: str, key: str = "http-1") -> SystemPlan:
    workload = Workload.model_validate({"system": "http", "load": {"concurrency": 8}})
    stores = StoresSpec(http={"url": url, "ids_field": None})
    return SystemPlan("http", key, workload.model_dump(mode="json"), stores.model_dump(mode="json"), "http")


@pytest.mark.timeout(120)
def test_a_cell_in_the_generator_process_reports_every_request_and_drains_while_it_runs(responder_url):
    system = http_plan(responder_url)

    async def go():
        proc = GeneratorProcess(actor=0)
        try:
            assert await proc.prime_system(system, None, [], POOL, 10) == 3
            plan = dataclasses.replace(make_plan(400, 2.0, arrival="poisson", lead_s=0.3), cpu=PINNED)
            cell = asyncio.ensure_future(proc.run_cell(plan, POOL, [], "replicated", system, None))
            batches, in_flight = [], []
            while not cell.done():
                await asyncio.sleep(0.4)
                if not cell.done():  # every thread of the child runs on the CPU the plan names
                    assert {frozenset(os.sched_getaffinity(int(t))) for t in os.listdir(f"/proc/{proc.pid}/task")} \
                        == {frozenset({PINNED})}
                rows, flying, pools = await proc.drain()
                in_flight.append(flying)
                if rows is not None:
                    batches.append(rows.to_batch())
            stats = await cell
            rows, _, pools = await proc.drain()
            batches.append(rows.to_batch() if rows is not None else None)
            return proc.pid, plan, stats, [b for b in batches if b is not None], pools
        finally:
            proc.close()

    pid, plan, stats, batches, pools = asyncio.run(go())
    rows = pa.Table.from_batches(batches)
    assert stats["generator_pid"] == pid != os.getpid() and stats["client_path"] == "callback"
    assert stats["cpus"] == [PINNED] and PINNED in os.sched_getaffinity(0)  # the caller itself is not pinned
    cpu_us = stats["generator_cpu_us_per_request"]  # the child's own CPU, not the caller's (~0)
    assert cpu_us > 1 and cpu_us < 10_000
    assert rows.num_rows == stats["requests"] and rows.num_rows > 600
    assert pc.all(pc.equal(pc.cast(rows["status"], "string"), "ok")).as_py()
    assert sorted(rows["seq"].to_pylist()) == list(range(rows.num_rows))  # each scheduled request once
    assert sum(b.num_rows for b in batches[:-1]) > rows.num_rows // 2  # rows came back while the cell ran
    assert set(pools) == {"http"} and not alive(pid)  # closed: the child is gone


@pytest.mark.timeout(60)
def test_errors_cross_with_their_class_and_a_dead_child_fails_the_call_it_owed(responder_url):
    async def go():
        proc = GeneratorProcess(actor=1)
        try:
            with pytest.raises(UnavailableError, match="127.0.0.1"):  # nothing listens there
                await proc.prime_system(http_plan(f"http://127.0.0.1:{free_port()}/search"), None, [], POOL, 10)
            plan = make_plan(100, 30.0, lead_s=0.2)
            cell = asyncio.ensure_future(proc.run_cell(plan, POOL, [], "replicated", http_plan(responder_url), None))
            await asyncio.sleep(0.5)
            os.kill(proc.pid, signal.SIGKILL)
            with pytest.raises(GeneratorProcessDied, match="exit code -9"):
                await asyncio.wait_for(cell, 10)
            with pytest.raises(GeneratorProcessDied):  # and every later call
                await proc.drain()
        finally:
            proc.close()

    asyncio.run(go())


@pytest.mark.timeout(60)
def test_the_child_exits_at_once_when_its_owner_dies(responder_url, tmp_path):
    """An owner killed with -9 (as Ray kills a load actor) closes the socket: the child stops sending."""
    script = tmp_path / "owner.py"
    script.write_text(f"""
import asyncio, sys, time
sys.path.insert(0, {str(os.path.dirname(__file__) + '/..')!r})
from support import alive, make_plan
from test_generator_process import POOL, http_plan
from perfray.load.generator_process import GeneratorProcess

async def go():
    proc = GeneratorProcess(actor=0)
    await proc.prime_system(http_plan({responder_url!r}), None, [], POOL, 10)
    print(proc.pid, flush=True)
    await proc.run_cell(make_plan(200, 60.0), POOL, [], "replicated", http_plan({responder_url!r}), None)

asyncio.run(go())
""")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), *sys.path])}
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        child = int(owner.stdout.readline())
        time.sleep(1.0)
        assert alive(child)
        owner.kill()
        owner.wait(10)
        deadline = time.monotonic() + 5
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child)
    finally:
        owner.kill()
