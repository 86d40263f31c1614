"""Where a run's actors go, chosen by perfray rather than left to Ray's defaults.

Search actors: a placement group with a bundle per GPU, spread over nodes (a lost node costs the fewest GPUs) or
packed (``cluster.gpu_placement``). Load actors: pinned to nodes chosen here (``cluster.load_placement``,
``cluster.load_resources``), each to the eligible node holding the fewest, so that two share a node only when
every eligible node already has one. A placement the cluster cannot meet ends in one line within
``cluster.placement_timeout_s``, never a hang."""

from __future__ import annotations

from collections import Counter

from perfray.errors import UnavailableError


class PlacementError(UnavailableError):
    """The cluster cannot host the actors as asked (exit 3); a run that ends so before any cell leaves nothing."""


def fits(node: dict, cpus: float, resources: dict[str, float]) -> bool:
    """Whether ``node`` (a ``perfray.cluster.nodes.cluster_nodes`` entry) can host an actor of this size at all."""
    have = node["resources"]
    return (cpus <= 0 or have.get("CPU", 0.0) >= cpus) and all(have.get(k, 0.0) >= v for k, v in resources.items())


def plan_load_nodes(nodes: list[dict], search_nodes: list[str], taken: list[str], count: int, cpus: float,
                    resources: dict[str, float], mode: str, search_cpus: float = 0.0) -> list[str]:
    """Node ids for ``count`` new load actors. ``search_nodes``: the node of each search actor; ``taken``: the
    nodes of the load actors already running. Nodes are tried in tiers (separate: nodes without a search actor,
    then the rest; colocate: the search actors' nodes, then the rest; spread: all), and within the first tier
    with room, the node holding the fewest load actors wins."""
    hosts = [n for n in nodes if fits(n, cpus, resources)]
    if not hosts:
        asked = ", ".join([f"{cpus:g} CPU"] * (cpus > 0) + [f"{v:g} {k}" for k, v in resources.items()])
        raise PlacementError(f"no node of the cluster can host a load actor ({asked}): cluster.load_resources and "
                             "cluster.load_actor_cpus must match a node type (ray status lists them)")
    searched = set(search_nodes)
    if mode == "separate":
        tiers = [[n for n in hosts if n["node_id"] not in searched], [n for n in hosts if n["node_id"] in searched]]
    elif mode == "colocate":
        tiers = [[n for n in hosts if n["node_id"] in searched], [n for n in hosts if n["node_id"] not in searched]]
    else:
        tiers = [hosts]
    load, search = Counter(taken), Counter(search_nodes)
    order = {n["node_id"]: i for i, n in enumerate(nodes)}

    def room(node: dict) -> bool:  # what is left once our own actors on it are counted
        used = load[node["node_id"]]
        have = node["resources"]
        left_cpu = have.get("CPU", 0.0) - used * cpus - search[node["node_id"]] * search_cpus
        return (cpus <= 0 or left_cpu >= cpus - 1e-9) and all(
            have.get(k, 0.0) - used * v >= v - 1e-9 for k, v in resources.items())

    chosen = []
    for _ in range(count):
        tier = next((t for t in tiers if any(room(n) for n in t)), None)
        if tier is None:
            raise PlacementError(f"{count} load actors do not fit the nodes that can host them ({len(hosts)} nodes, "
                                 f"{cpus:g} CPU each): lower load.actors or cluster.load_actor_cpus, or add load nodes")
        best = min((n for n in tier if room(n)), key=lambda n: (load[n["node_id"]], order[n["node_id"]]))
        load[best["node_id"]] += 1
        chosen.append(best["node_id"])
    return chosen


def load_actor_options(node_id: str, resources: dict[str, float]) -> dict:
    """Ray options that hold a load actor to ``node_id`` (and ask for its custom resources)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False),
            **({"resources": dict(resources)} if resources else {})}


class SearchPlacement:
    """A placement group of ``n`` bundles (a GPU each, plus ``cpus``), ready within ``timeout_s``; ``nodes``: the
    node id of each bundle, in order."""

    def __init__(self, n: int, cpus: float, how: str, timeout_s: float, name: str) -> None:
        import ray
        from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

        bundle = {"GPU": 1.0, **({"CPU": cpus} if cpus > 0 else {})}
        self.group = placement_group([dict(bundle) for _ in range(n)], strategy=how.upper(), name=name)
        try:
            ray.get(self.group.ready(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(self.group)
            free = ray.available_resources().get("GPU", 0.0)
            cpu = f" and {cpus:g} CPU" if cpus > 0 else ""
            raise PlacementError(
                f"{n} GPU search actors (1 GPU{cpu} each, {how}) could not be placed within "
                f"cluster.placement_timeout_s ({timeout_s:g} s); the cluster has {free:g} GPUs free: lower "
                "search.n_gpus or cluster.gpu_actor_cpus, or add GPU nodes") from None
        bundles = placement_group_table(self.group)["bundles_to_node_id"]
        self.nodes = [bundles[i] for i in range(n)]

    def options(self, bundle: int) -> dict:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(
            self.group, placement_group_bundle_index=bundle, placement_group_capture_child_tasks=False)}

    def remove(self) -> None:
        from ray.util.placement_group import remove_placement_group

        try:
            remove_placement_group(self.group)
        except Exception:  # a cluster going away takes its groups with it
            pass
