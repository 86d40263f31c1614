"""The actors a run keeps on Ray between cells: datasets in the object store (with exact ground truth), the
GPU search group of the current cell (rebuilt when its shape changes), the load actors, and each database
system's catalogue and plan. The driver asks; this module starts, primes and replaces actors."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field

from perfray.cluster import actors
from perfray.cluster.nodes import clock_offset, cluster_nodes
from perfray.cluster.placement import PlacementError, SearchPlacement, load_actor_options, plan_load_nodes
from perfray.config import SweepConfig, Workload
from perfray.data import load_dataset
from perfray.data.filters import item_attr, query_filters
from perfray.data.groundtruth import ground_truth, truth_coverage
from perfray.data.writes import WriteSet, cell_writes
from perfray.errors import UnavailableError, UsageError, raised_remotely
from perfray.load.generator import QueryPool
from perfray.load.profiles import op_mix
from perfray.load.schedules import write_schedule
from perfray.progress import Progress
from perfray.sut.session import SystemPlan, SystemSession, make_system


@dataclass
class DatasetState:
    """A dataset in the object store, as one cell asks it: the query pool's ground truth (and filter windows)
    follow the cell's filter; the base vectors and the items' filter attribute are shared."""

    dataset: object
    base_ref: object
    pool_ref: object
    max_k: int
    attr_ref: object = None


@dataclass
class GpuGroup:
    key: tuple
    handles: list
    described: list = field(default_factory=list)
    placement: SearchPlacement | None = None
    simulated_ms_per_query: float = 0.0  # search.service_ms_per_query, as the actors were last told

    @property
    def nodes(self) -> list[str]:
        """The node of each search actor, in endpoint order."""
        return [d.get("node_id") for d in self.described]


def _ray():
    import ray

    return ray


class Fleet:
    """Actors and object-store data of one run. ``load``: index -> load actor (shared with the row gatherer,
    which forgets a dead one); ``load_where``: index -> where that actor runs (node, host, IP, pid, clock offset);
    ``described``: the current GPU group's actors (each with its node); ``devices``: device model -> the most actors
    seen on it at once; ``truth``: per dataset, which query rows have exact ground truth; ``lost_nodes``: nodes
    that died during the run."""

    def __init__(self, config: SweepConfig, run_id: str, cache_dir, progress: Progress,
                 systems: SystemSession) -> None:
        self.config, self.run_id, self.cache_dir, self.progress, self.systems = (
            config, run_id, cache_dir, progress, systems)
        self.load: dict[int, object] = {}
        self.load_where: dict[int, dict] = {}
        self.lost_nodes: set[str] = set()
        self.described: list[dict] = []
        self.devices: dict[str, int] = {}
        self.microbench_rows: list[dict] = []
        self.truth: dict[str, dict] = {}  # dataset name -> which pool rows have exact ground truth
        self._datasets: dict[str, DatasetState] = {}
        self._group: GpuGroup | None = None
        self._group_generation = 0
        self._benched: set[tuple] = set()
        self._catalogue_refs: dict[str, object] = {}

    def needs_gpu_actors(self, cell: Workload) -> bool:
        return bool(make_system(cell.system, cell, self.config.stores).needs_gpu_actors)

    def dataset(self, cell: Workload, cells: list[Workload]) -> DatasetState:
        """The cell's dataset in the object store, with ground truth (for the cell's filter) deep enough for
        every cell that uses it."""
        key = json.dumps(cell.dataset.model_dump(mode="json"), sort_keys=True)
        wanted = cell.filter.model_dump() if cell.filter is not None else None
        state = self._datasets.get(json.dumps([key, wanted], sort_keys=True))
        if state is not None:
            return state
        shared = next((s for k, s in self._datasets.items() if json.loads(k)[0] == key), None)
        ray = _ray()
        if shared is None:
            dataset = load_dataset(cell.dataset)
            _check_k(cell.dataset, dataset.n, [c.search for c in cells if c.dataset == cell.dataset])
            max_k = max(op.k for c in cells if c.dataset == cell.dataset
                        for op in op_mix(c.load.op_mix, c.search.k, dataset.n))
            base_ref, attr_ref = ray.put(dataset.base), ray.put(item_attr(dataset))
        else:
            dataset, max_k, base_ref, attr_ref = shared.dataset, shared.max_k, shared.base_ref, shared.attr_ref
        filters = query_filters(dataset, wanted["selectivity"], wanted["field"]) if wanted is not None else None
        gt_ids, gt_dists = ground_truth(dataset, max_k, self.cache_dir, filters)
        pool = QueryPool(dataset.queries, gt_ids, gt_dists, filters.windows if filters is not None else None)
        state = DatasetState(dataset, base_ref, ray.put(pool), max_k, attr_ref)
        self._datasets[json.dumps([key, wanted], sort_keys=True)] = state
        coverage = truth_coverage(gt_ids)
        self.truth[dataset.name] = coverage
        among = "" if filters is None else f" among the {filters.width:,} items each query's filter passes" + (
            f" (genre {int(filters.labels[0])})" if filters.labels is not None else "")
        self.progress.note(f"dataset {dataset.name}: {dataset.n:,} x {dataset.dim}, {dataset.queries.shape[0]:,} "
                           f"queries, top-{max_k} ground truth{among} {coverage['how']}")
        return state

    def gpu_group(self, cell: Workload, ds: DatasetState) -> GpuGroup:
        """The cell's GPU search actors, built on its dataset; the previous group is killed when the shape changes."""
        s = cell.search
        key = (ds.dataset.fingerprint, s.backend, s.topology, s.n_gpus)
        if self._group is not None and self._group.key == key:
            self._simulate(self._group, s.service_ms_per_query)
            return self._group
        ray = _ray()
        self.drop_group()
        self._group_generation += 1
        cluster = self.config.cluster
        count = self._gpus_for(s.n_gpus)
        placement = SearchPlacement(count, cluster.gpu_actor_cpus, cluster.gpu_placement, cluster.placement_timeout_s,
                                    f"perfray-{self.run_id}-gpus-g{self._group_generation}")
        handles = [actors.start_gpu_actor(self.run_id, i, s.backend, cluster.gpu_actor_cpus, self._group_generation,
                                          placement.options(i)) for i in range(count)]
        self._group = GpuGroup(key, handles, [], placement)  # killed with its placement group if the build fails
        shards = count if s.topology == "sharded" else 1
        builds = [h.build.remote(ds.base_ref, i % shards, shards, ds.attr_ref, cluster.search_actor_nice)
                  for i, h in enumerate(handles)]
        try:
            described = ray.get(builds, timeout=cluster.actor_start_timeout_s)
            where = ray.get([h.where.remote() for h in handles], timeout=cluster.actor_start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise UnavailableError(
                f"{count} GPU search actors did not start within {cluster.actor_start_timeout_s:g} s;"
                " check the cluster's free GPUs (ray status)") from None
        except ray.exceptions.RayTaskError as err:
            raise UnavailableError(str(err.cause) if err.cause else str(err).splitlines()[0]) from None
        except ray.exceptions.RayActorError as err:
            raise UnavailableError(f"a GPU search actor died while building its index ({type(err).__name__}); "
                                   "check its memory and the Ray logs") from None
        described = [{**d, **w} for d, w in zip(described, where, strict=True)]
        if self.config.metrics.enabled:
            started = ray.get([h.start_metrics.remote(self.run_id, not d["simulated"])
                               for h, d in zip(handles, described, strict=True)])
            if not all(started):
                self.progress.note("perfray: warning: NVML is not available on a GPU actor; GPU utilisation "
                                   "is not reported (pip install nvidia-ml-py)")
        self.described = described
        for device, n in Counter(d["device"] for d in described).items():
            self.devices[device] = max(self.devices.get(device, 0), n)
        self._group.described = described
        self._simulate(self._group, s.service_ms_per_query)
        return self._group

    @staticmethod
    def _simulate(group: GpuGroup, ms_per_query: float) -> None:
        if group.simulated_ms_per_query != ms_per_query:
            _ray().get([h.simulate_service.remote(ms_per_query) for h in group.handles])
            group.simulated_ms_per_query = ms_per_query

    def _gpus_for(self, asked: int) -> int:
        """GPUs a group gets: as asked, or after a lost node (``cluster.on_node_loss: continue``) what the surviving
        nodes have, when that is fewer (the cell is labelled with what it had)."""
        if not self.lost_nodes:
            return asked
        have = int(sum(n["gpus"] for n in cluster_nodes()))
        if have < 1:
            raise PlacementError(f"no GPU is left on the cluster after losing {len(self.lost_nodes)} node(s)")
        return min(asked, have)

    def drop_group(self) -> None:
        """Kill the current GPU group's actors and free its placement group."""
        group, self._group = self._group, None
        if group is None:
            return
        for handle in group.handles:
            try:
                _ray().kill(handle)
            except Exception:  # already gone with its node
                pass
        if group.placement is not None:
            group.placement.remove()

    def gpu_counters(self, group: GpuGroup) -> list[dict | Exception]:
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

    def watch_search(self, group: GpuGroup, seconds: float) -> dict:
        """A call per search actor that lasts ``seconds`` unless the actor dies first (ref -> actor index)."""
        return {h.hold.remote(seconds): i for i, h in enumerate(group.handles)}

    def search_deaths(self, watch: dict, done: bool = False) -> list[tuple[int, Exception]]:
        """The search actors of ``watch`` found dead since the last look (``done``: the cell is over, and the calls
        still holding are cancelled)."""
        ray = _ray()
        ready, _ = ray.wait(list(watch), num_returns=len(watch), timeout=0) if watch else ([], [])
        dead = []
        for ref in ready:
            index = watch.pop(ref)
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError as err:
                dead.append((index, err))
        if done:
            for ref in watch:
                ray.cancel(ref)
            watch.clear()
        return dead

    def dead(self, counters: list[dict | Exception]) -> list[tuple[int, Exception]]:
        """The GPU actors that did not answer, with their errors; the group is then replaced for the next cell."""
        dead = [(i, answer) for i, answer in enumerate(counters) if isinstance(answer, Exception)]
        if dead:
            self.drop_group()
        return dead

    def microbench(self, cell: Workload, ds: DatasetState, group: GpuGroup) -> None:
        """Kernel microbenchmarks in the GPU actors, once per dataset, backend and topology."""
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

    def prime(self, loaders: list, group: GpuGroup, ds: DatasetState, k: int, system: SystemPlan | None,
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
        except _ray().exceptions.RayTaskError as err:  # e.g. a store the actors cannot reach
            if (error := raised_remotely(err)) is not None:
                raise error from None
            raise

    def system(self, cell: Workload, ds: DatasetState, entry: dict) -> tuple[SystemPlan | None, object]:
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

    def begin_writes(self, cell: Workload, ds: DatasetState, phases: list, index: int) -> WriteSet | None:
        """The cell's ``load.writes`` (None without): its writes, seeded by the cell, with the store marked as
        being written (``begin_writes``), so that a run that dies before ``undo_writes`` reloads it."""
        spec = cell.load.writes
        if spec is None:
            return None
        offsets, _ = write_schedule(phases, spec.rate, cell.load.seed, index)
        writes = cell_writes(ds.dataset, spec, offsets.size, cell.load.seed, index)
        if not self.needs_gpu_actors(cell):
            self.systems.on_system(cell, "begin_writes")
        return writes

    def undo_writes(self, cell: Workload, ds: DatasetState, writes: WriteSet, group: GpuGroup) -> None:
        """Put the dataset back in the cell's store, or in its search actors (every write undone): the next cell
        starts from the same data."""
        if group.handles:
            try:
                _ray().get([h.reset_writes.remote() for h in group.handles])
            except _ray().exceptions.RayActorError:  # a dead search actor holds no writes; its group is replaced
                self.drop_group()
        else:
            self.systems.on_system(cell, "undo_writes", self.systems.catalogue(cell, ds.dataset), writes)

    def load_actors(self, count: int, group: GpuGroup) -> list:
        """Load actors 0..count-1: those missing started on the nodes ``plan_load_nodes`` picks beside ``group``'s
        search actors, each placed within ``cluster.placement_timeout_s`` and its clock measured against ours."""
        new = [i for i in range(count) if i not in self.load]
        if new:
            cluster = self.config.cluster
            taken = [self.load_where[i]["node_id"] for i in self.load if i in self.load_where]
            nodes = plan_load_nodes(cluster_nodes(), group.nodes, taken, len(new), cluster.load_actor_cpus,
                                    cluster.load_resources, cluster.load_placement, cluster.gpu_actor_cpus)
            for i, node in zip(new, nodes, strict=True):
                self.load[i] = actors.start_load_actor(self.run_id, i, cluster.load_actor_cpus,
                                                       self.config.metrics.enabled, cluster.generator_process,
                                                       load_actor_options(node, cluster.load_resources))
            ray = _ray()
            try:
                where = ray.get([self.load[i].where.remote() for i in new], timeout=cluster.placement_timeout_s)
            except ray.exceptions.GetTimeoutError:
                for i in new:
                    ray.kill(self.load.pop(i))
                raise PlacementError(f"{len(new)} load actors could not be placed within cluster.placement_timeout_s "
                                     f"({cluster.placement_timeout_s:g} s): the nodes chosen have no room free "
                                     "(ray status)") from None
            for i, info in zip(new, where, strict=True):
                handle = self.load[i]
                info.update(clock_offset(lambda h=handle: ray.get(h.clock.remote())))
                self.load_where[i] = info
        return [self.load[i] for i in range(count)]

    def node_of(self, role: str, index: int) -> str | None:
        """The node of load actor or search actor ``index`` (None when unknown)."""
        if role == "load":
            return (self.load_where.get(index) or {}).get("node_id")
        return self.described[index].get("node_id") if 0 <= index < len(self.described) else None


def _check_k(spec, n: int, searches: list) -> None:
    """Every cell's k within what its dataset (a shard of it, when sharded) holds: a file's size is known once read,
    a synthetic one's is checked with the config."""
    for search in searches:
        items = n // search.n_gpus if search.topology == "sharded" else n
        if search.k > items:
            where = f"one of {search.n_gpus} shards holds {items:,}" if search.topology == "sharded" else f"{n:,} vectors"
            raise UsageError(f"{getattr(spec, 'path', 'dataset')}: {where}, fewer than search.k ({search.k}): a search "
                             "cannot return more neighbours than there are items")
