"""The sweep driver: expand the grid, run each cell on Ray, gather rows as they come, write results.

``python -m perfray.sweep [--config FILE] [--results-dir DIR] [--run-id ID] [--set key=value ...]``
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from perfray.analysis.cells import cell_labels, comparison_keys, gpu_usage, progress_label, summarize_phases
from perfray.analysis.summary import add_baseline, add_scaling, check_targets
from perfray.cluster import actors, runtime
from perfray.cluster.gathering import RowGatherer
from perfray.config import SweepConfig, Workload, phase_rates
from perfray.data import load_dataset
from perfray.data.groundtruth import ground_truth
from perfray.errors import EXIT_OK, EXIT_TARGET_FAILED, UnavailableError
from perfray.load import calibration
from perfray.load.generator import CellPlan, QueryPool
from perfray.load.profiles import op_mix
from perfray.load.schedules import PhaseRates
from perfray.progress import Progress
from perfray.results.manifest import Manifest
from perfray.results.writer import RequestWriter, read_cell, write_table
from perfray.schema import MICROBENCH_SCHEMA
from perfray.sut.session import SystemPlan, SystemSession, effective_batching, make_system

# Time between choosing a cell's start and its first request: actors must receive the plan first.
START_LEAD_NS = 700_000_000


@dataclass
class Hooks:
    """Callbacks for tests and tools (e.g. fault injection once a cell's actors are running)."""

    on_cell_start: Callable[[int, list, list], None] | None = None


@dataclass
class _DatasetState:
    dataset: object
    base_ref: object
    pool_ref: object
    max_k: int


@dataclass
class _GpuGroup:
    key: tuple
    handles: list
    described: list = field(default_factory=list)


class SweepDriver:
    """Runs one sweep; ``run()`` returns the exit code and always leaves results and manifest on disk."""

    def __init__(self, config: SweepConfig, run_dir: Path, run_id: str, progress: Progress | None = None,
                 hooks: Hooks | None = None, argv: list[str] | None = None,
                 systems: SystemSession | None = None) -> None:
        self.config, self.run_dir, self.run_id = config, Path(run_dir), run_id
        self.progress = progress or Progress(enabled=False)
        self.hooks = hooks or Hooks()
        cells = [effective_batching(c) for c in config.cells()]  # the manifest records what actually runs
        self.cells, calibrated = calibration.size_load_actors(cells, os.cpu_count() or 1)
        self.cache_dir = config.cache_dir or self.run_dir.parent / ".cache"
        self.writer = RequestWriter(self.run_dir)
        self.manifest = Manifest(
            self.run_dir, run_id=run_id, name=config.name, command=argv or sys.argv,
            config=config.model_dump(mode="json"),
            cells=[{"cell": i, "status": "pending", "workload": c.model_dump(mode="json")}
                   for i, c in enumerate(self.cells)], calibration=calibrated,
        )
        self.summary: list[dict] = []
        self.phase_summary: list[dict] = []
        self.scaling_keys: list[tuple] = []
        self.baseline_keys: list[str] = []
        self.microbench_rows: list[dict] = []
        self._datasets: dict[str, _DatasetState] = {}
        self._group: _GpuGroup | None = None
        self._group_generation = 0
        self._benched: set[tuple] = set()
        self._load: dict[int, object] = {}
        self._gpu_described: list[dict] = []
        self._ray: runtime.RayInfo | None = None
        self._devices: dict[str, int] = {}  # device model -> most actors seen on it at once
        self.gather = RowGatherer(self.run_dir, self.writer, self.manifest, self.progress, self._load)
        self._systems_checked = systems is not None
        self.systems = systems or SystemSession(config.stores)
        self._catalogue_refs: dict[str, object] = {}

    # ----------------------------------------------------------------------------------------- run
    def run(self) -> int:
        self.manifest.write()
        status, code = "failed", EXIT_OK  # anything that escapes below leaves the run marked failed
        try:
            if not self._systems_checked:
                self.systems.check(self.cells)
            gpus = max(c.search.n_gpus for c in self.cells if self._needs_gpu_actors(c)) if any(
                self._needs_gpu_actors(c) for c in self.cells) else 0
            cpus = max(c.load.actors for c in self.cells) * self.config.cluster.load_actor_cpus
            self._ray = runtime.connect(self.config.cluster, gpus, cpus, self.config.metrics)
            self.manifest.update(status="running", ray={
                "embedded": self._ray.embedded, "address": self._ray.address,
                "resources": self._ray.resources, "dashboard_url": self._ray.dashboard_url,
                "metrics_port": self._ray.metrics_port if self.config.metrics.enabled else None},
                gpus={"declared": gpus, "logical": self._ray.logical_gpus,
                      "real_on_driver": self._ray.real_gpus_on_driver})
            if self._ray.dashboard_url:
                self.progress.note(f"Ray dashboard: http://{self._ray.dashboard_url}")
            for index, cell in enumerate(self.cells):
                self._run_cell(index, cell)
            status = "complete"
        except KeyboardInterrupt:
            status, code = "interrupted", 130
        except UnavailableError as err:
            code = err.exit_code
            self.manifest.doc["error"] = str(err)
            if all(c["status"] == "pending" for c in self.manifest.doc["cells"]):
                status = "not_started"  # nothing was measured: the run directory says so, not "failed"
            raise
        except Exception as err:
            self.manifest.doc["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:500]
            raise
        finally:
            self._finish(status)
            if self._ray is not None and self.config.metrics.enabled and self.config.metrics.final_scrape_s:
                time.sleep(self.config.metrics.final_scrape_s)  # the last drains' counts reach the scraper
            runtime.shutdown(self._ray)
            self.systems.close()
        verdicts = self.manifest.doc.get("verdicts", [])
        if code == EXIT_OK and any(v["must_pass"] and not v["passed"] for v in verdicts):
            code = EXIT_TARGET_FAILED
        return code

    def _finish(self, status: str) -> None:
        stopped_ns = time.time_ns()
        running = [c for c in self.manifest.doc["cells"] if c["status"] == "running"]
        for entry in running:
            try:  # what the live actors still hold (< 1 s of rows)
                self.gather.drain(entry["cell"])
            except (KeyboardInterrupt, Exception) as err:  # a second Ctrl-C or a dying cluster: keep going
                self.manifest.doc["final_drain_error"] = type(err).__name__
        try:
            self.writer.close()
        except Exception as err:  # e.g. disk full: say so in the manifest rather than lose it too
            self.manifest.doc["write_error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            status = "failed"
        for entry in running:
            entry["status"] = "interrupted" if status == "interrupted" else "partial"
            self._summarize(entry["cell"], entry["status"], until_ns=stopped_ns)
        add_scaling(self.summary, self.scaling_keys)
        add_baseline(self.summary, self.baseline_keys, self.config.baseline_system)
        if self.summary:
            write_table(self.run_dir / "summary.parquet", pa.Table.from_pylist(self.summary))
        if self.phase_summary:
            write_table(self.run_dir / "phases.parquet", pa.Table.from_pylist(self.phase_summary))
        if self.microbench_rows:
            write_table(self.run_dir / "microbench.parquet",
                        pa.Table.from_pylist(self.microbench_rows, schema=MICROBENCH_SCHEMA))
        verdicts = check_targets(self.summary, self.config.targets, self.phase_summary)
        simulated = any(d["simulated"] for d in self._gpu_described) if self._gpu_described else None
        self.manifest.doc.setdefault("gpus", {}).update(simulated=simulated, models=self._devices,
                                                        actors=self._gpu_described)
        self.manifest.update(status=status, finished_unix_s=time.time(), verdicts=verdicts,
                             rows_written=self.writer.rows_written)

    # ---------------------------------------------------------------------------------------- cell
    def _needs_gpu_actors(self, cell: Workload) -> bool:
        return bool(make_system(cell.system, cell, self.config.stores).needs_gpu_actors)

    def _run_cell(self, index: int, cell: Workload) -> None:
        ds = self._dataset(cell)
        entry = self.manifest.doc["cells"][index]
        system, catalogue_ref = self._system(cell, ds, entry)
        started = time.perf_counter()
        group = self._gpu_group(cell, ds) if self._needs_gpu_actors(cell) else _GpuGroup(None, [], [])
        gpu_ready_s = time.perf_counter() - started
        if group.handles:
            self._microbench(cell, ds, group)
        started = time.perf_counter()
        loaders = self._load_actors(cell.load.actors)
        self._prime(loaders, group, ds, cell.search.k, system, catalogue_ref)
        load_ready_s = time.perf_counter() - started
        phases = [PhaseRates(p.name, p.duration_s, *phase_rates(p, cell.offered_qps), p.measured)
                  for p in cell.load.phase_plan()]
        ops = op_mix(cell.load.op_mix, cell.search.k, ds.dataset.n)
        start_ns = time.time_ns() + START_LEAD_NS
        plans = [CellPlan(cell=index, actor=i, n_actors=len(loaders), start_unix_ns=start_ns, phases=phases,
                          arrival=cell.load.arrival, ops=ops, seed=cell.load.seed,
                          batch_window_ns=int(cell.load.batch_window_ms * 1e6), batch_max=cell.load.batch_max,
                          max_in_flight=cell.load.max_in_flight, timeout_ns=int(cell.load.timeout_ms * 1e6),
                          extra={"target_qps": cell.offered_qps})
                 for i in range(len(loaders))]
        entry.update(status="running", start_unix_ns=start_ns)
        self.manifest.write()
        label = progress_label(cell, group.described, system.label if system is not None else None)
        self.progress.cell_started(index, len(self.cells), label, sum(p.duration_s for p in phases))
        counters_before = self._gpu_counters(group)
        refs = {i: loaders[i].run_cell.remote(plans[i], ds.pool_ref, group.handles, cell.search.topology,
                                              system, catalogue_ref)
                for i in range(len(loaders))}
        if self.hooks.on_cell_start:
            self.hooks.on_cell_start(index, list(loaders), list(group.handles))
        self.gather.start_cell(refs)
        stats = []
        while refs:
            ready, _ = _ray().wait(list(refs.values()), num_returns=len(refs),
                                   timeout=self.config.cluster.drain_interval_s)
            self.gather.drain(index)
            for i in [i for i, ref in refs.items() if ref in ready]:
                ref = refs.pop(i)
                try:
                    stats.append(_ray().get(ref))
                except _ray().exceptions.RayActorError as err:
                    self.gather.actor_failed("load", i, index, err)
        self.gather.drain(index)
        counters_after = self._gpu_counters(group)
        entry["gpu_usage"] = gpu_usage(counters_before, counters_after)
        self._check_gpu_group(index, counters_after)
        self.writer.close_cell(index)
        # A dead actor's unreported requests are rows too (lost); a cell that lost an actor is degraded.
        lost = self.gather.account_lost(index, plans, ds.dataset.queries.shape[0])
        status = "degraded" if self.gather.failed_in(index) else "complete"
        entry.update(status=status, actor_stats=stats, lost_rows=lost, timings={
            "gpu_actors_ready_s": round(gpu_ready_s, 3), "load_actors_ready_s": round(load_ready_s, 3),
            "gather_s": round(self.gather.seconds, 3), "drains": self.gather.drains})
        self._summarize(index, status)
        self.progress.cell_finished(self.summary[-1])
        self.manifest.write()

    def _summarize(self, index: int, status: str, until_ns: int | None = None) -> None:
        """Summary rows of a cell (all measured phases) and of each phase, from its Parquet rows;
        ``until_ns`` cuts windows short (an interrupted cell is measured over the time it ran)."""
        cell, entry = self.cells[index], self.manifest.doc["cells"][index]
        labels = cell_labels(cell, self._gpu_described if self._needs_gpu_actors(cell) else [], entry,
                             (self.manifest.doc.get("calibration") or {}).get("ceilings_qps", {}))
        row, phase_rows = summarize_phases(read_cell(self.run_dir, index), cell, index, status,
                                           entry.get("start_unix_ns", 0), until_ns or 2**62, labels)
        self.summary.append(row)
        self.phase_summary.extend(phase_rows)
        baseline_key, scaling_key = comparison_keys(cell)
        self.baseline_keys.append(baseline_key)
        self.scaling_keys.append(scaling_key)

    # ------------------------------------------------------------------------------------- actors
    def _dataset(self, cell: Workload) -> _DatasetState:
        key = json.dumps(cell.dataset.model_dump(mode="json"), sort_keys=True)
        state = self._datasets.get(key)
        if state is None:
            dataset = load_dataset(cell.dataset)
            max_k = max(op.k for c in self.cells if c.dataset == cell.dataset
                        for op in op_mix(c.load.op_mix, c.search.k, dataset.n))
            gt_ids, gt_dists = ground_truth(dataset, max_k, self.cache_dir)
            ray = _ray()
            state = _DatasetState(dataset, ray.put(dataset.base),
                                  ray.put(QueryPool(dataset.queries, gt_ids, gt_dists)), max_k)
            self._datasets[key] = state
            self.progress.note(f"dataset {dataset.name}: {dataset.n:,} x {dataset.dim}, "
                               f"{dataset.queries.shape[0]:,} queries, exact top-{max_k} ground truth")
        return state

    def _gpu_group(self, cell: Workload, ds: _DatasetState) -> _GpuGroup:
        s = cell.search
        key = (ds.dataset.fingerprint, s.backend, s.topology, s.n_gpus)
        if self._group is not None and self._group.key == key:
            return self._group
        ray = _ray()
        if self._group is not None:
            for handle in self._group.handles:
                ray.kill(handle)
        self._group_generation += 1
        handles = [actors.start_gpu_actor(self.run_id, i, s.backend, self.config.cluster.gpu_actor_cpus,
                                          self._group_generation) for i in range(s.n_gpus)]
        shards = s.n_gpus if s.topology == "sharded" else 1
        builds = [h.build.remote(ds.base_ref, i % shards, shards) for i, h in enumerate(handles)]
        try:
            described = ray.get(builds, timeout=self.config.cluster.actor_start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise UnavailableError(
                f"{s.n_gpus} GPU search actors did not start within {self.config.cluster.actor_start_timeout_s:g} s;"
                " check the cluster's free GPUs (ray status)") from None
        except ray.exceptions.RayTaskError as err:
            raise UnavailableError(str(err.cause) if err.cause else str(err).splitlines()[0]) from None
        except ray.exceptions.RayActorError as err:
            raise UnavailableError(f"a GPU search actor died while building its index ({type(err).__name__}); "
                                   "check its memory and the Ray logs") from None
        if self.config.metrics.enabled:
            started = ray.get([h.start_metrics.remote(self.run_id, not d["simulated"])
                               for h, d in zip(handles, described, strict=True)])
            if not all(started):
                self.progress.note("perfray: warning: NVML is not available on a GPU actor; GPU utilisation "
                                   "is not reported (pip install nvidia-ml-py)")
        self._gpu_described = described
        for device, count in Counter(d["device"] for d in described).items():
            self._devices[device] = max(self._devices.get(device, 0), count)
        self._group = _GpuGroup(key, handles, described)
        return self._group

    def _gpu_counters(self, group: _GpuGroup) -> list[dict | Exception]:
        """Every GPU actor's running counters, asked in parallel; a dead or hung actor gives its error."""
        ray = _ray()
        refs = [handle.counters.remote() for handle in group.handles]
        out: list[dict | Exception] = []
        deadline = time.monotonic() + 30
        for ref in refs:
            try:
                out.append(ray.get(ref, timeout=max(0.1, deadline - time.monotonic())))
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as err:
                out.append(err)
        return out

    def _check_gpu_group(self, cell: int, counters: list[dict | Exception]) -> None:
        """Record the first GPU actor that did not answer; the group is rebuilt for the next cell."""
        for i, answer in enumerate(counters):
            if isinstance(answer, Exception):
                self.gather.actor_failed("gpu", i, cell, answer)
                self._group = None
                return

    def _microbench(self, cell: Workload, ds: _DatasetState, group: _GpuGroup) -> None:
        spec = self.config.microbench
        key = (ds.dataset.fingerprint, cell.search.backend, cell.search.topology)
        if not spec.enabled or key in self._benched:
            return
        self._benched.add(key)
        queries = ds.dataset.queries[: max(spec.batch_sizes)]
        rows = _ray().get([h.microbench.remote(queries, list(spec.batch_sizes), list(spec.ks), spec.repeats,
                                               spec.warmup) for h in group.handles])
        for per_actor in rows:
            for row in per_actor:
                self.microbench_rows.append({**row, "dataset": ds.dataset.name})

    def _prime(self, loaders: list, group: _GpuGroup, ds: _DatasetState, k: int, system: SystemPlan | None,
               catalogue_ref) -> None:
        """A few requests from every load actor to every GPU actor or store, so cells don't measure cold
        paths (and every actor's clients are connected before the clock starts)."""
        queries = ds.dataset.queries[:8]
        k = min(k, ds.dataset.n)
        if system is None:
            refs = [a.prime.remote(group.handles, queries, k) for a in loaders]
        else:
            refs = [a.prime_system.remote(system, catalogue_ref, group.handles, ds.pool_ref, k) for a in loaders]
        try:
            _ray().get(refs, timeout=self.config.cluster.actor_start_timeout_s)
        except _ray().exceptions.RayTaskError as err:
            cause = err.cause if isinstance(err.cause, Exception) else None
            if isinstance(cause, UnavailableError):
                raise UnavailableError(str(cause)) from None
            raise

    def _system(self, cell: Workload, ds: _DatasetState, entry: dict) -> tuple[SystemPlan | None, object]:
        """For a database system: the catalogue (in the object store) loaded into its stores, and its plan."""
        if make_system(cell.system, cell, self.config.stores).micro_batched:
            return None, None
        catalogue = self.systems.catalogue(cell, ds.dataset)
        if catalogue.fingerprint not in self._catalogue_refs:
            self._catalogue_refs[catalogue.fingerprint] = _ray().put(catalogue)
        started = time.perf_counter()
        plan, info = self.systems.plan(cell, catalogue)
        if info:
            self.progress.note(f"catalogue {catalogue.fingerprint[:8]} loaded into {plan.label} "
                               f"in {time.perf_counter() - started:.1f} s")
        entry["system"] = {"name": plan.name, "label": plan.label, "catalogue": catalogue.fingerprint, "load": info}
        return plan, self._catalogue_refs[catalogue.fingerprint]

    def _load_actors(self, count: int) -> list:
        for i in range(count):
            if i not in self._load:
                self._load[i] = actors.start_load_actor(self.run_id, i, self.config.cluster.load_actor_cpus,
                                                        self.config.metrics.enabled)
        return [self._load[i] for i in range(count)]


def _ray():
    import ray

    return ray


def main(argv: list[str] | None = None) -> int:
    from perfray.cli import main as cli_main

    return cli_main(["sweep", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
