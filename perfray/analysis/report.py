"""``perfray report RUN_DIR``: report.md + PNG figures beside it, and the verdict table.

Exit 0 when every must-pass target is met, 1 when one is not (like a failing test), 2 on bad input, 3 when the run
did not finish (its verdicts cover only the cells that ran: ``unfinished``)."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq

from perfray.analysis import figures
from perfray.analysis.capacity_report import capacity_curve, capacity_section, capacity_verdicts
from perfray.analysis.colocation import colocation_section
from perfray.analysis.gpu_model import capacity_model_lines, model_lines, split_section
from perfray.analysis.intervals import measured_text
from perfray.analysis.nodes import nodes_section
from perfray.analysis.quality import generator_late_ms, quality_section
from perfray.analysis.runs import Run, open_run
from perfray.analysis.scaling_model import T4, fit_usl
from perfray.analysis.slo import slo_section
from perfray.analysis.summary import (
    RECALL_MATCH,
    SATURATED,
    check_targets,
    saturated,
    scaling_curves,
    slo_verdicts,
)
from perfray.analysis.tradeoff import tradeoff_curves, tradeoff_figure, tradeoff_section
from perfray.schema import GENERATOR_LAG_LIMIT_MS, GENERATOR_SHARE_LIMIT
from perfray.targets_config import SloSpec, TargetSpec


def _pct(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2%}"


def _pct0(value) -> str:
    return f"{value:.0%}" if _finite(value) else "–"


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def verdicts(run: Run) -> list[dict]:
    """The run's verdicts, recomputed from its rows' summaries (a capacity run: one per search)."""
    if run.manifest.get("capacity"):
        return capacity_verdicts(run.manifest)
    config = run.manifest.get("config", {})
    targets = [TargetSpec.model_validate(t) for t in config.get("targets", [])]
    slos = [SloSpec.model_validate(s) for s in config.get("slo", [])]
    return check_targets(run.summary, targets, run.phases) + slo_verdicts(run.summary, slos, run.phases)


def unfinished(run: Run) -> str | None:
    """One line when the run did not finish (not started, failed, interrupted, or its driver vanished while
    running): its verdicts then judge only the cells that ran. None for a finished run."""
    m = run.manifest
    status = m.get("status")
    if status == "complete":
        return None
    cells = m.get("cells", [])
    ran = sum(1 for c in cells if c.get("status") in ("complete", "degraded", "partial", "interrupted"))
    error = f" ({m['error']})" if m.get("error") else ""
    if not ran:
        return f"the run is {status}{error}: nothing was measured"
    return f"the run is {status}{error}: {ran} of {len(cells)} cells ran; the others were never judged"


def render(run: Run, figure_paths: list[Path]) -> str:
    m = run.manifest
    gpus = m.get("gpus", {})
    simulated = gpus.get("simulated")
    lines = [f"# perfray report: {m.get('run_id', run.path.name)}", ""]
    if (why := unfinished(run)) is not None:
        lines += [f"> **Not finished.** {why[0].upper()}{why[1:]}. What follows covers only what was recorded.", ""]
    if simulated:
        lines += ["> **Simulated GPUs.** This run used Ray logical GPUs served by a CPU backend: its latency "
                  "and scaling figures describe this machine, not GPU hardware.", ""]
    lines += [
        "| | |", "|---|---|",
        f"| status | {m.get('status')} |",
        f"| config | {m.get('name')} ({len(m.get('cells', []))} cells) |",
        f"| GPUs | {', '.join(f'{n} x {d}' for d, n in (gpus.get('models') or {}).items()) or '–'}"
        f"{' (simulated)' if simulated else ''} |",
        f"| Ray | {'embedded' if m.get('ray', {}).get('embedded') else m.get('ray', {}).get('address')}, "
        f"resources {m.get('ray', {}).get('resources', {}).get('CPU', '–')} CPU / "
        f"{m.get('ray', {}).get('resources', {}).get('GPU', '–')} GPU |",
        f"| host | {m.get('host', {}).get('hostname')} ({m.get('host', {}).get('cpus')} CPUs) |",
        "| versions | " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()) + " |",
        f"| git commit | {m.get('git_commit') or '–'} |",
        f"| request rows | {run.n_rows:,} |",
        "",
    ]
    if m.get("failures"):
        lines += ["**Failures during the run:** " + "; ".join(
            f"{f['role']} actor {f['actor']} in cell {f['cell']} ({f['error']}"
            + (f", node {f['node_id'][:8]})" if f.get("node_id") else ")") for f in m["failures"]), ""]
    judged = verdicts(run)
    checks = [v for v in judged if not v.get("slo")]
    lines += ["## Targets", ""]
    if checks:
        lines += ["| cell | metric | want | measured | | must pass |", "|---|---|---|---|---|---|"]
        lines += [f"| {verdict_where(v)} | {v['metric']} | {v['bound']} | "
                  f"{measured_text(v)} | "
                  f"{'✓' if v['passed'] else '?' if v.get('inconclusive') else '✗'} | "
                  f"{'yes' if v['must_pass'] else 'no'} |" for v in checks]
        lines += ["", "Percentile targets are judged on their 95% confidence interval (order statistics, no "
                  "assumption about the distribution): met when the whole interval meets the bound, `?` "
                  "(inconclusive, counted as not met) when it straddles it."]
    elif m.get("config", {}).get("targets") and not run.summary:
        lines += [f"{len(m['config']['targets'])} targets configured; none judged: no cell finished."]
    else:
        lines += ["No targets configured."]
    lines += slo_section(judged)
    lines += ["", "## Cells", "",
              "| cell | GPUs | topology | system / backend | target QPS | achieved QPS | p50 ms | p99 ms | p99.9 ms | "
              "max ms | failed | errors | recall | lag p99 ms | scaling eff. | GPU search busy | GPU util (NVML) | status |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in run.summary:
        lines.append(
            f"| {r['cell']} | {r['n_gpus']}{' (sim)' if r.get('simulated') else ''} | {r.get('topology')} | "
            f"{_system_or_backend(r)} | {_fmt(r['target_qps'])} | {_fmt(r['achieved_qps'])} | {_fmt(r['p50_ms'])} | "
            f"{_fmt(r['p99_ms'])} | {_fmt(r['p999_ms'])} | {_fmt(r['max_ms'])} | {_pct(r.get('failure_rate'))} | "
            f"{r['error_rate']:.2%} | {_fmt(r['recall_mean'], 4)} | {_fmt(r['schedule_lag_p99_ms'])} | "
            f"{_fmt(r.get('scaling_efficiency'))} | {_pct0(r.get('gpu_busy_mean'))} | "
            f"{_fmt(r.get('gpu_util_mean'))}{'%' if _finite(r.get('gpu_util_mean')) else ''} | {r.get('status')} |")
    lines += capacity_section(run.manifest, _figure(figure_paths, "capacity_curve"))
    lines += capacity_model_lines(run.manifest, run.summary, _microbench(run), T4)
    lines += split_section(run.summary)
    lines += quality_section(run.summary)
    lines += degraded_section(run)
    lines += nodes_section(run.manifest)
    lines += generator_section(run)
    lines += colocation_section(run.manifest)
    lines += phase_section(run)
    lines += filter_section(run)
    lines += writes_section(run)
    lines += tradeoff_section(tradeoff_curves(run.summary, m), _figure(figure_paths, "recall_tradeoff"))
    lines += index_build_section(run)
    lines += systems_section(run)
    lines += scaling_section(run)
    lines += ["", "Latency is measured from each request's intended send time (open loop); percentiles are exact, "
              "over the raw rows of measured phases (ok and timeout rows).", "", "## Figures", ""]
    lines += [f"![{p.stem}]({p.name})" for p in figure_paths if p.stem not in ("capacity_curve", "recall_tradeoff")]
    return "\n".join(lines) + "\n"


def _figure(paths: list[Path], stem: str) -> Path | None:
    return next((p for p in paths if p.stem == stem), None)


def _speedup_recall(r: dict) -> str:
    """The recalls behind a speedup: a speedup between two different answers is flagged."""
    if not (_finite(r.get("baseline_recall")) and _finite(r.get("recall_mean"))) or \
            r.get("system_name") == r.get("baseline_name"):
        return ""
    at = f" at {r['baseline_search_params']}" if r.get("baseline_search_params") else ""
    note = f"recall {r['recall_mean']:.3f} vs {r['baseline_recall']:.3f}{at}"
    return f" ({note})" if r.get("recall_matched") else f" (⚠ {note}: recalls differ by more than {RECALL_MATCH:g})"


def index_build_section(run: Run) -> list[str]:
    """What building each store's index cost, as the store reported it when it loaded (or had loaded) it."""
    builds = [(e["cell"], e["system"]) for e in run.manifest.get("cells", [])
              if (e.get("system") or {}).get("load", {}).get("build_s") is not None]
    if not builds:
        return []
    lines = ["", "## Index build", "", "| cell | system | index | items | build s | index size MB | built by |",
             "|---|---|---|---|---|---|---|"]
    for cell, system in builds:
        load = system["load"]
        size = load.get("index_bytes")
        lines.append(f"| {cell} | {system.get('label')} | {load.get('index', '–')} | {load.get('items', 0):,} | "
                     f"{load['build_s']:.2f} | {_fmt(size / 1e6) if size is not None else '–'} | "
                     f"{'this run' if load.get('loaded') else 'an earlier run (same data and index)'} |")
    return lines


def verdict_where(v: dict) -> str:
    """Where a verdict was checked: its cell (and phase), or its capacity search."""
    if "search" in v:
        return f"search {v['search']}"
    return f"{v['cell']}{' (' + v['phase'] + ')' if v.get('phase') else ''}"


def degraded_section(run: Run) -> list[str]:
    """Cells that lost an actor while running: what failed, and how many scheduled requests it never sent."""
    cells = [r for r in run.summary if r.get("status") == "degraded"]
    if not cells:
        return []
    failures = run.manifest.get("failures", [])
    lines = ["", "## Degraded cells", "",
             "An actor died during these cells. Every scheduled request is still a row: those its load actor never "
             "reported are `lost` and count as failures, like errors, timeouts and drops.", "",
             "| cell | actors that failed | lost requests | failure rate |", "|---|---|---|---|"]
    for r in cells:
        dead = ", ".join(f"{f['role']} {f['actor']} ({f['error']})" for f in failures if f.get("cell") == r["cell"])
        lines.append(f"| {r['cell']} | {dead or '–'} | {r.get('lost', 0):,} | {_pct(r.get('failure_rate'))} |")
    return lines


def generator_section(run: Run) -> list[str]:
    """Cells the generator, not the system, may have limited: their load actors fell behind their schedule, or
    each was offered more than half of what its client path holds on this host (``perfray calibrate``)."""
    limited = []
    for r in run.summary:
        late = _finite(generator_late_ms(r)) and generator_late_ms(r) > GENERATOR_LAG_LIMIT_MS
        share = generator_share(r)
        if late or (share is not None and share > GENERATOR_SHARE_LIMIT):
            limited.append((r, share))
    if not limited:
        return []
    lines = ["", "## Generator-limited cells", "",
             f"The generator, not the system, limited these cells (or may have): their load actors sent requests more "
             f"than {GENERATOR_LAG_LIMIT_MS:g} ms late (p99 of their pacers' lateness; in runs without it, of schedule lag "
             "beyond the micro-batch window), or each was "
             f"offered more than {GENERATOR_SHARE_LIMIT:.0%} of the highest rate its client path holds on this host "
             "(`python -m perfray calibrate`), so part of each latency may be perfray's own queueing. Add load actors "
             "(`load.actors`, or `auto`) or lower the rate per actor.", "",
             "| cell | offered QPS | load actors | client path | per actor / ceiling | generator late p99 ms |",
             "|---|---|---|---|---|---|"]
    for r, share in limited:
        ceiling = f"{share:.0%} of {r['generator_ceiling_qps']:,.0f}/s" if share is not None else "not calibrated"
        lines.append(f"| {r['cell']} | {_fmt(r.get('offered_qps'))} | {r.get('load_actors', '–')} | "
                     f"{r.get('client_path', '–')} | {ceiling} | {_fmt(generator_late_ms(r))} |")
    return lines


def generator_share(row: dict) -> float | None:
    """The rate each load actor was offered, as a share of its client path's calibrated ceiling (None: none)."""
    ceiling, offered, actors = row.get("generator_ceiling_qps"), row.get("offered_qps"), row.get("load_actors")
    if not (_finite(ceiling) and ceiling > 0 and _finite(offered) and isinstance(actors, int | float) and actors > 0):
        return None
    return float(offered) / float(actors) / float(ceiling)


def _system_or_backend(row: dict) -> str:
    if row.get("system_name", "gpu_search") == "gpu_search":
        return str(row.get("backend"))
    return str(row.get("system"))


def systems_section(run: Run) -> list[str]:
    """Cells that ran a database system: its name, the p50/p99 of each stage, the cache, errors (when they
    began and ended: a store that died and came back), and speedups vs the configured baseline."""
    rows = [r for r in run.summary if r.get("system_name", "gpu_search") != "gpu_search"]
    if not rows:
        return []
    lines = ["", "## Systems and stages", "",
             "| cell | system | vector p50/p99 ms | graph p50/p99 ms | policy p50/p99 ms | cache hits | "
             "errors (first–last, s) | speedup p50 / p99 vs baseline |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        stages = [f"{_fmt(r.get(f'{s}_p50_ms'))} / {_fmt(r.get(f'{s}_p99_ms'))}" for s in ("vector", "graph", "policy")]
        errors = f"{r['error_rate']:.2%}"
        if _finite(r.get("first_error_s")):
            errors += f" ({r['first_error_s']:.1f}–{r['last_error_s']:.1f})"
        speedup = "–"
        if _finite(r.get("speedup_p99_vs_baseline")):
            speedup = (f"{r['speedup_p50_vs_baseline']:.2f}x / {r['speedup_p99_vs_baseline']:.2f}x "
                       f"(vs {r.get('baseline')}){_speedup_recall(r)}")
        cache = "–"
        if _finite(r.get("cache_hit_rate")):
            cache = (f"{r['cache_hit_rate']:.0%} (hits p50/p99 {_fmt(r.get('cache_hit_p50_ms'))}/"
                     f"{_fmt(r.get('cache_hit_p99_ms'))} ms, misses {_fmt(r.get('cache_miss_p50_ms'))}/"
                     f"{_fmt(r.get('cache_miss_p99_ms'))} ms)")
        lines.append(f"| {r['cell']} | {r.get('system')} | " + " | ".join(stages) + f" | {cache} | {errors} | {speedup} |")
    if any("Milvus Lite" in str(r.get("system")) for r in rows):
        lines += ["", "Milvus Lite (embedded) runs in one Python process: its figures show correctness and "
                      "perfray's overhead, not a Milvus server's performance."]
    return lines


def filter_section(run: Run) -> list[str]:
    """Recall and latency per filter selectivity, when any cell filtered (unfiltered cells show as 100%)."""
    if not any(r.get("filter_selectivity", 1.0) < 1.0 for r in run.summary):
        return []
    lines = ["", "## Filtered search", "",
             "Each query may return only the items whose seeded attribute lies in its own window (`filter.selectivity` "
             "of the items pass, exactly), or, filtered by genre, the items of the genre label holding that share; "
             "recall is against the exact top-k among them.", "",
             "| cell | system / backend | filter | selectivity | recall mean | recall min | achieved QPS | p50 ms | p99 ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(run.summary, key=lambda r: (_system_or_backend(r), -r.get("filter_selectivity", 1.0), r["cell"])):
        lines.append(f"| {r['cell']} | {_system_or_backend(r)} | {r.get('filter_field') or 'none'} | "
                     f"{r.get('filter_selectivity', 1.0):.3%} | "
                     f"{_fmt(r['recall_mean'], 4)} | {_fmt(r['recall_min'], 4)} | {_fmt(r['achieved_qps'])} | "
                     f"{_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} |")
    return lines


def writes_section(run: Run) -> list[str]:
    """Cells that wrote while searching (``load.writes``): the writes' latency and freshness beside the reads'."""
    written = [r for r in run.summary if (r.get("writes") or 0) > 0]
    if not written:
        return []
    lines = ["", "## Writes while searching", "",
             "Writes mixed into the schedule, open loop like the reads (`load.writes`); freshness: from a probed "
             "write's acknowledgement until a search first showed it (an insert or upsert found as the nearest item, "
             "a delete gone); stale reads: reads that returned an item deleted longer than `load.writes.visibility_ms` "
             "before they were sent. Read latency and recall are the reads'; recall is over the items no write "
             "touched.", "",
             "| cell | system | writes | write p50 ms | write p99 ms | freshness p50 ms | freshness p99 ms | probed | "
             "stale reads | read p99 ms | recall mean |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    kinds = {c["cell"]: ((c.get("workload") or {}).get("load") or {}).get("writes") or {}
             for c in run.manifest.get("cells", [])}
    for r in written:
        spec = kinds.get(r["cell"], {})
        what = f"{r['writes']:,} {spec.get('kind', 'writes')}" + (f" ({spec['rate']:g}/s)" if "rate" in spec else "")
        lines.append(f"| {r['cell']} | {_system_or_backend(r)} | {what} | {_fmt(r.get('write_p50_ms'))} | "
                     f"{_fmt(r.get('write_p99_ms'))} | {_fmt(r.get('freshness_p50_ms'), 3)} | "
                     f"{_fmt(r.get('freshness_p99_ms'), 3)} | {r.get('freshness_samples', 0)} | "
                     f"{_fmt(r.get('stale_reads'))} | {_fmt(r['p99_ms'])} | "
                     f"{_fmt(r['recall_mean'], 4)} |")
    return lines


def _finite(value) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def phase_section(run: Run) -> list[str]:
    """Per-phase figures for cells whose schedule is more than warm-up + sustained (bursts, ramps, ...)."""
    cells = {r["cell"] for r in run.phases or [] if r["phase"] not in ("warmup", "sustained")}
    if not cells:
        return []
    lines = ["", "## Phases", "", "| cell | phase | measured | offered QPS | achieved QPS | p50 ms | p99 ms | max ms | "
             "errors | drops | recovery s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in run.phases:
        if r["cell"] in cells:
            lines.append(f"| {r['cell']} | {r['phase']} | {'yes' if r['measured'] else 'no'} | "
                         f"{_fmt(r['offered_qps'])} | {_fmt(r['achieved_qps'])} | {_fmt(r['p50_ms'])} | "
                         f"{_fmt(r['p99_ms'])} | {_fmt(r['max_ms'])} | {r['error_rate']:.2%} | {r['drop_rate']:.2%} | "
                         f"{_fmt(r.get('recovery_s'))} |")
    return lines


def scaling_section(run: Run) -> list[str]:
    """Per scaling curve: throughput, efficiency and the USL fit where the cells ran at their limit (saturated),
    else latency vs GPUs (the offered load bounded throughput); then the on-paper model from measured costs."""
    curves = scaling_curves(run.summary)
    if not curves or run.manifest.get("capacity"):  # a capacity run scales by its capacities (its own section)
        return []
    micro = _microbench(run)
    lines = ["", "## Scaling model", ""]
    for rows in curves:
        first = rows[0]
        sim = " (simulated GPUs)" if first.get("simulated") else ""
        load = "per-GPU load" if first.get("scale_with_gpus") else f"{first['target_qps']:,.0f} QPS offered"
        lines += [f"**{first.get('topology')} {first.get('backend')}{sim}, {load}**", ""]
        fit = None
        if all(saturated(r) for r in rows):
            lines += ["| GPUs | achieved QPS | p99 ms | efficiency |", "|---|---|---|---|"]
            lines += [f"| {r['n_gpus']} | {r['achieved_qps']:,.0f} | {_fmt(r['p99_ms'])} | "
                      f"{_fmt(r.get('scaling_efficiency'))} |" for r in rows]
            fit = fit_usl([r["n_gpus"] for r in rows], [r["achieved_qps"] for r in rows])
            lines.append("")
            lines.append(_usl_line(fit) if fit["ok"] else f"USL fit: not made — {fit['reason']}.")
        else:
            lines += ["| GPUs | offered QPS | achieved QPS | p50 ms | p99 ms |", "|---|---|---|---|---|"]
            lines += [f"| {r['n_gpus']} | {r['offered_qps']:,.0f} | {r['achieved_qps']:,.0f} | {_fmt(r['p50_ms'])} | "
                      f"{_fmt(r['p99_ms'])} |" for r in rows]
            served = sum(not saturated(r) for r in rows)
            lines += ["", f"Throughput was bounded by the offered load: {served} of {len(rows)} cells served what they "
                      f"were offered (≥ {SATURATED:.0%}), so their throughput says how much load there was, not how "
                      "much the GPUs could take. No efficiency or USL fit: latency vs GPUs is what these cells "
                      "measured. For a scaling curve, search capacities (`configs/capacity-gpus.yaml`) or offer "
                      "every GPU count more than it can serve."]
        lines += ["", *model_lines(run.manifest, rows, micro, fit, T4)]
    return lines


def _microbench(run: Run) -> list[dict]:
    path = run.path / "microbench.parquet"
    return pq.read_table(path).to_pylist() if path.is_file() else []


def _usl_line(fit: dict) -> str:
    return (f"USL fit (R² {fit['r2']:.3f}): σ = {fit['sigma']:.4f} (95% CI {fit['sigma_ci'][0]:.4f}–"
            f"{fit['sigma_ci'][1]:.4f}), κ = {fit['kappa']:.2e} ({fit['kappa_ci'][0]:.1e}–{fit['kappa_ci'][1]:.1e});"
            f" peak at N* = {_fmt(fit['peak_n'])} GPUs ({_fmt(fit['peak_n_ci'][0])}–{_fmt(fit['peak_n_ci'][1])});"
            f" predicted at {fit['predict_at']} GPUs: {fit['predicted_qps']:,.0f} QPS "
            f"({fit['predicted_qps_ci'][0]:,.0f}–{fit['predicted_qps_ci'][1]:,.0f}).")


def write_report(run_dir: Path) -> tuple[Path, list[dict]]:
    """Write report.md and figures into the run directory; return the report path and target verdicts."""
    run = open_run(run_dir)
    paths = [p for p in (fig(run, run.path) for fig in figures.ALL) if p is not None] if run.n_rows else []
    curve = capacity_curve(run.manifest, run.path)
    paths += [curve] if curve is not None else []
    tradeoff = tradeoff_figure(tradeoff_curves(run.summary, run.manifest), run.path)
    paths += [tradeoff] if tradeoff is not None else []
    report = run.path / "report.md"
    report.write_text(render(run, paths))
    return report, verdicts(run)
