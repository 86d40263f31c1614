"""Helpers shared by the tests (plans, simple targets, running the CLI)."""

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from perfray.load.generator import CellPlan, LoadGenerator, QueryPool
from perfray.load.profiles import op_mix
from perfray.load.schedules import PhaseRates
from perfray.timing import Clock


def make_plan(rate: float, duration_s: float, *, arrival: str = "constant", actor: int = 0, n_actors: int = 1,
              window_ns: int = 0, batch_max: int = 1, max_in_flight: int = 100_000, timeout_ms: float = 2000,
              phases=None, lead_s: float = 0.15, mix: str = "simple", k: int = 10, seed: int = 1) -> CellPlan:
    return CellPlan(cell=0, actor=actor, n_actors=n_actors, start_unix_ns=time.time_ns() + int(lead_s * 1e9),
                    phases=phases or [PhaseRates("sustained", duration_s, rate, rate, True)], arrival=arrival,
                    ops=op_mix(mix, k, 10_000), seed=seed, batch_window_ns=window_ns, batch_max=batch_max,
                    max_in_flight=max_in_flight, timeout_ns=int(timeout_ms * 1e6))


def run_plan(plan: CellPlan, target, pool: QueryPool | None = None) -> tuple[pa.Table, dict]:
    gen = LoadGenerator(plan.actor)
    pool = pool or QueryPool(np.zeros((16, 4), dtype=np.float32))
    stats = asyncio.run(gen.run_cell(plan, pool, target))
    batch = gen.drain()
    return pa.Table.from_batches([batch]), stats


class NoopTarget:
    def submit(self, queries, k):
        return _done(None)


async def _done(value):
    return value


class ServiceTimeTarget:
    """Answers after a fixed service time, concurrently (an ideal server)."""

    def __init__(self, service_ms: float) -> None:
        self.service_ns = int(service_ms * 1e6)
        self.clock = Clock()

    def submit(self, queries, k):
        return self._reply(self.clock.now_ns() + self.service_ns)

    async def _reply(self, due_ns):
        await self.clock.wait_until(due_ns)
        return None


REPO = Path(__file__).resolve().parents[1]


def sweep_cli(*args, env=None, timeout=300):
    """Run ``python -m perfray.sweep`` as a user would."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "perfray.sweep", "--quiet", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=full_env)


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())
