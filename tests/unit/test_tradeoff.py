"""Search parameters as a sweep axis: which systems take them, the grid that sweeps a baseline's ``ef`` beside a
system without one, speedups read at matched recall, and the recall trade-off's Pareto front and operating
points."""

import math

import pytest

from perfray.analysis.report import _speedup_recall
from perfray.analysis.summary import add_baseline
from perfray.analysis.tradeoff import tradeoff_curves, tradeoff_section
from perfray.config import load_config, search_params_of
from perfray.errors import UsageError


def test_a_search_parameter_on_a_system_that_does_not_take_it_is_one_line():
    with pytest.raises(UsageError, match=r"search.params.ef: system 'gpu_search' does not take it \(systems that "
                                         r"do: milvus, neo4j_baseline, pgvector\)"):
        load_config(None, ["search.params.ef=40"])
    with pytest.raises(UsageError, match="search.params.m"):
        load_config(None, ["system=pgvector", "search.params.m=4"])
    assert load_config(None, ["system=pgvector", "search.params.ef=40"]).cells()[0].search.params == {"ef": 40}
    hybrid = load_config(None, ["system=hybrid", "hybrid.vector=milvus", "search.params.nprobe=8"]).cells()[0]
    assert search_params_of(hybrid) == {"ef", "nprobe"}  # the hybrid's are its vector stage's


def test_a_swept_parameter_applies_to_the_systems_that_take_it_and_the_others_run_once():
    config = load_config(None, ["sweep={system: [hybrid, neo4j_baseline], search.params.ef: [10, 40, 160]}"])
    cells = [(c.system, c.search.params) for c in config.cells()]
    assert cells == [("hybrid", {}), ("neo4j_baseline", {"ef": 10}), ("neo4j_baseline", {"ef": 40}),
                     ("neo4j_baseline", {"ef": 160})]
    with pytest.raises(UsageError, match="search.params.efs"):  # a name nobody takes is still an error
        load_config(None, ["sweep={system: [pgvector], search.params.efs: [1]}"]).cells()


def _row(cell, system, params, recall, p99, **more):
    return {"cell": cell, "system_name": system, "system": system, "search_params": params, "recall_mean": recall,
            "p50_ms": p99 / 2, "p99_ms": p99, "achieved_qps": 100.0, "k": 10, "n_gpus": 1, "target_qps": 100.0,
            **more}


def test_a_speedup_is_read_against_the_baseline_at_matched_recall():
    summary = [_row(0, "hybrid", "", 1.0, 4.0),
               _row(1, "neo4j_baseline", "ef=10", 0.90, 5.0),
               _row(2, "neo4j_baseline", "ef=40", 0.99, 8.0),
               _row(3, "neo4j_baseline", "ef=160", 1.0, 20.0),
               _row(4, "pgvector", "", 0.5, 1.0)]
    add_baseline(summary, ["a", "a", "a", "a", "b"], "neo4j_baseline")
    hybrid = summary[0]  # ef=40 and ef=160 reach 1.0 - 0.01; ef=40 is the faster: the baseline at its best
    assert hybrid["baseline_search_params"] == "ef=40" and hybrid["speedup_p99_vs_baseline"] == 2.0
    assert hybrid["baseline_recall"] == 0.99 and hybrid["recall_matched"] is True
    assert summary[1]["speedup_p99_vs_baseline"] == 1.0  # a baseline cell against itself
    assert math.isnan(summary[4]["speedup_p99_vs_baseline"]) and summary[4]["recall_matched"] is None
    assert "⚠" not in _speedup_recall(hybrid) and "at ef=40" in _speedup_recall(hybrid)

    unmatched = [_row(0, "hybrid", "", 1.0, 4.0), _row(1, "neo4j_baseline", "ef=10", 0.90, 5.0),
                 _row(2, "neo4j_baseline", "ef=20", 0.95, 6.0)]
    add_baseline(unmatched, ["a"] * 3, "neo4j_baseline")
    assert unmatched[0]["baseline_search_params"] == "ef=20"  # none reaches 0.99: the closest recall
    assert unmatched[0]["recall_matched"] is False and unmatched[0]["recall_gap_vs_baseline"] == pytest.approx(0.05)
    assert "⚠ recall 1.000 vs 0.950 at ef=20" in _speedup_recall(unmatched[0])


def test_the_trade_off_marks_the_pareto_front_and_the_fastest_setting_per_recall():
    summary = [_row(0, "pgvector", "ef=1", 0.10, 1.0), _row(1, "pgvector", "ef=8", 0.80, 3.0),
               _row(2, "pgvector", "ef=16", 0.78, 3.5),  # less recall and slower than ef=8: dominated
               _row(3, "pgvector", "ef=40", 0.93, 4.0), _row(4, "pgvector", "ef=100", 0.97, 7.0),
               _row(5, "pgvector", "ef=400", 0.97, 9.0),  # same recall, slower: dominated
               _row(6, "instant", "", 1.0, 0.1)]  # not swept: no curve
    (curve,) = tradeoff_curves(summary, {})
    points = {p["params"]: p for p in curve["points"]}
    assert curve["axis"] == "p99_ms" and list(points) == ["ef=1", "ef=16", "ef=8", "ef=40", "ef=100", "ef=400"]
    assert [p for p in points if points[p]["pareto"]] == ["ef=1", "ef=8", "ef=40", "ef=100"]
    assert points["ef=40"]["operating"] == [0.90] and points["ef=100"]["operating"] == [0.95]
    text = "\n".join(tradeoff_section([curve], None))
    assert "| ef=40 | 0.9300 | 2.000 | 4.000 | 3 | ✓ | recall ≥ 0.90 |" in text

    capacity = {"capacity": {"searches": [{"search": 0, "capacity_qps": 900.0}, {"search": 1, "capacity_qps": 400.0},
                                          {"search": 2, "capacity_qps": 500.0}]}}
    steps = [_row(0, "pgvector", "ef=10", 0.85, 2.0, capacity_search=0),
             _row(1, "pgvector", "ef=40", 0.96, 2.0, capacity_search=1),
             _row(2, "pgvector", "ef=80", 0.97, 2.0, capacity_search=2)]
    (curve,) = tradeoff_curves(steps, capacity)
    assert curve["axis"] == "capacity_qps"
    assert [(p["params"], p["value"], p["pareto"], p["operating"]) for p in curve["points"]] == [
        ("ef=10", 900.0, True, []), ("ef=40", 400.0, False, []), ("ef=80", 500.0, True, [0.90, 0.95])]
