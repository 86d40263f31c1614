"""Per-node truth of a cell: what each node that sent load (``load_node``) or served searches (``search_node``) did,
and which node is slow against the others, judged on intervals so that noise reads "inconclusive", not a verdict.

A node is *slower* when the 95% interval of its p50 or its p99 lies wholly above the same interval of the other
nodes' rows (pooled) and its estimate exceeds theirs by more than ``EQUIVALENCE`` (a shift that matters) in each
half of the measured window too (a node that stays slow, not one stall: a pause of one node's process moves a
5-second window's p99 as much as a slow node does), *faster* the other way round; *no difference* when the
medians' intervals lie within ``EQUIVALENCE`` of each other and the p99s' intervals overlap (a tail needs far more
samples to pin down than a median); anything else is *inconclusive*: the rows cannot tell."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from perfray.analysis.intervals import order_statistic_indices
from perfray.analysis.summary import status_masks
from perfray.results.frame import CellFrame

EQUIVALENCE = 1.25  # latencies within 25% of each other count as the same
QUANTILES = (0.5, 0.99)
ROLES = {"search": "search_node", "load": "load_node"}


def node_table(rows: pa.Table | CellFrame, measured_phases: list[str], measured_s: float, usage_by_node: dict | None = None
               ) -> list[dict]:
    """A row per (role, node) of the cell's measured requests: requests, QPS, p50/p99 (with the p99's interval),
    failures, and for search nodes the share of the time their actors spent searching (``usage_by_node``), with
    the slow-node verdict against the other nodes of the same role. Nothing when only one node had a role."""
    frame = CellFrame.of(rows)
    measured = frame.isin("phase", measured_phases)
    status = status_masks(frame, measured)
    failed = status["error"] | status["timeout"] | status["dropped"] | status["lost"]
    timed = status["ok"] | status["timeout"]
    latency_ms = frame.floats("latency_ns")[measured] / 1e6
    intended = frame.ints("intended_ns")[measured]
    late = intended >= (intended.min() + intended.max()) / 2 if intended.size else np.zeros(0, dtype=bool)
    table = []
    for role, column in ROLES.items():
        codes, names = frame.codes(column)
        codes = codes[measured]
        present = [i for i in range(len(names)) if (codes == i).any()]
        if len(present) < 2:
            continue
        for i in sorted(present, key=lambda i: names[i]):
            here = codes == i
            ours, theirs = here & timed, ~here & timed & (codes >= 0)
            mine, rest = latency_ms[ours], latency_ms[theirs]
            row = {"role": role, "node_id": names[i], "requests": int(here.sum()),
                   "qps": float(here.sum() / measured_s) if measured_s > 0 else math.nan,
                   "failures": int((failed & here).sum()),
                   "p50_ms": _pct(mine, 50), "p99_ms": _pct(mine, 99),
                   "busy": (usage_by_node or {}).get(names[i]) if role == "search" else None}
            row.update(judge_node(mine, rest, late[ours], late[theirs]))
            table.append(row)
    return table


def judge_node(mine: np.ndarray, rest: np.ndarray, mine_late: np.ndarray | None = None,
               rest_late: np.ndarray | None = None) -> dict:
    """The verdict of one node's latencies (ms) against the other nodes': the 95% intervals of both p50s and p99s,
    and the call (see the module's docstring). ``mine_late`` / ``rest_late``: which of each side's requests fall in
    the second half of the window (None: the halves are not asked)."""
    ours = {q: _interval(mine, q) for q in QUANTILES}
    theirs = {q: _interval(rest, q) for q in QUANTILES}
    point = {q: (_pct(mine, q * 100), _pct(rest, q * 100)) for q in QUANTILES}
    known = not any(math.isnan(v) for q in QUANTILES for v in (*ours[q], *theirs[q]))
    halves = [] if mine_late is None or rest_late is None else [
        (mine[mine_late == late], rest[rest_late == late]) for late in (False, True)]

    def apart(a: np.ndarray, b: np.ndarray, q: float) -> bool:  # a's estimate over b's by the margin, both defined
        if np.isnan(_interval(a, q)[0]) or np.isnan(_interval(b, q)[0]):
            return False  # too few of a half's requests for this quantile: the half cannot confirm it
        return _pct(a, q * 100) > _pct(b, q * 100) * EQUIVALENCE

    def beyond(a: int, b: int) -> bool:  # side a's interval wholly above side b's, by the margin, in both halves
        sides = (ours, theirs)
        return any(sides[a][q][0] > sides[b][q][1] and point[q][a] > point[q][b] * EQUIVALENCE
                   and all(apart(half[a], half[b], q) for half in halves) for q in QUANTILES)

    median_same = known and ours[0.5][1] <= theirs[0.5][0] * EQUIVALENCE and theirs[0.5][1] <= ours[0.5][0] * EQUIVALENCE
    tails_overlap = known and ours[0.99][0] <= theirs[0.99][1] and theirs[0.99][0] <= ours[0.99][1]
    if not known:
        verdict = "inconclusive"
    elif beyond(0, 1):
        verdict = "slower"
    elif beyond(1, 0):
        verdict = "faster"
    elif median_same and tails_overlap:
        verdict = "no difference"
    else:
        verdict = "inconclusive"
    return {"p99_interval": list(ours[0.99]), "others_p99_interval": list(theirs[0.99]),
            "p50_interval": list(ours[0.5]), "others_p50_interval": list(theirs[0.5]), "verdict": verdict}


def slow_nodes(table: list[dict]) -> int:
    """How many nodes the table calls slower than the others (a summary metric, targetable)."""
    return sum(1 for row in table if row["verdict"] == "slower")


def _interval(values: np.ndarray, q: float) -> tuple[float, float]:
    lo, hi = order_statistic_indices(values.size, q)
    if lo is None or hi is None:
        return math.nan, math.nan  # too few samples for an end: no call can be made
    picked = np.partition(values, [lo, hi])
    return float(picked[lo]), float(picked[hi])


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if values.size else math.nan


def cell_node_table(rows: pa.Table | CellFrame, cell, entry: dict) -> list[dict]:
    """``node_table`` of a cell (``cell``: its Workload; ``entry``: its manifest entry, for placement and usage)."""
    measured = [p for p in cell.load.phase_plan() if p.measured]
    busy: dict[str, list[float]] = {}
    for node, usage in zip((entry.get("placement") or {}).get("search", []), entry.get("gpu_usage") or [],
                           strict=False):
        if usage.get("busy") is not None:
            busy.setdefault(node, []).append(usage["busy"])
    return node_table(rows, [p.name for p in measured], sum(p.duration_s for p in measured),
                      {node: float(np.mean(shares)) for node, shares in busy.items()})


def nodes_section(manifest: dict) -> list[str]:
    """The report's account of the cluster's nodes: nodes lost (when, what they held, what it cost, recovery), each
    cell's per-node table with its slow-node calls, and a warning when a load node's clock is too uncertain for
    the timeline."""
    lines: list[str] = []
    short = {n["node_id"]: f"{n['node_id'][:8]} ({n.get('hostname') or n.get('ip') or '?'})"
             for n in manifest.get("nodes", [])}
    lost = [e for e in manifest.get("events", []) if e.get("event") == "node_lost"]
    tables = [(c["cell"], c["nodes"]) for c in manifest.get("cells", []) if c.get("nodes")]
    if not lost and not tables and len(_actors_by_node(manifest)) < 2:
        return lines
    lines += ["", "## Nodes", ""]
    lines += _placement_table(manifest, short)
    for e in lost:
        cell = manifest["cells"][e["cell"]]
        at_s = (e["at_unix_ns"] - cell.get("start_unix_ns", e["at_unix_ns"])) / 1e9
        recovery = e.get("recovery_s")
        lines.append(f"- **Node {short.get(e['node_id'], e['node_id'][:8])} lost** in cell {e['cell']}, {at_s:.1f} s "
                     f"into it: load actors {e['load_actors'] or '–'}, search actors {e['search_actors'] or '–'}; "
                     f"{cell.get('lost_rows', 0):,} requests lost; recovery "
                     + (f"{recovery:.1f} s" if recovery is not None and math.isfinite(recovery) else "not within the cell"))
    if lost:
        lines.append("")
    if tables:
        lines += [f"A node is *slower* when the 95% interval of its p50 or p99 lies above the other nodes' and its "
                  f"estimate is over {EQUIVALENCE:g}x theirs, in each half of the window too; *no difference* when "
                  f"the p50 intervals lie within {EQUIVALENCE:g}x of each other and the p99 intervals overlap; "
                  "otherwise *inconclusive*.", "",
                  "| cell | role | node | requests | QPS | p50 ms | p99 ms (95% CI) | others' p99 CI | failures | "
                  "search busy | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for cell, table in tables:
            for r in table:
                lo, hi = r["p99_interval"]
                olo, ohi = r["others_p99_interval"]
                lines.append(f"| {cell} | {r['role']} | {short.get(r['node_id'], r['node_id'][:8])} | {r['requests']:,} | "
                             f"{r['qps']:,.0f} | {r['p50_ms']:.3g} | {r['p99_ms']:.3g} ({lo:.3g}–{hi:.3g}) | "
                             f"{olo:.3g}–{ohi:.3g} | {r['failures']:,} | "
                             f"{'–' if r.get('busy') is None else format(r['busy'], '.0%')} | {r['verdict']} |")
    lines += _clock_warning(manifest)
    return lines


def _actors_by_node(manifest: dict) -> dict[str, dict[str, set[int]]]:
    """node id -> {"search": indices, "load": indices} of the actors that ran there in any cell."""
    where: dict[str, dict[str, set[int]]] = {}
    for cell in manifest.get("cells", []):
        for role, nodes in (cell.get("placement") or {}).items():
            for index, node in enumerate(nodes):
                if node:
                    where.setdefault(node, {"search": set(), "load": set()})[role].add(index)
    return where


def _placement_table(manifest: dict, short: dict[str, str]) -> list[str]:
    """Where every actor ran: a row per node that hosted one, with the node's facts and, if lost, when."""
    where = _actors_by_node(manifest)
    if not where:
        return []
    facts = {n["node_id"]: n for n in manifest.get("nodes", [])}
    lines = ["| node | IP | CPUs | GPUs | search actors | load actors | lost |", "|---|---|---|---|---|---|---|"]
    for node, held in sorted(where.items(), key=lambda kv: (min(kv[1]["search"], default=1e9), min(kv[1]["load"],
                                                                                                   default=1e9))):
        f = facts.get(node, {})
        lost = f.get("lost_unix_ns")
        cpus, gpus = (f"{f[k]:g}" if f.get(k) is not None else "–" for k in ("cpus", "gpus"))
        lines.append(f"| {short.get(node, node[:8])} | {f.get('ip') or '–'} | {cpus} | {gpus} | "
                     f"{_indices(held['search'])} | {_indices(held['load'])} | {'yes' if lost else ''} |")
    return lines + [""]


def _indices(values: set[int]) -> str:
    return ", ".join(str(v) for v in sorted(values)) or "–"


def _clock_warning(manifest: dict) -> list[str]:
    """Rows from several hosts share one timeline through each load node's measured clock offset; a bound wider
    than a tenth of the shortest phase can put a row in the wrong phase."""
    bounds = [a["bound_ns"] for a in manifest.get("load_actors", []) if a.get("bound_ns") is not None]
    phases = [p.get("duration_s") for c in manifest.get("cells", [])
              for p in ((c.get("workload") or {}).get("load", {}).get("phases") or [])]
    shortest = min([p for p in phases if p] + [c["workload"]["load"]["duration_s"] for c in manifest.get("cells", [])
                                               if c.get("workload")], default=None)
    if not bounds or shortest is None or max(bounds) / 1e9 <= shortest / 10:
        return []
    return ["", f"> **Clocks.** A load node's clock offset is known only to ±{max(bounds) / 1e6:.1f} ms, more than a "
            f"tenth of the shortest phase ({shortest:g} s): rows near a phase boundary may be drawn in the wrong phase."]
