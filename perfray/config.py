"""Sweep configuration: declared once (pydantic), validated at load, printed back into the manifest.

A config is a *workload* (dataset, search, load) plus ``sweep``: a mapping of field paths to lists of values.
Every combination of those values is one *cell*. Paths are dotted (``load.target_qps``) or a leaf name that
is unique across sections (``target_qps``); ``--set`` uses the same paths.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from perfray.cluster_config import ClusterSpec
from perfray.config_model import Strict
from perfray.dataset_config import Dataset, FileDataset, FilterSpec, SyntheticDataset  # noqa: F401 - interface
from perfray.errors import UsageError
from perfray.systems_config import SYSTEMS, CatalogueSpec, HybridSpec, StoresSpec
from perfray.targets_config import CapacitySpec, SloSpec, TargetSpec
from perfray.traffic_config import LoadSpec, Phase, phase_rates  # noqa: F401 - part of this module's interface

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"


SEARCH_PARAMS = {
    "ef": "an HNSW search's candidate list: pgvector hnsw.ef_search, Milvus ef, the k asked of Neo4j's index",
    "nprobe": "IVF lists probed: pgvector ivfflat.probes, Milvus nprobe",
}


class SearchSpec(Strict):
    backend: str = Field(
        "auto", description="GPU search backend: auto (the first that runs here: cupy, faiss, else the "
                            "numpy CPU twin), numpy, cupy, faiss")
    topology: Literal["replicated", "sharded"] = Field(
        "replicated", description="replicated: every GPU holds the whole index, requests are spread; "
                                  "sharded: each holds a slice, every request asks all and merges")
    n_gpus: int = Field(
        1, ge=1, description="GPU search actors (one per device); simulated with Ray logical GPUs when the "
                             "machine has fewer")
    k: int = Field(10, ge=1, le=4096, description="neighbours each query asks for (recall@k)")
    params: dict[Literal["ef", "nprobe"], Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="search-time parameters of an approximate index (SEARCH_PARAMS), "
        "e.g. {ef: 40}; a sweep axis as search.params.ef: the recall-throughput trade-off")
    service_ms_per_query: float = Field(
        0.0, ge=0, le=10_000, description="a simulated device (gpu_search): each search actor also spends this "
        "long per query, in arrival order, on top of its backend's own time. A system of known capacity (1000 / "
        "this, queries per second per GPU) to check perfray's capacity and sizing figures against; 0: off")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        from perfray.backends import BACKENDS

        if value != "auto" and value not in BACKENDS.names():
            raise ValueError(f"unknown backend {value!r}; known: auto, {', '.join(BACKENDS.names())}")
        return value


class Workload(Strict):
    """Everything one cell needs: what data, which system serves it, how it is searched, how load is offered."""

    system: str = Field("gpu_search", description="system under test (perfray.sut): gpu_search, milvus, …")
    dataset: Dataset = Field(default_factory=SyntheticDataset, description="the vectors: synthetic or a file")
    catalogue: CatalogueSpec = Field(default_factory=CatalogueSpec, description="the media catalogue built on "
                                     "them (users, genres, people, policies) for the database systems")
    hybrid: HybridSpec = Field(default_factory=HybridSpec, description="the hybrid pipeline's stages")
    search: SearchSpec = Field(default_factory=SearchSpec, description="how vectors are searched")
    load: LoadSpec = Field(default_factory=LoadSpec, description="the offered load: rate, arrivals, phases, actors")
    filter: FilterSpec | None = Field(None, description="filtered search; a sweep axis as filter.selectivity")

    @field_validator("system")
    @classmethod
    def _known_system(cls, value: str) -> str:
        if value not in SYSTEMS.names():
            raise ValueError(f"unknown system {value!r}; known: {', '.join(SYSTEMS.names())}")
        return value

    @model_validator(mode="after")
    def _system_applies(self) -> Workload:
        """A filter or writes on a system that cannot apply them: one line naming the systems that can."""
        for wanted, flag, problem in (
                (self.filter, "filterable", "filter: system {!r} has no vector search to filter (systems that filter: "
                                            "{})"),
                (self.load.writes, "writable", "load.writes: system {!r} does not apply writes yet (systems that do: "
                                               "{})")):
            if wanted is not None and not SYSTEMS.flag(self.system, flag, False):
                able = ", ".join(SYSTEMS.having(flag))
                raise ValueError(problem.format(self.system, able))
        return self

    @model_validator(mode="after")
    def _search_params_taken(self) -> Workload:
        untaken = sorted(set(self.search.params) - search_params_of(self))
        if untaken:
            name = untaken[0]
            takers = ", ".join(n for n in SYSTEMS.names() if name in SYSTEMS.flag(n, "search_params", frozenset()))
            raise ValueError(f"search.params.{name}: system {self.system!r} does not take it (systems that do: "
                             f"{takers})")
        return self

    @property
    def offered_qps(self) -> float:
        """The cell's target rate: ``target_qps``, times ``n_gpus`` when load scales with GPUs."""
        return self.load.target_qps * (self.search.n_gpus if self.load.scale_with_gpus else 1)


class MicrobenchSpec(Strict):
    enabled: bool = Field(
        True, description="time the search kernel in each GPU actor once per dataset (microbench.parquet; "
                          "the report's kernel term)")
    batch_sizes: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        (1, 16, 128), description="query batch sizes timed")
    ks: tuple[Annotated[int, Field(ge=1)], ...] = Field((10,), description="k values timed")
    repeats: int = Field(5, ge=1, description="timed calls per (batch, k)")
    warmup: int = Field(2, ge=0, description="untimed calls before them")


class MetricsSpec(Strict):
    """Live metrics (Prometheus format) while a sweep runs; reports never use them."""

    enabled: bool = Field(
        True, description="export live metrics through Ray's Prometheus endpoint while the run lasts")
    export_port: int | None = Field(None, ge=1, le=65535,
                                    description="embedded Ray's metrics port (Prometheus scrapes it); default: Ray picks")
    # Every Ray process (driver, workers, raylet, GCS) exports its metrics to the dashboard agent at this interval,
    # in bursts that a system under test on the same cores can wait behind: at 5 s instead of 2 s the agent uses
    # 1.3% of a core instead of 2.0% during a 5,000 req/s cell; the effect on a co-located server's p99 was within
    # a 2-core box's noise (benchmarks/results/http_sweep-2026-11-30.txt). Ray's own default is 10 s.
    report_interval_ms: int = Field(5000, ge=100, description="how often Ray's processes push metrics to the "
                                    "metrics agent (embedded Ray)")
    final_scrape_s: float = Field(0.0, ge=0, description="keep the metrics endpoint up this long after the last "
                                  "cell, so a scraper sees the final counts (>= report interval + scrape interval)")


def capacity_spec(base: CapacitySpec | None, changes: dict) -> CapacitySpec:
    """``base`` (or the defaults) with ``changes`` (e.g. from command-line flags), validated."""
    return _validate(CapacitySpec, {**(base or CapacitySpec()).model_dump(), **changes}, "capacity")


class SweepConfig(Strict):
    name: str = Field("sweep", description="the run's name: the default run id starts with it")
    workload: Workload = Field(
        default_factory=Workload, description="the base cell: every sweep value changes one field of it")
    sweep: dict[str, tuple[Any, ...]] = Field(
        default_factory=dict, description="axes: a workload field (by path, e.g. search.n_gpus, or unique "
                                          "short name) -> its values; every combination is a cell")
    targets: tuple[TargetSpec, ...] = Field(
        (), description="thresholds checked on every cell's summary (must_pass: false only reports; where: "
                        "restricts them)")
    slo: tuple[SloSpec, ...] = Field(
        (), description="the plan's service-level objectives: goal (must be met) and stretch per metric, judged "
                        "on intervals; the report's SLO table and validate's verdicts")
    microbench: MicrobenchSpec = Field(
        default_factory=MicrobenchSpec, description="kernel microbenchmarks in the GPU search actors")
    cluster: ClusterSpec = Field(
        default_factory=ClusterSpec, description="Ray: the address, GPUs, actors' CPUs, placement of search "
                                                 "and load actors, node loss")
    metrics: MetricsSpec = Field(
        default_factory=MetricsSpec, description="live metrics: Prometheus export, push interval, final "
                                                 "scrape")
    stores: StoresSpec = Field(
        default_factory=StoresSpec, description="how to reach each database or service a system uses "
                                                "(credentials from environment variables only)")
    baseline_system: str | None = Field(None, description="add speedups of every cell vs this system's cell")
    cache_dir: Path | None = Field(None, description="ground-truth cache; default RESULTS_DIR/.cache")
    repeat: int = Field(1, ge=1, le=100, description="run every cell this many times, interleaved (all cells, "
                        "then all again): summaries carry the spread between repeats, compare uses it")
    capacity: CapacitySpec | None = Field(None, description="search each cell's capacity at these SLOs instead "
                                          "of running it at its own rate (perfray capacity)")

    @model_validator(mode="after")
    def _sweep_axes(self) -> SweepConfig:
        for key, values in self.sweep.items():
            resolve_path(key)
            if not values:
                raise ValueError(f"sweep.{key}: needs at least one value")
        return self

    def capacity_slos(self) -> list[str]:
        """The must-pass p99 and failure-rate bounds of the ``slo:`` goals and the targets (cell-wide, not per
        phase), as a capacity search's SLOs (``p99_ms<=10``)."""
        checks = [*(t for s in self.slo for _, t in s.targets()), *self.targets]
        return list(dict.fromkeys(f"{t.metric}<={t.max:g}" for t in checks if t.must_pass and not t.where
                                  and t.max is not None and t.metric in ("p99_ms", "failure_rate")))

    def cells(self) -> list[Workload]:
        """The grid: one validated Workload per combination of sweep values, in config order. A swept search
        parameter (``search.params.ef``) applies to the cells whose system takes it; a system that does not runs
        once without it (phase 6 sweeps the baseline's ``ef`` beside a hybrid that has none)."""
        base = self.workload.model_dump(mode="json")
        axes = [(resolve_path(k), vs) for k, vs in self.sweep.items()]
        out, seen = [], set()
        for combo in itertools.product(*(vs for _, vs in axes)):
            data = copy.deepcopy(base)
            swept_params = {}
            for (path, _), value in zip(axes, combo, strict=True):
                if path[:2] == ("search", "params") and len(path) == 3:
                    swept_params[path[2]] = value
                else:
                    set_path(data, path, value)
            dropped = False
            if swept_params:
                taken = search_params_of(_validate(Workload, data, "sweep"))
                for name, value in swept_params.items():
                    if name in taken or name not in SEARCH_PARAMS:  # an unknown name fails validation below
                        set_path(data, ("search", "params", name), value)
                    else:
                        dropped = True
            key = json.dumps(data, sort_keys=True)
            if not (dropped and key in seen):  # the same cell once, not once per value it does not take
                seen.add(key)
                out.append(_validate(Workload, data, "sweep"))
        return out


def search_params_of(cell: Workload) -> frozenset[str]:
    """The search parameters (``search.params``) the cell's system applies: the hybrid's are its vector stage's."""
    name = cell.hybrid.vector if cell.system == "hybrid" else cell.system
    return SYSTEMS.flag(name, "search_params", frozenset())


def _leaf_paths() -> dict[str, list[str]]:
    leaves: dict[str, list[str]] = {}
    leaves["system"] = ["system"]
    for section, model in (("dataset", SyntheticDataset), ("dataset", FileDataset), ("search", SearchSpec),
                           ("load", LoadSpec), ("catalogue", CatalogueSpec), ("hybrid", HybridSpec),
                           ("filter", FilterSpec)):
        for name in model.model_fields:
            paths = leaves.setdefault(name, [])
            if f"{section}.{name}" not in paths:
                paths.append(f"{section}.{name}")
    return leaves


def resolve_path(key: str) -> tuple[str, ...]:
    """``load.target_qps`` or a unique leaf (``target_qps``) → path inside a Workload."""
    if key in ("dataset", "system", "filter") or key.startswith(("dataset.", "search.", "load.", "catalogue.", "hybrid.",
                                                                  "filter.")):
        return tuple(key.split("."))
    paths = _leaf_paths().get(key, [])
    if len(paths) == 1:
        return tuple(paths[0].split("."))
    if len(paths) > 1:
        raise ValueError(f"{key!r} is ambiguous; use one of {', '.join(paths)}")
    raise ValueError(f"{key!r} is not a workload field (try e.g. load.target_qps, search.n_gpus)")


def set_path(data: dict, path: tuple[str, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        if node.get(part) is None:  # an optional section left out (e.g. filter): setting a field creates it
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ValueError(f"{'.'.join(path)}: {part} is not a section")
    node[path[-1]] = value


# pydantic's words for a value of the wrong shape, said as what was expected
_SHAPES = {"tuple_type": "expected a list [...]", "list_type": "expected a list [...]",
           "dict_type": "expected a mapping {key: value}", "model_type": "expected a mapping {key: value}"}


def _describe(err: ValidationError, where: str) -> str:
    from perfray.redact import redact

    first = err.errors()[0]
    loc = ".".join(str(p) if str(p).isprintable() else repr(p) for p in first["loc"])  # a key "\n" stays on the line
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] in _SHAPES:
        msg = f"{_SHAPES[first['type']]}, got {redact(repr(first.get('input')))[:60]}"
    field = f"{where}: {loc}" if loc else where
    return f"{field}: {msg}"


def _validate(model: type[BaseModel], data: Any, where: str):
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise UsageError(_describe(err, where)) from None


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with a YAML-typed value."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set {text!r}: expected key=value, e.g. --set load.duration_s=2")
    try:
        return key.strip(), yaml.load(raw, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except DuplicateKey as err:
        raise UsageError(f"--set {text!r}: {err}") from None
    except yaml.YAMLError:
        raise UsageError(f"--set {text!r}: the value is not valid YAML") from None


def apply_override(data: dict, key: str, value: Any) -> None:
    """Apply one ``--set``: top-level sections by dotted path, workload fields by path or unique leaf name.
    A value set on a swept field replaces that sweep axis."""
    top = key.split(".")[0]
    if top in SweepConfig.model_fields and top != "workload":
        set_path(data, tuple(key.split(".")), value)
        return
    try:
        path = resolve_path(key.removeprefix("workload."))
    except ValueError as err:
        raise UsageError(f"--set {key}: {err}") from None
    set_path(data.setdefault("workload", {}), path, value)
    sweep = data.get("sweep") or {}
    for axis in list(sweep):
        try:
            if resolve_path(axis) == path:
                del sweep[axis]
        except ValueError:
            continue


class DuplicateKey(yaml.YAMLError):
    """A mapping that names a key twice (YAML's loaders keep the last one silently)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' keys may be overridden: not repeats
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise DuplicateKey(f"key {key!r} appears twice (lines {seen[key]} and {key_node.start_mark.line + 1}); "
                                   "each key may appear once in a mapping")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_config(path: Path | None = None, overrides: list[str] | None = None) -> SweepConfig:
    """Read, override and validate a config file; every problem is a one-line ``UsageError``."""
    path = Path(path) if path else DEFAULT_CONFIG
    if path.is_dir():
        raise UsageError(f"--config {path}: a directory; expected a YAML file (e.g. {path / 'smoke.yaml'})")
    if not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader that refuses repeated keys
    except UnicodeDecodeError as err:
        raise UsageError(f"{path}: not UTF-8 text (byte {err.start}); expected a YAML config") from None
    except OSError as err:
        raise UsageError(f"--config {path}: cannot read it ({err.strerror})") from None
    except DuplicateKey as err:
        raise UsageError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise UsageError(f"{path}: not valid YAML{where}") from None
    if data is None:
        raise UsageError(f"{path}: the file is empty; expected a YAML mapping (e.g. configs/smoke.yaml)")
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping at the top level")
    for text in overrides or []:
        key, value = parse_override(text)
        apply_override(data, key, value)
    config = _validate(SweepConfig, data, str(path))
    try:
        cells = config.cells()
    except UsageError as err:
        raise UsageError(f"{path}: {err}") from None
    for cell in cells:
        _check_cell(cell, path)
    return config


def _check_cell(cell: Workload, path: Path) -> None:
    ds = cell.dataset
    if isinstance(ds, FileDataset):
        for field, file in (("dataset.path", ds.path), ("dataset.queries_path", ds.queries_path)):
            if file is not None and not Path(file).is_file():
                what = f"{file} is a directory; expected a file" if Path(file).is_dir() else f"no such file {file}"
                raise UsageError(f"{path}: {field}: {what}")
    total_s = sum(p.duration_s for p in cell.load.phase_plan())
    peak = max(max(phase_rates(p, cell.offered_qps)) for p in cell.load.phase_plan())
    if peak <= 0:
        raise UsageError(f"{path}: load: every phase has rate 0; nothing would be sent")
    if peak * total_s > 50_000_000:
        raise UsageError(f"{path}: load: {peak:.0f} QPS for {total_s:.0f} s is over 50M requests per cell")
    if cell.search.topology == "sharded" and isinstance(ds, SyntheticDataset) and ds.n < cell.search.n_gpus:
        raise UsageError(f"{path}: dataset.n ({ds.n}) is smaller than search.n_gpus ({cell.search.n_gpus})")
    if isinstance(ds, SyntheticDataset) and cell.search.k > ds.n:
        raise UsageError(f"{path}: search.k ({cell.search.k}) exceeds dataset.n ({ds.n}): a search cannot return more "
                         "neighbours than there are items")
    if isinstance(ds, SyntheticDataset) and cell.search.k > ds.n // cell.search.n_gpus and cell.search.topology == "sharded":
        raise UsageError(f"{path}: search.k ({cell.search.k}) exceeds the rows in one shard")
    if not math.isfinite(cell.load.target_qps):
        raise UsageError(f"{path}: load.target_qps must be finite")
