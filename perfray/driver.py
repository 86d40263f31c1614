"""The run driver: run each cell of the grid on Ray (or, with a ``capacity`` section, search each cell's
capacity with one measured cell per step), gather rows as they come, write results and verdicts.

Entry points: ``python -m perfray.sweep`` / ``perfray sweep`` and ``perfray capacity`` (``perfray.cli``)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from perfray.analysis.cells import (
    cell_labels,
    comparison_keys,
    gpu_usage,
    loss_recovery_s,
    progress_label,
    summarize_phases,
)
from perfray.analysis.colocation import colocation_fields
from perfray.analysis.nodes import cell_node_table, slow_nodes
from perfray.analysis.repeats import add_repeat_spread
from perfray.analysis.summary import add_baseline, add_scaling, check_targets, harness_verdicts, slo_verdicts
from perfray.capacity import CapacitySearch, Step
from perfray.cluster import runtime
from perfray.cluster.fleet import Fleet, GpuGroup
from perfray.cluster.gathering import RowGatherer
from perfray.cluster.host_cpu import CellCpu, sut_colocation
from perfray.cluster.load_types import LoadSizing
from perfray.cluster.local_stores import serve_milvus_lite
from perfray.cluster.node_loss import NodeLossTracker
from perfray.cluster.nodes import cluster_nodes
from perfray.config import SweepConfig, Workload, phase_rates
from perfray.errors import EXIT_OK, EXIT_TARGET_FAILED, PerfrayError, raised_remotely
from perfray.load.generator import CellPlan
from perfray.load.profiles import op_mix
from perfray.load.schedules import PhaseRates, load_trace, parse_arrival
from perfray.progress import Progress
from perfray.results.frame import CellFrame
from perfray.results.manifest import Manifest
from perfray.results.writer import RequestWriter, write_table
from perfray.schema import MICROBENCH_SCHEMA
from perfray.sut.session import SystemSession, effective_batching

# Time between choosing a cell's start and its first request: actors must receive the plan first.
START_LEAD_NS = 700_000_000
# Labels a capacity row carries from its steps: what was searched.
CAPACITY_LABELS = ("system", "system_name", "n_gpus", "k", "topology", "backend", "simulated", "arrival", "op_mix",
                   "hops", "cache", "concurrency", "batch_max", "batch_window_ms", "dataset")


@dataclass
class Hooks:
    """Callbacks for tests and tools (e.g. fault injection once a cell's actors are running)."""

    on_cell_start: Callable[[int, list, list], None] | None = None


class SweepDriver:
    """Runs one sweep or capacity search; ``run()`` returns the exit code and always leaves results and
    manifest on disk."""

    def __init__(self, config: SweepConfig, run_dir: Path, run_id: str, progress: Progress | None = None,
                 hooks: Hooks | None = None, argv: list[str] | None = None,
                 systems: SystemSession | None = None) -> None:
        self.config, self.run_dir, self.run_id = config, Path(run_dir), run_id
        self.progress = progress or Progress(enabled=False)
        self.hooks = hooks or Hooks()
        # the grid; a capacity search measures each base at its own rates, one added cell per step
        bases = [effective_batching(c) for c in config.cells()]  # the manifest records what actually runs
        if config.capacity is not None:  # the search sets the rate: a rate axis would repeat the same search
            bases = list({_without_rate(c): c for c in bases}.values())
        self._declared_actors = [c.load.actors for c in bases]  # "auto" is sized again for each capacity step
        self.sizing = LoadSizing(config.cluster)  # load.actors: auto; on a cluster, once connected
        self.bases, calibrated = self.sizing.size(bases)
        self.cells = self._grid()
        self.cache_dir = config.cache_dir or self.run_dir.parent / ".cache"
        self.writer = RequestWriter(self.run_dir)
        self.manifest = Manifest(
            self.run_dir, run_id=run_id, name=config.name, command=argv or sys.argv,
            config=config.model_dump(mode="json"),
            cells=[{"cell": i, "status": "pending", "workload": c.model_dump(mode="json"),
                    **({"base": i % len(self.bases), "repeat": i // len(self.bases)} if config.repeat > 1 else {})}
                   for i, c in enumerate(self.cells)], calibration=calibrated,
        )
        self.summary: list[dict] = []
        self.phase_summary: list[dict] = []
        self.scaling_keys: list[tuple] = []
        self.baseline_keys: list[str] = []
        self.searches: list[tuple[int, CapacitySearch]] = []  # (base, its search), in order
        self._ray: runtime.RayInfo | None = None
        self._systems_checked = systems is not None
        self.systems = systems or SystemSession(config.stores, serve_embedded=serve_milvus_lite)
        self.fleet = Fleet(config, run_id, self.cache_dir, self.progress, self.systems)
        self.gather = RowGatherer(self.run_dir, self.writer, self.manifest, self.progress, self.fleet.load,
                                  self.fleet.node_of)
        self.nodes: NodeLossTracker | None = None
        self.cell_cpu = CellCpu()  # what perfray's own processes take on the driver's host while a cell runs

    # ----------------------------------------------------------------------------------------- run
    def run(self) -> int:
        self.manifest.write()
        status, code = "failed", EXIT_OK  # anything that escapes below leaves the run marked failed
        try:
            if not self._systems_checked:
                self.systems.check(self.bases)
            gpu_cells = [c for c in self.bases if self.fleet.needs_gpu_actors(c)]
            gpus = max(c.search.n_gpus for c in gpu_cells) if gpu_cells else 0
            cpus = max(c.load.actors if isinstance(c.load.actors, int) else os.cpu_count() or 1
                       for c in self.bases) * self.config.cluster.load_actor_cpus
            self._ray = runtime.connect(self.config.cluster, gpus, cpus, self.config.metrics)
            self.systems.check_reachable(self.bases, runtime.alive_nodes())
            self.manifest.update(status="running", ray={
                "embedded": self._ray.embedded, "address": self._ray.address,
                "resources": self._ray.resources, "dashboard_url": self._ray.dashboard_url,
                "metrics_port": self._ray.metrics_port if self.config.metrics.enabled else None,
                "observers": self._ray.observers},
                gpus={"declared": gpus, "logical": self._ray.logical_gpus,
                      "real_on_driver": self._ray.real_gpus_on_driver}, nodes=cluster_nodes())
            self.nodes = NodeLossTracker(self.manifest, self.fleet, self.progress,
                                         [n["node_id"] for n in self.manifest.doc["nodes"]])
            if self.sizing.on_cluster and "auto" in self._declared_actors:
                self._size_on_cluster(self.manifest.doc["nodes"])
            if self._ray.dashboard_url:
                self.progress.note(f"Ray dashboard: http://{self._ray.dashboard_url}")
            if self.config.capacity is None:
                for index in range(len(self.cells)):
                    self._run_cell(index)
            else:
                if self.config.targets:
                    self.progress.note("perfray: a capacity run checks its SLOs (capacity.slo) at every step; the "
                                       "config's targets are not checked")
                for base in range(len(self.bases)):
                    self._search_capacity(base)
            status = "complete"
        except KeyboardInterrupt:
            status, code = "interrupted", 130
        except PerfrayError as err:  # unavailable (a store, the cluster), or bad input found once read (a file)
            code = err.exit_code
            self.manifest.doc["error"] = str(err)
            status = getattr(err, "run_status", status)  # e.g. stopped after a lost node (cluster.on_node_loss)
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
        if self.config.capacity is None:
            add_repeat_spread(self.summary)
            add_scaling(self.summary, self.scaling_keys)
            add_baseline(self.summary, self.baseline_keys, self.config.baseline_system)
            verdicts = (check_targets(self.summary, self.config.targets, self.phase_summary) + slo_verdicts(
                self.summary, self.config.slo, self.phase_summary) + harness_verdicts(self.summary))
        else:
            verdicts = self._capacity_results()
        if self.summary:
            write_table(self.run_dir / "summary.parquet", pa.Table.from_pylist(self.summary))
        if self.phase_summary:
            write_table(self.run_dir / "phases.parquet", pa.Table.from_pylist(self.phase_summary))
        if self.fleet.microbench_rows:
            write_table(self.run_dir / "microbench.parquet",
                        pa.Table.from_pylist(self.fleet.microbench_rows, schema=MICROBENCH_SCHEMA))
        described = self.fleet.described
        simulated = any(d["simulated"] for d in described) if described else None
        self.manifest.doc.setdefault("gpus", {}).update(simulated=simulated, models=self.fleet.devices,
                                                        actors=described)
        self.manifest.doc["load_actors"] = [{"actor": i, **w} for i, w in sorted(self.fleet.load_where.items())]
        self.manifest.update(status=status, finished_unix_s=time.time(), verdicts=verdicts,
                             rows_written=self.writer.rows_written, ground_truth=self.fleet.truth)

    # ------------------------------------------------------------------------------------ capacity
    def _search_capacity(self, base: int) -> None:
        """Steps at rates the search chooses, each a measured cell of its own, until the capacity is bracketed."""
        spec = self.config.capacity
        search = CapacitySearch(spec)
        self.searches.append((base, search))
        while (step := search.next_step()) is not None:
            index = self._add_step(base, len(self.searches) - 1, step)
            self._run_cell(index)
            result = search.record(step, self.summary[-1], index)
            self.progress.note(f"  capacity search {len(self.searches) - 1}: {step.qps:,.0f} QPS for "
                               f"{step.duration_s:g} s -> {result.outcome}"
                               + (f" ({', '.join(result.broken)})" if result.broken else ""))

    def _grid(self) -> list[Workload]:
        """The cells to run: repeats interleaved (every cell, then every cell again), so a drift of the machine
        hits each alike; none up front for a capacity search."""
        return [] if self.config.capacity is not None else [b for _ in range(self.config.repeat) for b in self.bases]

    def _size_on_cluster(self, nodes: list[dict]) -> None:
        """Size ``load.actors: auto`` from the ceilings measured on the cluster's load node types."""
        self.sizing.join(nodes)
        self.bases, calibrated = self.sizing.size(self.bases)
        self.cells = self._grid()
        for entry, cell in zip(self.manifest.doc["cells"], self.cells, strict=True):
            entry["workload"] = cell.model_dump(mode="json")
        self.manifest.update(calibration=calibrated)

    def _add_step(self, base: int, search: int, step: Step) -> int:
        spec, cell = self.config.capacity, self.bases[base]
        load = cell.load.model_copy(update={
            "target_qps": step.qps, "scale_with_gpus": False, "duration_s": step.duration_s,
            "warmup_s": spec.warmup_s, "phases": None, "actors": self._declared_actors[base]})
        sized, _ = self.sizing.size([cell.model_copy(update={"load": load})])
        index = len(self.cells)
        self.cells.append(sized[0])
        self.manifest.doc["cells"].append({"cell": index, "status": "pending",
                                           "workload": sized[0].model_dump(mode="json"),
                                           "capacity": {"search": search, "base": base, "qps": step.qps}})
        return index

    def _capacity_results(self) -> list[dict]:
        from perfray.analysis.capacity_report import capacity_results

        searches = [(base, search.result(), search.steps, search.step_rows()) for base, search in self.searches]
        return capacity_results(searches, self.summary, self.bases, CAPACITY_LABELS, self.run_dir,
                                self.manifest.doc, self.config.capacity)

    # ---------------------------------------------------------------------------------------- cell
    def _run_cell(self, index: int) -> None:
        cell = self.cells[index]
        fleet = self.fleet
        ds = fleet.dataset(cell, self.bases)
        entry = self.manifest.doc["cells"][index]
        system, catalogue_ref = fleet.system(cell, ds, entry)
        started = time.perf_counter()
        group = fleet.gpu_group(cell, ds) if fleet.needs_gpu_actors(cell) else GpuGroup(None, [], [])
        timings = {"gpu_actors_ready_s": round(time.perf_counter() - started, 3)}
        if group.handles:
            fleet.microbench(cell, ds, group)
        started = time.perf_counter()
        loaders = fleet.load_actors(cell.load.actors, group)
        fleet.prime(loaders, group, ds, cell.search.k, system, catalogue_ref)
        timings["load_actors_ready_s"] = round(time.perf_counter() - started, 3)
        phases = [PhaseRates(p.name, p.duration_s, *phase_rates(p, cell.offered_qps), p.measured)
                  for p in cell.load.phase_plan()]
        setup = CellSetup(ds, group, loaders, phases, system, catalogue_ref,
                          fleet.begin_writes(cell, ds, phases, index), timings)
        try:
            self._load_cell(index, setup)
        finally:
            if setup.writes is not None:
                fleet.undo_writes(cell, ds, setup.writes, group)

    def _load_cell(self, index: int, setup: CellSetup) -> None:
        """Send the cell's load, gather its rows as they come, account for lost actors, summarize."""
        cell, fleet, entry = self.cells[index], self.fleet, self.manifest.doc["cells"][index]
        ds, group, loaders, phases, system, writes = (setup.ds, setup.group, setup.loaders, setup.phases, setup.system,
                                                      setup.writes)
        ops = op_mix(cell.load.op_mix, cell.search.k, ds.dataset.n)
        start_ns = time.time_ns() + START_LEAD_NS
        plans = [CellPlan(cell=index, actor=i, n_actors=len(loaders), start_unix_ns=start_ns, phases=phases,
                          arrival=cell.load.arrival, ops=ops, seed=cell.load.seed,
                          batch_window_ns=int(cell.load.batch_window_ms * 1e6), batch_max=cell.load.batch_max,
                          max_in_flight=cell.load.max_in_flight, timeout_ns=int(cell.load.timeout_ms * 1e6),
                          extra={"target_qps": cell.offered_qps}, trace=_trace(cell.load.arrival),
                          query_skew=cell.load.query_skew,
                          write_rate=cell.load.writes.rate if writes is not None else 0.0, writes=writes,
                          cpu=pinned[i % len(pinned)] if (pinned := self.config.cluster.generator_cpus) else None)
                 for i in range(len(loaders))]
        entry.update(status="running", start_unix_ns=start_ns)
        self.manifest.write()
        label = progress_label(cell, group.described, system.label if system is not None else None)
        self.progress.cell_started(index, len(self.cells), label, sum(p.duration_s for p in phases), start_ns)
        counters_before = fleet.gpu_counters(group)
        watch = fleet.watch_search(group, sum(p.duration_s for p in phases) + START_LEAD_NS / 1e9 + 60)
        self.cell_cpu.start(fleet)
        refs = {i: loaders[i].run_cell.remote(plans[i], ds.pool_ref, group.handles, cell.search.topology,
                                              system, setup.catalogue_ref)
                for i in range(len(loaders))}
        if self.hooks.on_cell_start:
            self.hooks.on_cell_start(index, list(loaders), list(group.handles))
        self.gather.start_cell(refs, group.nodes)
        stats = []
        while refs:
            ready, _ = _ray().wait(list(refs.values()), num_returns=len(refs),
                                   timeout=self.config.cluster.drain_interval_s)
            self.gather.drain(index)
            for actor, err in fleet.search_deaths(watch):
                self.gather.actor_failed("gpu", actor, index, err)
            self.nodes.poll(index)
            for i in [i for i, ref in refs.items() if ref in ready]:
                ref = refs.pop(i)
                try:
                    stats.append(_ray().get(ref))
                except _ray().exceptions.RayActorError as err:
                    self.gather.actor_failed("load", i, index, err)
                except _ray().exceptions.RayTaskError as err:  # e.g. a CPU to pin to that the node lacks
                    if (error := raised_remotely(err)) is not None:
                        raise error from None
                    raise
        self.gather.drain(index)
        entry["host_cpu"] = self.cell_cpu.stop(fleet)
        counters_after = fleet.gpu_counters(group)
        entry["gpu_usage"] = gpu_usage(counters_before, counters_after)
        for actor, err in fleet.search_deaths(watch, done=True) + fleet.dead(counters_after):
            self.gather.actor_failed("gpu", actor, index, err)
        self.nodes.settle(index)
        self.writer.close_cell(index)
        # A dead actor's unreported requests are rows too (lost); a cell that lost an actor is degraded.
        lost = self.gather.account_lost(index, plans, ds.dataset.queries.shape[0])
        status = "degraded" if self.gather.failed_in(index) else "complete"
        for s in stats:
            s["node_id"] = fleet.node_of("load", s.get("actor", -1))
        entry.update(status=status, actor_stats=stats, lost_rows=lost, timings={
            **setup.timings, "gather_s": round(self.gather.seconds, 3), "drains": self.gather.drains},
            placement={"load": [fleet.node_of("load", i) for i in range(len(loaders))], "search": group.nodes})
        entry["sut_colocation"] = sut_colocation(entry["placement"], self.manifest.doc["nodes"], {
            s: self.config.stores.host_of(s) for s in (self.systems.stores_of(cell) if system is not None else ())})
        self._summarize(index, status)
        self._node_loss_recovery(index)
        self.progress.cell_finished(self.summary[-1])
        self.manifest.write()
        self.nodes.stop_if_asked(index, self.config.cluster.on_node_loss)

    def _node_loss_recovery(self, index: int) -> None:
        """For each node lost in the cell: how long until the surviving load actors' requests were back within the
        SLO (the config's tightest p99 target, else the p99 before the loss); the cell's ``recovery_s``."""
        row = self.summary[-1]
        slos = [t.max for t in (*self.config.targets, *(t for s in self.config.slo for _, t in s.targets()))
                if t.metric == "p99_ms" and t.max is not None and t.must_pass and not t.where]
        for event in self.nodes.events_in(index):
            dead = [f["actor"] for f in self.manifest.doc["failures"] if f["role"] == "load" and f["cell"] == index]
            entry = self.manifest.doc["cells"][index]
            end_ns = entry["start_unix_ns"] + int(sum(p.duration_s for p in self.cells[index].load.phase_plan()) * 1e9)
            event["recovery_s"] = loss_recovery_s(CellFrame.read(self.run_dir, index), event["at_unix_ns"], end_ns, dead,
                                                  min(slos) if slos else None)
            row["recovery_s"] = event["recovery_s"]

    def _summarize(self, index: int, status: str, until_ns: int | None = None) -> None:
        """Summary rows of a cell (all measured phases) and of each phase, from its Parquet rows;
        ``until_ns`` cuts windows short (an interrupted cell is measured over the time it ran)."""
        cell, entry = self.cells[index], self.manifest.doc["cells"][index]
        labels = cell_labels(cell, self.fleet.described if self.fleet.needs_gpu_actors(cell) else [], entry,
                             (self.manifest.doc.get("calibration") or {}).get("ceilings_qps", {}))
        if "capacity" in entry:
            labels["capacity_search"] = entry["capacity"]["search"]
        if self.fleet.needs_gpu_actors(cell) and self.fleet.described:  # fewer after a lost node: what it had
            labels["n_gpus"] = len(self.fleet.described)
        labels["base_cell"], labels["repeat"] = entry.get("base", index), entry.get("repeat", 0)
        rows = CellFrame.read(self.run_dir, index)  # a column at a time: bounded memory for millions of rows
        row, phase_rows = summarize_phases(rows, cell, index, status, entry.get("start_unix_ns", 0),
                                           until_ns or 2**62, labels)
        entry["nodes"] = cell_node_table(rows, cell, entry)  # per node, with the slow-node verdicts
        row.update(slow_nodes=slow_nodes(entry["nodes"]), **colocation_fields(entry))
        self.summary.append(row)
        self.phase_summary.extend(phase_rows)
        baseline_key, scaling_key = comparison_keys(cell)  # a repeat pairs with cells of its own repeat
        self.baseline_keys.append(f"{baseline_key}#{labels['repeat']}")
        self.scaling_keys.append((scaling_key, labels["repeat"]))


@dataclass
class CellSetup:
    """What a cell runs on, ready before its load starts: its dataset, GPU group, primed load actors, rate
    phases, database system (and catalogue), its writes (``load.writes``) and how long getting ready took."""

    ds: object
    group: GpuGroup
    loaders: list
    phases: list
    system: object
    catalogue_ref: object
    writes: object
    timings: dict


def _without_rate(cell: Workload) -> str:
    """A cell's workload without its offered rate (what a capacity search is of)."""
    data = cell.model_dump(mode="json")
    data["load"].pop("target_qps")
    return json.dumps(data, sort_keys=True)


def _trace(arrival: str):
    """A ``trace:`` arrival's offsets, read here once: load actors need not see the file."""
    kind, path = parse_arrival(arrival)
    return load_trace(path) if kind == "trace" else None


def _ray():
    import ray

    return ray
