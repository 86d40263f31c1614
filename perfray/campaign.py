"""``python -m perfray validate --plan configs/phases/``: the test plan's phases run in order as one campaign — one
directory with a sub-run per phase (each a normal run: rows, summary, manifest, report), ``campaign.json``, and
``validation.md``: go / no-go / inconclusive per phase and overall, judged as targets are (a percentile target is
met only when its whole 95% interval is).

``--scale laptop`` shrinks every phase by one rule (``LAPTOP``, recorded in ``campaign.json``) so that the plan
runs on a 2-core machine; its verdicts are labelled "laptop scale: not the production verdict". ``--resume
DIR/ID`` skips the phases whose sub-run completed and runs the rest; ``--only 1,3`` runs those phases. The stores
every phase needs are checked before the first phase runs."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

from perfray.analysis.capacity_report import LIMITED_BY, goal_rate, sizing_line
from perfray.config import SweepConfig, load_config, resolve_path
from perfray.errors import EXIT_OK, UsageError

# The laptop rule: offered rates x RATE (7,000 QPS -> 200) but at least MIN_QPS (a p99's interval needs its
# samples), every duration x TIME with between MIN_MEASURED_S and MEASURED_S seconds measured per phase of a cell
# (at least a second unmeasured), synthetic data capped, at most N_GPUS (simulated) GPUs, one load actor with at
# most CONCURRENCY clients.
LAPTOP = {"rate": 1 / 35, "min_qps": 100.0, "time": 1 / 20, "min_measured_s": 5.0, "measured_s": 10.0,
          "n": 20_000, "dim": 64, "clusters": 32, "n_queries": 1_000, "n_gpus": 2, "actors": 1, "concurrency": 8}
PHASE_FILE = re.compile(r"^(\d+)-([\w-]+)\.ya?ml$")
CAPACITY_PHASES = (1, 3)  # the plan's capacity questions: the vector tier alone, and the full stack


def plan_phases(plan: Path) -> list[tuple[int, str, Path]]:
    """(number, name, config file) of each phase in ``plan`` (files named ``N-name.yaml``), in order."""
    if not plan.is_dir():
        raise UsageError(f"--plan {plan}: not a directory of phase configs (N-name.yaml)")
    phases = sorted((int(m.group(1)), m.group(2), f) for f in plan.iterdir() if (m := PHASE_FILE.match(f.name)))
    if not phases:
        raise UsageError(f"--plan {plan}: no phase configs in it (files named N-name.yaml, e.g. 1-vector.yaml)")
    return phases


def scale(config: SweepConfig, how: str) -> SweepConfig:
    """The phase as ``--scale`` asks: ``cluster`` as written, ``laptop`` shrunk by ``LAPTOP``."""
    if how == "cluster":
        return config
    doc = config.model_dump(mode="json")
    _shrink_workload(doc["workload"])
    sweep = {}
    for key, values in doc["sweep"].items():
        leaf = resolve_path(key)[-1]
        if leaf == "target_qps":
            values = [_qps(v) for v in values]
        elif leaf == "n_gpus":
            values = sorted({min(v, LAPTOP["n_gpus"]) for v in values})
        elif leaf in ("duration_s", "warmup_s"):
            values = [_seconds(v, leaf == "duration_s") for v in values]
        sweep[key] = list(dict.fromkeys(values))  # a capped axis must not repeat a cell
    doc["sweep"] = sweep
    return SweepConfig.model_validate(doc)


def _qps(value: float) -> float:
    return max(round(value * LAPTOP["rate"], 1), LAPTOP["min_qps"])


def _seconds(value: float, measured: bool) -> float:
    if measured:
        return min(max(value * LAPTOP["time"], LAPTOP["min_measured_s"]), LAPTOP["measured_s"])
    return max(value * LAPTOP["time"], 1.0)


def _shrink_workload(w: dict) -> None:
    data = w["dataset"]
    if data.get("kind") == "synthetic":
        for key in ("n", "dim", "clusters", "n_queries"):
            data[key] = min(data[key], LAPTOP[key])
    else:
        data["limit"] = min(data.get("limit") or LAPTOP["n"], LAPTOP["n"])
    w["search"]["n_gpus"] = min(w["search"]["n_gpus"], LAPTOP["n_gpus"])
    load = w["load"]
    load["target_qps"] = _qps(load["target_qps"])
    load["duration_s"], load["warmup_s"] = _seconds(load["duration_s"], True), _seconds(load["warmup_s"], False)
    if isinstance(load["actors"], int):
        load["actors"] = min(load["actors"], LAPTOP["actors"])
    load["concurrency"] = min(load["concurrency"], LAPTOP["concurrency"])
    for phase in load.get("phases") or []:
        phase["duration_s"] = _seconds(phase["duration_s"], phase.get("measured", True))
        for key in ("qps", "qps_end"):
            if phase.get(key) is not None:
                phase[key] = _qps(phase[key])
    if load.get("writes"):
        load["writes"]["rate"] = max(round(load["writes"]["rate"] * LAPTOP["rate"], 1), 1.0)


def phase_verdict(manifest: dict) -> str:
    """go / no-go / inconclusive from a sub-run's must-pass verdicts (a capacity phase: whether a search's capacity
    at the SLO reached the goal rate); "not run" or "did not finish" otherwise."""
    status = manifest.get("status")
    if status not in ("complete",):
        return "did not finish" if status else "not run"
    if manifest.get("capacity"):
        return capacity_verdict(manifest["capacity"])
    must = [v for v in manifest.get("verdicts", []) if v["must_pass"]]
    if any(not v["passed"] and not v.get("inconclusive") for v in must):
        return "no-go"
    if any(v.get("inconclusive") for v in must):
        return "inconclusive"
    return "go"


def capacity_verdict(capacity: dict) -> str:
    """go when some search (the largest GPU count, say) held the goal rate at the SLOs; no-go when none did and
    every search ended on an SLO that broke; inconclusive when a search was cut short (the generator, max_qps,
    max_steps) or never decided its first rate (``undecided``: too few samples for the interval)."""
    spec, searches = capacity.get("spec") or {}, capacity.get("searches") or []
    rate = goal_rate(spec)
    best = max((s["capacity_qps"] for s in searches if _finite(s.get("capacity_qps"))), default=math.nan)
    if rate and _finite(best) and best >= rate:
        return "go"
    if rate and searches and all(s["limited_by"] in ("slo", "min_qps") for s in searches):
        return "no-go"
    return "inconclusive"


def overall(verdicts: list[str]) -> str:
    if "no-go" in verdicts:
        return "no-go"
    return "go" if verdicts and all(v == "go" for v in verdicts) else "inconclusive"


class Campaign:
    """A campaign directory: ``campaign.json`` (the plan, the scale and its rule, each phase's sub-run and state)
    and a sub-run directory per phase."""

    def __init__(self, root: Path, doc: dict) -> None:
        self.root, self.doc = root, doc

    @classmethod
    def resume(cls, root: Path) -> Campaign:
        path = root / "campaign.json"
        if not path.is_file():
            raise UsageError(f"--resume {root}: not a campaign (no campaign.json)")
        return cls(root, json.loads(path.read_text()))

    def write(self) -> None:
        tmp = self.root / "campaign.json.tmp"
        tmp.write_text(json.dumps(self.doc, indent=1, default=str))
        tmp.replace(self.root / "campaign.json")

    def entry(self, number: int) -> dict:
        return next(p for p in self.doc["phases"] if p["number"] == number)

    def manifest(self, entry: dict) -> dict:
        path = self.root / entry["run_id"] / "manifest.json" if entry.get("run_id") else None
        return json.loads(path.read_text()) if path is not None and path.is_file() else {}

    def done(self, entry: dict) -> bool:
        return self.manifest(entry).get("status") == "complete"


def phase_configs(phases: list[tuple[int, str, Path]], overrides: list[str], how: str,
                  capacity: tuple[int, ...] = ()) -> dict[int, SweepConfig]:
    """Each phase's config at the scale asked; the phases in ``capacity`` as capacity searches at their goals."""
    configs = {number: scale(load_config(path, overrides), how) for number, _, path in phases}
    return {n: as_capacity(c, how) if n in capacity else c for n, c in configs.items()}


def as_capacity(config: SweepConfig, how: str) -> SweepConfig:
    """The phase as a capacity search: its SLOs are its must-pass p99 and failure-rate goals (``slo:``, else its
    targets), its offered rate the goal rate to size the GPUs for (the phase is go when some search held it);
    steps from an eighth of that rate (at least ``LAPTOP["min_qps"]``) up to 8x."""
    from perfray.config import capacity_spec

    slo = config.capacity_slos()
    rate = config.workload.load.target_qps
    # (a first step below LAPTOP's least rate cannot bound a p99 within max_step_s: it would read as broken)
    changes = {"sizing_qps": rate, "min_qps": max(rate / 8, LAPTOP["min_qps"]),
               "max_qps": rate * 8, **({"slo": slo} if slo else {})}
    if how == "laptop":
        changes.update(step_s=3.0, max_step_s=6.0, warmup_s=0.5, resolution=0.05)
    return config.model_copy(update={"capacity": capacity_spec(config.capacity, changes)})


def parse_phases(text: str, option: str) -> tuple[int, ...]:
    """``1,3`` -> (1, 3); ``none`` -> ()."""
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))  # each once, in order
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected phase numbers, e.g. 1,3, or none") from None


_SECRET_KEY = re.compile(r"(?i)password|passwd|secret|token|api_?key")


def kept_overrides(overrides: list[str]) -> list[str]:
    """The ``--set`` arguments a campaign records, so that ``--resume`` runs the rest with them, less any that
    carries a credential (a password's key, a URI with a password): perfray writes none, and a masked one would
    not connect (credentials come from the environment, or ``--set`` again on ``--resume``)."""
    from perfray.redact import redact

    return [o for o in overrides if not _SECRET_KEY.search(o.partition("=")[0]) and redact(o) == o]


def new_doc(plan: Path, how: str, phases: list[tuple[int, str, Path]], capacity: tuple[int, ...] = (),
            overrides: list[str] | None = None) -> dict:
    return {"plan": str(plan), "scale": how, "rule": LAPTOP if how == "laptop" else None, "status": "running",
            "started_unix_s": time.time(), "capacity_phases": list(capacity),
            "overrides": kept_overrides(overrides or []),
            "phases": [{"number": n, "name": name, "config": str(path), "run_id": None, "status": "pending",
                        "exit_code": None, "kind": "capacity" if n in capacity else "sweep"}
                       for n, name, path in phases]}


def validation_md(campaign: Campaign) -> str:
    """The one-page verdict: per phase and overall, go / no-go / inconclusive, with each target's measured value
    and interval; then the stretch goals (the advisory targets)."""
    from perfray.analysis.intervals import measured_text

    laptop = campaign.doc["scale"] == "laptop"
    rows, verdicts, details = [], [], []
    for entry in campaign.doc["phases"]:
        manifest = campaign.manifest(entry)
        verdict = phase_verdict(manifest) if entry["status"] != "skipped" else "not run"
        verdicts.append(verdict)
        must = [v for v in manifest.get("verdicts", []) if v["must_pass"]]
        stretch = [v for v in manifest.get("verdicts", []) if not v["must_pass"]]
        goals = f"{sum(v['passed'] for v in must)}/{len(must)}"
        if manifest.get("capacity"):  # a capacity phase's goal: a search that held the goal rate at the SLOs
            goals = _held(manifest["capacity"])
        rows.append(f"| {entry['number']} | {entry['name']} | **{verdict}** | {goals} | "
                    f"{sum(v['passed'] for v in stretch)}/{len(stretch)} | {entry['run_id'] or '–'} |")
        if manifest.get("verdicts"):
            details += ["", f"### Phase {entry['number']}: {entry['name']} — {verdict}", "",
                        "| cell | phase | metric | goal | measured | |", "|---|---|---|---|---|---|"]
            for v in manifest["verdicts"]:
                mark = "✓" if v["passed"] else ("?" if v.get("inconclusive") else "✗")
                kind = "" if v["must_pass"] else " (stretch)"
                details.append(f"| {cell_name(manifest, v.get('cell'))} | {v.get('phase', '')} | {v['metric']}{kind} | "
                               f"{v['bound']} | "
                               f"{measured_text(v) if _finite(v.get('value')) else 'not measured'} | {mark} |")
    head = ["# Validation", "",
            f"Plan `{campaign.doc['plan']}`, {campaign.doc['scale']} scale: **{overall(verdicts)}**."]
    if laptop:
        head += ["", "Laptop scale: not the production verdict. Every phase was shrunk by one rule (rates × "
                 f"{LAPTOP['rate']:.4g}, at least {LAPTOP['min_qps']:g} QPS; durations × {LAPTOP['time']:g} with at "
                 f"{LAPTOP['min_measured_s']:g}–{LAPTOP['measured_s']:g} s measured; "
                 f"at most {LAPTOP['n']:,} × {LAPTOP['dim']} vectors, {LAPTOP['n_gpus']} simulated GPUs, "
                 f"{LAPTOP['actors']} load actor): the verdicts say whether the stack and the harness work "
                 "end to end, not whether the production cluster meets its SLO."]
    head += ["", "A goal is met only when its whole 95% interval is (inconclusive otherwise); a phase is no-go when "
             "a must-pass goal is missed, inconclusive when one is undecided or the phase did not finish; a capacity phase is "
             "go when a search held its goal rate at the SLOs, no-go when every search ended on an SLO that broke "
             "below it.", "",
             "| phase | name | verdict | goals met | stretch met | sub-run |", "|---|---|---|---|---|---|"]
    return "\n".join(head + rows + capacity_lines(campaign) + evidence(campaign) + details) + "\n"


def evidence(campaign: Campaign) -> list[str]:
    """Burst recovery, sustained stability, speedups and the p99 budget, from the sub-runs that have them."""
    from perfray.analysis.gpu_model import slo_ms
    from perfray.analysis.runs import open_run
    from perfray.analysis.validation import evidence_lines

    subruns, goals = [], {}
    for entry in campaign.doc["phases"]:
        if campaign.manifest(entry).get("status") in ("complete", "partial", "interrupted"):
            run = open_run(campaign.root / entry["run_id"])
            title = f"Phase {entry['number']} ({entry['name']})"
            subruns.append((title, run))
            goals[title] = slo_ms(run.manifest.get("config") or {})
    return evidence_lines(subruns, goals)


def capacity_lines(campaign: Campaign) -> list[str]:
    """Capacity at the SLO per phase that ran as a capacity search, and the sizing answer: the GPUs its goal rate
    needs, N [lo, hi], from the USL fitted to the capacities per GPU count (or why there is none)."""
    lines = []
    for entry in campaign.doc["phases"]:
        manifest = campaign.manifest(entry)
        capacity = manifest.get("capacity")
        if not capacity:
            continue
        spec = capacity.get("spec") or {}
        rate = goal_rate(spec)
        lines += ["", f"### Capacity at the SLO: phase {entry['number']} ({entry['name']})", "",
                  f"SLOs `{'`, `'.join(spec.get('slo', []))}`; goal rate {rate or 0:,.0f} QPS.", "",
                  "| search | GPUs | capacity QPS | broke at QPS | ended because |", "|---|---|---|---|---|"]
        cells = {c["cell"]: c for c in manifest.get("cells", [])}
        for search in capacity.get("searches", []):
            first = cells.get((search.get("steps") or [{}])[0].get("cell"), {})
            gpus = ((first.get("workload") or {}).get("search") or {}).get("n_gpus", "–")
            lines.append(f"| {search['search']} | {gpus} | {_qps_text(search.get('capacity_qps'))} | "
                         f"{_qps_text(search.get('capacity_hi'))} | {LIMITED_BY.get(search['limited_by'], '')} |")
        groups = capacity.get("scaling") or []
        lines += [""] + ([sizing_line(g["usl"], rate) for g in groups] if groups and rate else
                         ["**GPUs for the goal rate:** not estimated: capacity was measured at one GPU count."])
        if rate:
            lines += ["", paper_line(campaign.root / entry["run_id"], rate, groups[0]["usl"] if groups else None)]
    if lines:
        lines = ["", "## Capacity and the GPUs the goals need"] + lines
    return lines


def paper_line(run_dir: Path, rate: float, fit: dict | None) -> str:
    """The on-paper T4 answer beside the measured one (``gpu_model.paper_sizing_line``)."""
    import pyarrow.parquet as pq

    from perfray.analysis.gpu_model import paper_sizing_line
    from perfray.analysis.runs import open_run
    from perfray.analysis.scaling_model import T4

    run = open_run(run_dir)
    bench = run_dir / "microbench.parquet"
    microbench = pq.read_table(bench).to_pylist() if bench.is_file() else []
    return paper_sizing_line(run.manifest, run.summary, microbench, rate, fit, T4)


def cell_name(manifest: dict, cell) -> str:
    """A cell by its number and the values of the sweep's axes, e.g. ``1 (n_gpus=2)``."""
    cells = {c["cell"]: c for c in manifest.get("cells", [])}
    if cell not in cells:
        return "–" if cell in (None, -1) else str(cell)
    parts = []
    for key in (manifest.get("config") or {}).get("sweep") or {}:
        try:
            path = resolve_path(key)
        except ValueError:
            continue
        value = cells[cell].get("workload") or {}
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:  # (an axis the cell's system does not take, e.g. Neo4j's ef on the hybrid)
            parts.append(f"{path[-1]}={value}")
    return f"{cell} ({', '.join(parts)})" if parts else str(cell)


def _held(capacity: dict) -> str:
    spec, searches = capacity.get("spec") or {}, capacity.get("searches") or []
    rate = goal_rate(spec) or math.nan
    held = sum(_finite(s.get("capacity_qps")) and s["capacity_qps"] >= rate for s in searches)
    return f"{held}/{len(searches)} searches held {rate:,.0f} QPS"


def _qps_text(value) -> str:
    return f"{value:,.0f}" if _finite(value) else "–"


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def exit_code(codes: list[int]) -> int:
    """The worst of the phases' exit codes (a failed target 1; unavailable 3; interrupted 130), else 0."""
    for code in (130, 4, 3, 2, 1):
        if code in codes:
            return code
    return EXIT_OK
