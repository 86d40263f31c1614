"""Helpers shared by the tests (plans, simple targets, running the CLI)."""

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from perfray.load.generator import CellPlan, LoadGenerator, QueryPool
from perfray.load.profiles import op_mix
from perfray.load.schedules import PhaseRates
from perfray.timing import process_clock


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
    def submit(self, queries, k, rows=None):
        return _done(None)


async def _done(value):
    return value


class ServiceTimeTarget:
    """Answers after a fixed service time, concurrently (an ideal server); ``replied_ns`` holds each reply's
    own stamp on the process clock (the truth, timer overshoot included), in reply order."""

    def __init__(self, service_ms: float) -> None:
        self.service_ns = int(service_ms * 1e6)
        self.clock = process_clock()
        self.replied_ns: list[int] = []

    def submit(self, queries, k, rows=None):
        return self._reply(self.clock.now_ns() + self.service_ns)

    async def _reply(self, due_ns):
        self.replied_ns.append(await self.clock.wait_until(due_ns))
        return None


REPO = Path(__file__).resolve().parents[1]


def sweep_cli(*args, env=None, timeout=300):
    """Run ``python -m perfray.sweep`` as a user would."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "perfray.sweep", "--quiet", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=full_env)


def ray_cli() -> str:
    """The ``ray`` command of this Python's environment."""
    exe = Path(sys.executable).parent / "ray"
    return str(exe) if exe.exists() else shutil.which("ray")


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def write_fake_run(run_dir: Path, latencies_ms_by_cell: list, n_gpus=None, qps: float = 1000.0,
                   lag_ms_by_cell: list | None = None, ceiling_qps_by_cell: list | None = None) -> Path:
    """A run directory with known per-request latencies (all ok, one measured phase), schedule lags (default
    0) and calibrated generator ceilings (default none), written through the real recorder, Parquet writer,
    summary and manifest code."""
    from perfray.analysis.summary import add_scaling, summarize_cell
    from perfray.config import LoadSpec, SearchSpec, Workload
    from perfray.load.recorder import Recorder
    from perfray.results.manifest import Manifest
    from perfray.results.writer import RequestWriter, read_cell, write_table

    (run_dir / "requests").mkdir(parents=True)
    writer = RequestWriter(run_dir)
    n_gpus = n_gpus or [1] * len(latencies_ms_by_cell)
    cells, summary = [], []
    start = 1_795_000_000_000_000_000
    for cell, (lat_ms, gpus) in enumerate(zip(latencies_ms_by_cell, n_gpus, strict=True)):
        lat = np.asarray(lat_ms, dtype=np.float64)
        n = lat.size
        intended = start + (np.arange(n) * 1e9 / qps).astype(np.int64)
        rec = Recorder(cell, 0, np.arange(n), intended, np.zeros(n, np.int16), np.zeros(n, np.int16),
                       np.array([10]), np.array([1]), ["sustained"], ["knn_k10_q1"])
        lag_ns = (np.broadcast_to(np.asarray(lag_ms_by_cell[cell], dtype=np.float64), (n,)) * 1e6).astype(np.int64) \
            if lag_ms_by_cell else np.zeros(n, dtype=np.int64)
        for i in range(n):
            rec.sent(i, i + 1, int(intended[i] + lag_ns[i]), i, 1)
            rec.finish(i, i + 1, "ok", done_ns=int(intended[i]) + int(lat[i] * 1e6), endpoint=0,
                       recall=np.ones(1, np.float32))
        writer.write(cell, 0, rec.drain())
        writer.close_cell(cell)
        workload = Workload(search=SearchSpec(n_gpus=gpus), load=LoadSpec(target_qps=qps, duration_s=n / qps,
                                                                             warmup_s=0))
        cells.append({"cell": cell, "status": "complete", "workload": workload.model_dump(mode="json"),
                      "start_unix_ns": start})
        meta = {"cell": cell, "target_qps": qps, "measured_phases": ["sustained"], "measured_s": n / qps,
                "window_end_ns": start + int(n / qps * 1e9) + 10**10,
                "labels": {"n_gpus": gpus, "k": 10, "topology": "replicated", "backend": "numpy", "simulated": True,
                           "load_actors": 1, "arrival": "constant", "op_mix": "simple", "batch_max": 64,
                           "batch_window_ms": 1.0, "scale_with_gpus": False, "dataset": "{}", "client_path": "async",
                           "generator_ceiling_qps": ceiling_qps_by_cell[cell] if ceiling_qps_by_cell else float("nan")}}
        summary.append(summarize_cell(read_cell(run_dir, cell), meta))
    add_scaling(summary, ["same"] * len(summary))
    write_table(run_dir / "summary.parquet", pa.Table.from_pylist(summary))
    Manifest(run_dir, run_id=run_dir.name, name="fake", cells=cells, status="complete",
             config={"targets": [{"metric": "p99_ms", "max": 50.0}]},
             gpus={"simulated": True, "models": {"cpu (numpy)": max(n_gpus)}}).write()
    return run_dir


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return False
