"""The campaign's pure parts: the plan's phases, the laptop rule, and go / no-go / inconclusive."""

import json
from pathlib import Path

import pytest

from perfray.campaign import LAPTOP, overall, phase_verdict, plan_phases, scale
from perfray.config import load_config
from perfray.errors import UsageError

PLAN = Path(__file__).resolve().parents[2] / "configs" / "phases"


def test_the_plan_is_its_numbered_phase_files_in_order(tmp_path):
    assert [(n, name) for n, name, _ in plan_phases(PLAN)] == [
        (1, "vector-isolation"), (2, "hybrid-vector-graph"), (3, "full-stack"), (4, "sustained"), (5, "burst"),
        (6, "neo4j-baseline"), (7, "production-readiness")]
    with pytest.raises(UsageError, match="no phase configs"):
        plan_phases(tmp_path)
    with pytest.raises(UsageError, match="not a directory"):
        plan_phases(tmp_path / "nope")


def test_the_laptop_rule_shrinks_every_phase_the_same_way():
    one = scale(load_config(PLAN / "1-vector-isolation.yaml"), "laptop")
    assert [c.search.n_gpus for c in one.cells()] == [1, 2]  # 1, 2, 4, 8 capped at 2, each once
    cell = one.cells()[0]
    assert cell.offered_qps == pytest.approx(7000 * LAPTOP["rate"]) and cell.load.actors == 1
    two = scale(load_config(PLAN / "2-hybrid-vector-graph.yaml"), "laptop").cells()[0]
    assert two.offered_qps == LAPTOP["min_qps"]  # 1,000 x 1/35 = 29 QPS: too few samples for a p99
    assert cell.dataset.n == 20_000 and cell.dataset.dim == 64 and cell.load.duration_s == 5.0  # 60 s x 1/20, at least 5
    four = scale(load_config(PLAN / "4-sustained.yaml"), "laptop").cells()[0]
    assert four.load.duration_s == LAPTOP["measured_s"] and four.load.warmup_s == 1.5  # 600 s -> 10; 30 -> 1.5
    seven = scale(load_config(PLAN / "7-production-readiness.yaml"), "laptop").cells()[0]
    assert [(p.name, p.duration_s) for p in seven.load.phase_plan()] == [
        ("warmup", 1.5), ("sustained", 10.0), ("stretch", 6.0), ("burst", 5.0), ("recovery", 5.0)]
    as_written = load_config(PLAN / "4-sustained.yaml")
    assert scale(as_written, "cluster") is as_written


def _manifest(status="complete", *verdicts):
    return {"status": status, "verdicts": [{"metric": "p99_ms", "must_pass": m, "passed": p, "inconclusive": i}
                                           for m, p, i in verdicts]}


def test_go_no_go_and_inconclusive():
    assert phase_verdict(_manifest("complete", (True, True, False), (False, False, False))) == "go"  # stretch missed
    assert phase_verdict(_manifest("complete", (True, False, True))) == "inconclusive"
    assert phase_verdict(_manifest("complete", (True, False, True), (True, False, False))) == "no-go"
    assert phase_verdict(_manifest("interrupted", (True, True, False))) == "did not finish"
    assert phase_verdict({}) == "not run"
    assert overall(["go", "go"]) == "go" and overall(["go", "inconclusive"]) == "inconclusive"
    assert overall(["go", "no-go", "inconclusive"]) == "no-go" and overall(["go", "not run"]) == "inconclusive"


def test_capacity_phases_search_at_their_goals_and_size_for_their_rate():
    from perfray.campaign import as_capacity, parse_phases

    phase1 = scale(load_config(Path("configs/phases/1-vector-isolation.yaml"), []), "laptop")
    searched = as_capacity(phase1, "laptop")
    spec = searched.capacity
    assert spec.slo == ("p99_ms<=10", "failure_rate<=0.01")  # the phase's must-pass goals, not its stretch ones
    assert spec.target_qps is None and spec.sizing_qps == phase1.workload.load.target_qps == 200
    assert spec.min_qps == 100 and spec.max_qps == 1600 and spec.step_s == 3
    assert [c.search.n_gpus for c in searched.cells()] == [1, 2]  # a search per GPU count
    cluster = as_capacity(load_config(Path("configs/phases/1-vector-isolation.yaml"), []), "cluster").capacity
    assert cluster.sizing_qps == 7000 and cluster.step_s == 5
    assert parse_phases("1,3", "--capacity") == (1, 3) and parse_phases("none", "--capacity") == ()
    assert parse_phases("3,1,3", "--capacity") == (3, 1)  # each once, as given
    with pytest.raises(UsageError, match="--capacity 'x'"):
        parse_phases("x", "--capacity")


def test_a_capacity_phase_is_go_when_a_search_held_the_goal_rate():
    from perfray.campaign import capacity_verdict

    spec = {"sizing_qps": 200}
    held = {"spec": spec, "searches": [{"capacity_qps": 150, "limited_by": "slo"},
                                        {"capacity_qps": 310, "limited_by": "slo"}]}
    short = {"spec": spec, "searches": [{"capacity_qps": 150, "limited_by": "slo"},
                                         {"capacity_qps": 180, "limited_by": "slo"}]}
    cut = {"spec": spec, "searches": [{"capacity_qps": 150, "limited_by": "generator"}]}
    assert [capacity_verdict(c) for c in (held, short, cut)] == ["go", "no-go", "inconclusive"]
    # a search whose first rate broke an SLO is a no-go; one whose first rate was never decided (its interval still
    # straddled the bound in the longest step: too few samples) shows nothing either way
    broke = {"spec": spec, "searches": [{"capacity_qps": float("nan"), "limited_by": "min_qps"}]}
    undecided = {"spec": spec, "searches": [{"capacity_qps": float("nan"), "limited_by": "undecided"}]}
    assert [capacity_verdict(c) for c in (broke, undecided)] == ["no-go", "inconclusive"]
    assert phase_verdict({"status": "complete", "capacity": short, "verdicts": []}) == "no-go"


def test_cells_are_named_by_their_sweep_values():
    from perfray.campaign import cell_name

    manifest = {"config": {"sweep": {"search.n_gpus": [1, 2], "hybrid.cache": [False, True]}},
                "cells": [{"cell": 3, "workload": {"search": {"n_gpus": 2}, "hybrid": {"cache": True}}}]}
    assert cell_name(manifest, 3) == "3 (n_gpus=2, cache=True)"
    assert cell_name(manifest, -1) == "–" and cell_name({"cells": [{"cell": 0}]}, 0) == "0"
    six = {"config": {"sweep": {"system": ["hybrid", "neo4j_baseline"], "search.params.ef": [20, 80]}},
           "cells": [{"cell": 0, "workload": {"system": "hybrid", "search": {"params": {}}}},
                     {"cell": 1, "workload": {"system": "neo4j_baseline", "search": {"params": {"ef": 20}}}}]}
    assert cell_name(six, 0) == "0 (system=hybrid)" and cell_name(six, 1) == "1 (system=neo4j_baseline, ef=20)"


def test_a_campaign_records_its_set_values_for_resume_without_credentials():
    from perfray.campaign import new_doc

    doc = new_doc(Path("configs/phases"), "laptop", [], (), [
        "load.target_qps=50", "stores.postgres.password=hunter2", "stores.neo4j.uri=bolt://neo:s3cret@127.0.0.1:7687",
        "stores.milvus.token=abc", "stores.neo4j.user=neo"])
    assert doc["overrides"] == ["load.target_qps=50", "stores.neo4j.user=neo"]  # (a masked URI would not connect)
    assert "hunter2" not in json.dumps(doc) and "s3cret" not in json.dumps(doc) and "abc" not in json.dumps(doc)
