"""Calibration where the load runs: the cluster's load nodes grouped by type (CPU model and Ray CPU count), each
type's load-path ceilings measured by a Ray task pinned to one of its nodes (``perfray calibrate --cluster``,
cached per type), and the ceilings ``load.actors: auto`` sizes from on a cluster: for each path, the lowest of
the load nodes' types (an actor may land on any of them), with as many actors as the load nodes hold.

Which nodes are load nodes follows ``cluster.load_placement`` and ``cluster.load_resources`` before any search
actor exists: ``separate`` → the eligible nodes without GPUs (all eligible ones when every node has GPUs),
``colocate`` → those with GPUs (likewise), ``spread`` → every eligible node."""

from __future__ import annotations

import os
import platform

from perfray.cluster.placement import PlacementError, fits


def cpu_model() -> str:
    """This host's CPU model name (``/proc/cpuinfo``; the platform's processor name elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def type_name(model: str, cpus: float) -> str:
    """A load node type: what bounds one load generator there (the CPU) and how many fit (Ray's CPU count)."""
    return f"{model} x{cpus:g}"


def load_nodes(nodes: list[dict], spec) -> list[dict]:
    """The nodes load actors may go to under ``spec`` (a ClusterSpec), before search actors are placed."""
    hosts = [n for n in nodes if fits(n, spec.load_actor_cpus, spec.load_resources)]
    if not hosts:
        raise PlacementError("no node of the cluster can host a load actor: cluster.load_resources and "
                             "cluster.load_actor_cpus must match a node type (ray status lists them)")
    if spec.load_placement == "spread":
        return hosts
    gpu = [n for n in hosts if n["gpus"] > 0]
    plain = [n for n in hosts if n["gpus"] <= 0]
    preferred = plain if spec.load_placement == "separate" else gpu
    return preferred or hosts


def _facts() -> dict:
    from perfray.cluster.nodes import here

    return {**here(), "cpu_model": cpu_model()}


def _pinned(node_id: str, spec, cpus: float | None = None) -> dict:
    from perfray.cluster.placement import load_actor_options

    return {"num_cpus": spec.load_actor_cpus if cpus is None else cpus,
            **load_actor_options(node_id, spec.load_resources if cpus is None else {})}


def node_types(nodes: list[dict], spec) -> dict[str, list[dict]]:
    """The load nodes by type (a short task on each reads its CPU model)."""
    import ray

    chosen = load_nodes(nodes, spec)
    probe = ray.remote(_facts)
    facts = ray.get([probe.options(**_pinned(n["node_id"], spec, cpus=0)).remote() for n in chosen])
    types: dict[str, list[dict]] = {}
    for node, fact in zip(chosen, facts, strict=True):
        types.setdefault(type_name(fact["cpu_model"], node["cpus"]), []).append({**node, **fact})
    return types


def _measure_here(paths: list[str], step_s: float, quiet_s: float) -> tuple[dict, dict]:
    from perfray.cluster.actors import NoopSearchPath
    from perfray.load import calibration

    results = calibration.measure(paths, step_s, report=lambda *_: None, gpu_path=NoopSearchPath, quiet_s=quiet_s)
    return _facts(), results


def calibrate_cluster(nodes: list[dict], spec, paths: list[str], step_s: float = 1.0, quiet_s: float = 15.0,
                      report=print) -> dict[str, dict]:
    """Measure ``paths`` on one node of each load node type (a task holding a load actor's CPUs there), save each
    type's figures in the cluster cache; returns type -> its cache entry. ``report(type, path, figures)``."""
    import ray

    from perfray.load import calibration

    measure = ray.remote(_measure_here)
    out = {}
    for name, members in node_types(nodes, spec).items():
        node, results = ray.get(measure.options(**_pinned(members[0]["node_id"], spec)).remote(
            list(paths), step_s, quiet_s))
        for path, figures in results.items():
            report(name, path, figures)
        out[name] = calibration.save_node_type(name, {**node, "nodes_of_type": len(members)}, results)
    return out


def cluster_ceilings(nodes: list[dict], spec) -> tuple[dict, int]:
    """(what ``calibration.size_load_actors`` takes as ``where``: for each path the lowest ceiling among the load
    nodes' types, and those types; how many load actors the load nodes hold, by CPUs). A type never calibrated
    contributes no ceilings: sizing then names the command that measures it."""
    from perfray.load import calibration

    types = node_types(nodes, spec)
    cached = calibration.cluster_cached()
    paths: dict[str, dict] = {}
    for name in types:
        for path, figures in (cached.get(name) or {}).get("paths", {}).items():
            if name in _calibrated_for(cached, types, path):
                best = paths.get(path)
                if best is None or figures["ceiling_qps"] < best["ceiling_qps"]:
                    paths[path] = {"ceiling_qps": figures["ceiling_qps"], "node_type": name}
    most = sum(max(int(n["cpus"] // spec.load_actor_cpus), 1) if spec.load_actor_cpus > 0 else int(n["cpus"])
               for members in types.values() for n in members)
    measured = [cached[n]["measured_unix_s"] for n in types if n in cached]
    return {"node_types": sorted(types), "paths": paths, "measured_unix_s": min(measured) if measured else None}, most


def _calibrated_for(cached: dict, types: dict, path: str) -> list[str]:
    """The types' names when every load node type has ``path`` measured, else none (a ceiling from some types only
    would size actors for nodes it does not describe)."""
    names = list(types)
    return names if all(path in (cached.get(n) or {}).get("paths", {}) for n in names) else []


class LoadSizing:
    """How ``load.actors: auto`` is sized: from this host's ceilings, or, on a cluster (an address given), from its
    load node types' once ``join`` has seen its nodes (until then cells keep ``auto``)."""

    def __init__(self, spec) -> None:
        from perfray.cluster.runtime import joins_cluster

        self.spec, self.on_cluster = spec, joins_cluster(spec)
        self.where: tuple[dict, int] | None = None

    def join(self, nodes: list[dict]) -> None:
        self.where = cluster_ceilings(nodes, self.spec)

    def size(self, cells: list) -> tuple[list, dict | None]:
        from perfray.load import calibration

        if self.where is not None:
            return calibration.size_load_actors(cells, self.where[1], where=self.where[0])
        if self.on_cluster:
            return cells, None
        return calibration.size_load_actors(cells, os.cpu_count() or 1)
