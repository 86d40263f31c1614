"""The harness's own ceiling on this host: for each client path, the highest rate one load generator holds
(every scheduled request answered, schedule lag p99 <= 1 ms) against a target that costs nothing, and its CPU per
request there. Sweeps read the figures (cached per host) to flag cells that ask a load actor for more than
half of its ceiling, and ``load.actors: auto`` sizes load actors from them.

Paths, named as a load actor's ``client_path``: ``callback`` (the lean HTTP client against
``perfray.services.http_responder`` on loopback), ``async`` (a store call on the loop that returns at once),
``threads`` (the same call on client threads), and ``gpu`` (micro-batches, 1 ms window, through Ray to a search
actor that answers at once: its endpoint is given by ``perfray.cluster.actors.NoopSearchPath``). The generator
runs in this process, as in a load actor, on uvloop when installed.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from perfray.load.generator import CellPlan, LoadGenerator, QueryPool
from perfray.load.pacer import run_fast
from perfray.load.profiles import op_mix
from perfray.load.schedules import PhaseRates
from perfray.load.targets import SystemEndpoint
from perfray.schema import GENERATOR_LAG_LIMIT_MS, GENERATOR_SHARE_LIMIT

PATHS = ("callback", "async", "threads")  # measured without Ray
GPU_PATH = "gpu"
GPU_WINDOW_NS, GPU_BATCH_MAX = 1_000_000, 64  # the load spec's defaults
FORMAT = 1  # bump when what is measured changes: older caches are then measured again
CONCURRENCY = 64  # connections / client threads per generator while calibrating
QUIET_SPARE_CORES = 0.5  # the rest of a settled host uses at most this much CPU (an idle Ray head: ~0.1)


@dataclass
class Step:
    qps: float
    held: bool
    achieved_qps: float
    lag_p99_ms: float
    cpu_us_per_request: float


def client_path(system) -> str:
    """The path a system's requests take from a load actor (``gpu`` for micro-batched search), from its flags."""
    if getattr(system, "micro_batched", False):
        return "gpu"
    if getattr(system, "callback_native", False):
        return "callback"
    return "async" if getattr(system, "async_native", False) is True else "threads"


def size_load_actors(cells: list, most: int, measure=None, where: dict | None = None) -> tuple[list, dict | None]:
    """Cells with ``load.actors: auto`` get as many load actors as keep each under ``GENERATOR_SHARE_LIMIT`` of its
    client path's ceiling (at most ``most``). The ceilings are this host's (measured now, and cached, when missing)
    unless ``where`` gives those of the cluster's load nodes (``perfray.cluster.load_types.cluster_ceilings``).
    Returns (cells, the ceilings used for the manifest, or None when never calibrated)."""
    from perfray.errors import UsageError
    from perfray.sut.session import make_system
    from perfray.systems_config import StoresSpec

    auto = {i: client_path(make_system(c.system, c, StoresSpec())) for i, c in enumerate(cells)
            if c.load.actors == "auto"}
    doc = where if where is not None else cached()
    missing = sorted({p for p in auto.values() if p in PATHS and ceiling_of(doc, p) is None})
    if missing and where is not None:
        raise UsageError(f"load.actors: auto needs the {', '.join(missing)} ceiling of the load nodes "
                         f"({', '.join(where['node_types'])}): run python -m perfray calibrate --cluster --paths "
                         f"{','.join(missing)}, or set load.actors to a number")
    if missing:
        doc = (measure or calibrate)(missing)
    sized = list(cells)
    for i, path in auto.items():
        ceiling = ceiling_of(doc, path)
        if ceiling is None:
            on = "this host's" if where is None else "the load nodes'"
            cluster = "" if where is None else " --cluster"
            raise UsageError(f"cell {i}: load.actors: auto needs {on} {path} path ceiling: run "
                             f"python -m perfray calibrate{cluster} --paths {path} once, or set load.actors to a number")
        load = cells[i].load.model_copy(update={"actors": actors_for(cells[i].offered_qps, ceiling, most)})
        sized[i] = cells[i].model_copy(update={"load": load})
    if doc is None:
        return sized, None
    source = {"node_types": doc["node_types"]} if where is not None else {"host": doc["key"]["host"]}
    return sized, {**source, "measured_unix_s": doc.get("measured_unix_s"),
                   "ceilings_qps": {p: e["ceiling_qps"] for p, e in doc["paths"].items()},
                   "share_limit": GENERATOR_SHARE_LIMIT}


def host_key() -> dict:
    from importlib.metadata import version

    return {"host": socket.gethostname(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "perfray": version("perfray"), "format": FORMAT}


def cache_file() -> Path:
    root = Path(os.environ.get("PERFRAY_CACHE_DIR") or Path.home() / ".cache" / "perfray")
    return root / f"calibration-{socket.gethostname()}.json"


def cached() -> dict | None:
    """This host's calibration, if measured with this perfray (else None)."""
    try:
        doc = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("key") == host_key() else None


def save(paths: dict[str, dict]) -> dict:
    """Merge ``paths`` into this host's cache; returns the whole document."""
    doc = cached() or {"key": host_key(), "paths": {}}
    doc["paths"].update(paths)
    doc["measured_unix_s"] = time.time()
    path = cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)
    return doc


def cluster_cache_file() -> Path:
    return cache_file().with_name("calibration-cluster.json")


def cluster_cached() -> dict[str, dict]:
    """Ceilings measured on each load node type of a cluster (``perfray calibrate --cluster``), by type: those
    measured with this perfray only."""
    try:
        doc = json.loads(cluster_cache_file().read_text())
    except (OSError, ValueError):
        return {}
    key = {k: v for k, v in host_key().items() if k in ("perfray", "format")}
    types = doc.get("types", {}) if isinstance(doc, dict) else {}
    return {name: entry for name, entry in types.items() if entry.get("key") == key}


def save_node_type(node_type: str, node: dict, paths: dict[str, dict]) -> dict:
    """Merge one node type's measured paths (on ``node``: its facts) into the cluster cache; returns its entry."""
    key = {k: v for k, v in host_key().items() if k in ("perfray", "format")}
    types = cluster_cached()
    entry = types.get(node_type) or {"key": key, "paths": {}}
    entry["paths"].update(paths)
    entry.update(node=node, measured_unix_s=time.time())
    types[node_type] = entry
    path = cluster_cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"types": types}, indent=1))
    tmp.replace(path)
    return entry


def ceiling_of(doc: dict | None, path: str) -> float | None:
    entry = (doc or {}).get("paths", {}).get(path)
    return float(entry["ceiling_qps"]) if entry and entry.get("ceiling_qps") else None


def actors_for(offered_qps: float, ceiling_qps: float, most: int) -> int:
    """Load actors needed so each is offered at most ``GENERATOR_SHARE_LIMIT`` of the ceiling (1 … ``most``)."""
    return int(min(max(1, np.ceil(offered_qps / (GENERATOR_SHARE_LIMIT * ceiling_qps))), max(1, most)))


def search(measure, start_qps: float = 2000.0, max_qps: float = 200_000.0, growth: float = 1.6,
           bisections: int = 3) -> tuple[float, list[Step]]:
    """Grow the rate geometrically until a step is not held, then bisect between the last held rate and it.
    ``measure(qps) -> Step``; a step that misses is measured once more before it counts (one VM hiccup in a
    short step moves its p99). Returns (highest held rate, every step in order)."""
    steps: list[Step] = []

    def holds(qps: float) -> bool:
        for _ in range(2):
            steps.append(measure(qps))
            if steps[-1].held:
                return True
        return False

    held, failed, qps = 0.0, None, start_qps
    while qps <= max_qps:
        if not holds(qps):
            failed = qps
            break
        held, qps = qps, round(qps * growth, -2)
    if failed is not None:
        for _ in range(bisections):
            mid = round((held + failed) / 2, -2) if held else round(failed / 2, -2)
            if mid <= held or mid >= failed:
                break
            held, failed = (mid, failed) if holds(mid) else (held, mid)
    return held, steps


class _NoopStore:
    """A store call that returns at once (on the loop, or on a client thread)."""

    async_native = True

    def execute(self, queries, k, rows):
        from perfray.sut.base import Answer

        return Answer()

    async def execute_async(self, queries, k, rows):
        return self.execute(queries, k, rows)


def measure_step(make_endpoint, qps: float, seconds: float, warmup_s: float = 0.3, window_ns: int = 0,
                 batch_max: int = 1) -> Step:
    """One Poisson step at ``qps`` (after a short warm-up) against ``make_endpoint() -> (endpoint, close)``; lag is
    counted beyond the micro-batch window, as in summaries."""
    queries = np.random.default_rng(0).standard_normal((256, 16)).astype(np.float32)
    generator = LoadGenerator(0)
    endpoint, close = make_endpoint()

    async def go():
        warm = getattr(endpoint, "warm", None)
        if warm is not None:
            await warm(queries, 10)
        plan = CellPlan(cell=0, actor=0, n_actors=1, start_unix_ns=time.time_ns() + 100_000_000,
                        phases=[PhaseRates("warmup", warmup_s, qps, qps, False),
                                PhaseRates("step", seconds, qps, qps, True)],
                        arrival="poisson", ops=op_mix("simple", 10, 100), seed=1, batch_window_ns=window_ns,
                        batch_max=batch_max,
                        max_in_flight=100_000, timeout_ns=2_000_000_000)
        return await generator.run_cell(plan, QueryPool(queries), endpoint)

    cpu = time.process_time()
    try:
        run_fast(go())
    finally:
        close()
    cpu = time.process_time() - cpu
    rows = generator.drain().to_pandas()
    ok = rows.status == "ok"
    step = rows[rows.phase == "step"]
    answered = int((step.status == "ok").sum())
    lag = np.maximum(step.schedule_lag_ns.to_numpy() - window_ns, 0)
    lag_p99 = float(np.percentile(lag, 99)) / 1e6 if len(step) else float("inf")
    held = bool(ok.all()) and lag_p99 <= GENERATOR_LAG_LIMIT_MS  # every scheduled request answered, none sent late
    return Step(qps=float(qps), held=held, achieved_qps=answered / seconds, lag_p99_ms=lag_p99,
                cpu_us_per_request=cpu / max(int(ok.sum()), 1) * 1e6)


def _store_endpoint(mode: str):
    def make():
        endpoint = SystemEndpoint(_NoopStore(), CONCURRENCY, mode=mode)
        return endpoint, endpoint.close
    return make


class _LoopbackHttp:
    """``perfray.services.http_responder`` on a loopback port, for the ``callback`` (HTTP) path."""

    def __enter__(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "perfray.services.http_responder", "--port",
                                      str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.proc.kill()
        raise RuntimeError("the loopback HTTP responder did not start")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def endpoint(self):
        from perfray.config import Workload
        from perfray.sut.http import HttpSystem
        from perfray.systems_config import StoresSpec

        def make():
            workload = Workload.model_validate({"system": "http", "load": {"concurrency": CONCURRENCY}})
            system = HttpSystem(workload, StoresSpec(http={"url": f"http://127.0.0.1:{self.port}/search",
                                                           "ids_field": None}))
            system.prepare(None)
            return SystemEndpoint(system, CONCURRENCY), system.close
        return make


def _host_busy_jiffies() -> tuple[int, int] | None:
    """(busy incl. steal, total) jiffies of every core from /proc/stat, or None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def wait_for_quiet(max_s: float = 15.0, spare_cores: float = QUIET_SPARE_CORES, window_s: float = 0.5) -> dict:
    """Wait (up to ``max_s``) until the rest of the host (other processes, and a hypervisor's steal) uses at most
    ``spare_cores`` of a core over a window: a step measured while the box is still busy (Ray's workers importing
    after ``ray.init``, a server's JIT, a test's server shutting down) measures the box, not the path (a CI run
    calibrated the async path at 1,800 req/s where an idle run of the same box holds 38,600). Returns the wait and
    the last window's figure, for the cache document."""
    started = time.monotonic()
    cores = os.cpu_count() or 1
    while True:
        before, own = _host_busy_jiffies(), time.process_time()
        time.sleep(window_s)
        after, own = _host_busy_jiffies(), time.process_time() - own
        waited = time.monotonic() - started
        if before is None or after is None or after[1] == before[1]:
            return {"waited_s": round(waited, 2), "others_cores": None, "quiet": None}
        busy_cores = (after[0] - before[0]) / (after[1] - before[1]) * cores
        others = max(busy_cores - own / window_s, 0.0)
        if others <= spare_cores or waited >= max_s:
            return {"waited_s": round(waited, 2), "others_cores": round(others, 3), "quiet": others <= spare_cores}


def calibrate(paths=PATHS, step_s: float = 1.0, report=print, gpu_path=None, quiet_s: float = 15.0) -> dict:
    """Measure each path's ceiling here, save them in this host's cache, and return the cache document."""
    return save(measure(paths, step_s, report, gpu_path, quiet_s))


def measure(paths=PATHS, step_s: float = 1.0, report=print, gpu_path=None, quiet_s: float = 15.0) -> dict:
    """Each path's ceiling on the host this runs on (path -> its figures and steps). ``gpu_path``: a context
    manager giving the ``gpu`` path's endpoint factory (it needs Ray). Each path waits up to ``quiet_s`` for the
    host to settle after its set-up before the first step."""
    results = {}
    for path in paths:
        if path == GPU_PATH and gpu_path is not None:
            with gpu_path() as make:
                host = wait_for_quiet(quiet_s)
                best, steps = search(lambda q: measure_step(make, q, step_s, window_ns=GPU_WINDOW_NS,
                                                            batch_max=GPU_BATCH_MAX))
        elif path == "callback":
            with _LoopbackHttp() as server:
                host = wait_for_quiet(quiet_s)
                best, steps = search(lambda q, s=server: measure_step(s.endpoint(), q, step_s))
        elif path in PATHS:
            host = wait_for_quiet(quiet_s)
            best, steps = search(lambda q, m=path: measure_step(_store_endpoint(m), q, step_s))
        else:
            raise ValueError(f"calibration path {path!r}: expected one of {', '.join((*PATHS, GPU_PATH))}")
        at_best = [s for s in steps if s.qps == best and s.held]
        results[path] = {"ceiling_qps": best, "cpu_us_per_request": at_best[-1].cpu_us_per_request if at_best else None,
                         "step_s": step_s, "host": host, "steps": [asdict(s) for s in steps]}
        report(path, results[path])
    return results
