"""Where load actors go (perfray.cluster.placement.plan_load_nodes), on node lists shaped like Ray's; the same
plans on real raylets: tests/integration/test_multinode.py."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perfray.cluster.placement import PlacementError, plan_load_nodes


def node(name: str, cpus: float = 2, gpus: float = 0, **custom) -> dict:
    return {"node_id": name, "cpus": cpus, "gpus": gpus,
            "resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {}), **custom}}


CLUSTER = [node("head", cpus=0), node("g1", 1, 1), node("g2", 1, 1), node("l1", 2, loadgen=2), node("l2", 2, loadgen=2)]
SEARCH = ["g1", "g2"]


def plan(count, mode="separate", taken=(), cpus=0.5, resources=None, nodes=CLUSTER, search=SEARCH):
    return plan_load_nodes(nodes, list(search), list(taken), count, cpus, resources or {}, mode)


def test_separate_keeps_load_off_search_nodes_one_per_node_first():
    assert plan(2) == ["l1", "l2"]
    assert plan(4) == ["l1", "l2", "l1", "l2"]
    assert plan(1, taken=["l1"]) == ["l2"]  # the actors already running count


def test_separate_spills_onto_search_nodes_only_when_the_others_are_full():
    assert plan(9) == ["l1", "l2"] * 4 + ["g1"]  # 2 CPUs / 0.5 = 4 each on l1, l2


def test_separate_without_free_nodes_spreads_over_the_search_nodes():
    assert plan(2, nodes=CLUSTER[:3]) == ["g1", "g2"]


def test_spread_and_colocate():
    assert sorted(plan(4, "spread")) == ["g1", "g2", "l1", "l2"]
    assert plan(2, "colocate") == ["g1", "g2"]
    assert sorted(plan(4, "colocate", search=[])) == ["g1", "g2", "l1", "l2"]  # no search actors: spread


def test_custom_resources_pick_the_node_group_and_count_against_it():
    assert plan(4, "spread", resources={"loadgen": 1}) == ["l1", "l2", "l1", "l2"]
    with pytest.raises(PlacementError, match="5 load actors do not fit"):
        plan(5, "spread", resources={"loadgen": 1})
    with pytest.raises(PlacementError, match=r"no node of the cluster can host a load actor \(0.5 CPU, 1 gpu_box\)"):
        plan(1, resources={"gpu_box": 1})


def test_zero_cpu_actors_fit_anywhere_but_the_cpu_less_head_stays_out_of_cpu_plans():
    assert "head" not in plan(6, "spread")
    assert sorted(plan(5, "spread", cpus=0)) == ["g1", "g2", "head", "l1", "l2"]


@given(st.lists(st.integers(0, 4), min_size=1, max_size=8), st.integers(1, 12),
       st.sampled_from(["separate", "spread", "colocate"]))
def test_no_two_actors_share_a_node_while_an_eligible_node_has_none(cpus_per_node, count, mode):
    nodes = [node(f"n{i}", cpus) for i, cpus in enumerate(cpus_per_node)]
    room = sum(int(n["cpus"] / 0.5) for n in nodes)
    if room < count:
        with pytest.raises(PlacementError):
            plan(count, mode, nodes=nodes, search=["n0"])
        return
    chosen = plan(count, mode, nodes=nodes, search=["n0"])
    counts = {n["node_id"]: chosen.count(n["node_id"]) for n in nodes}
    assert all(counts[n["node_id"]] * 0.5 <= n["cpus"] for n in nodes)  # never beyond a node's CPUs
    capacity = {n["node_id"]: int(n["cpus"] / 0.5) for n in nodes}
    if mode == "spread":  # balanced: a node gets another actor only while every node with room has as many
        most = max(counts.values())
        assert all(counts[h] >= most - 1 or counts[h] == capacity[h] for h in counts)
