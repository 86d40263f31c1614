"""What a capacity run reports: a verdict per search against the target rate, the USL fitted to capacity vs
GPU count, the latency–throughput curve of each search (p50/p99/p99.9 vs offered rate, the SLO bounds, the
capacity marked) and the report section. Everything comes from the manifest's account of the steps, which
the driver took from the steps' own summary rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

from perfray.analysis.scaling_model import fit_usl

# A capacity row's columns that are results, not what was searched (scaling groups on the rest).
_RESULT_COLUMNS = {"search", "base", "n_gpus", "capacity_qps", "capacity_lo", "capacity_hi", "limited_by", "steps",
                   "step_cells", "meets_target", "target_qps", "simulated", "system"}


def capacity_verdicts(manifest: dict) -> list[dict]:
    """One must-pass verdict per search when the config sets ``capacity.target_qps``; and, whatever the target, a
    failed one for each search that measured no capacity (no rate shown to hold), saying why and what to do."""
    capacity = manifest.get("capacity") or {}
    target = (capacity.get("spec") or {}).get("target_qps")
    verdicts = []
    for s in capacity.get("searches", []):
        if not math.isfinite(s["capacity_qps"]):
            verdicts.append({"cell": -1, "search": s["search"], "metric": "capacity_qps", "value": math.nan,
                             "bound": f"a rate shown to hold (built in): {unmeasured(manifest, s)}",
                             "passed": False, "must_pass": True, "limited_by": s["limited_by"]})
        elif target is not None:
            verdicts.append({"cell": -1, "search": s["search"], "metric": "capacity_qps", "bound": f">= {target:g}",
                             "value": s["capacity_qps"], "passed": bool(s["capacity_qps"] >= target),
                             "must_pass": True, "limited_by": s["limited_by"]})
    return verdicts


# One load actor that falls behind below this rate is starved of CPU, not at its own limit (calibrated
# ceilings of every client path are far above it on a 2-core VM).
STARVED_QPS = 1000.0


def capacity_results(searches: list, summary: list[dict], bases: list, labels: tuple, run_dir: Path,
                     manifest: dict, spec) -> list[dict]:
    """capacity.parquet (a row per search: ``(base, result, steps, step rows)``), the manifest's account of every
    step, the USL fit of capacity against GPU count, and a verdict per search when a target rate is set."""
    import pyarrow as pa

    from perfray.results.writer import write_table

    rows, described = [], []
    for i, (base, result, steps, step_rows) in enumerate(searches):
        last = next((r for r in reversed(summary) if r.get("capacity_search") == i), {})
        row_labels = {k: last.get(k) for k in labels}
        if not last:
            row_labels.update(system_name=bases[base].system, n_gpus=bases[base].search.n_gpus)
        rows.append({"search": i, "base": base, **row_labels, **result, "step_cells": [s.cell for s in steps]})
        described.append({"search": i, "base": base, **result, "steps": step_rows})
    if rows:
        write_table(run_dir / "capacity.parquet", pa.Table.from_pylist(rows))
    manifest["capacity"] = {"spec": spec.model_dump(mode="json"), "searches": described,
                            "scaling": capacity_scaling(rows, spec.sizing_qps or spec.target_qps)}
    return capacity_verdicts(manifest)


def unmeasured(manifest: dict, search: dict) -> str:
    """Why a search measured no capacity, and what to do, in one line."""
    steps = search.get("steps") or []
    first = steps[0] if steps else {}
    qps = first.get("qps", math.nan)
    spec = (manifest.get("capacity") or {}).get("spec") or {}
    if search["limited_by"] == "undecided":
        last = steps[-1]
        return (f"{', '.join(last.get('broken') or []) or 'an SLO'} not shown to hold at the first rate, "
                f"{qps:,.0f} QPS: its interval still straddled the bound after {last.get('duration_s', math.nan):g} s "
                f"(p99 {last.get('p99_ms', math.nan):.3g} ms, 95% CI {last.get('p99_lo_ms', math.nan):.3g}–"
                f"{last.get('p99_hi_ms', math.nan):.3g}): raise --max-step-s for more samples")
    if search["limited_by"] == "min_qps":
        broke = ", ".join(first.get("broken") or []) or "an SLO"
        return (f"{broke} already broke at the first step, {qps:,.0f} QPS (p99 {first.get('p99_ms', math.nan):.3g} "
                "ms): lower --min-qps or loosen --slo")
    if search["limited_by"] == "generator":
        cell = next((c for c in manifest.get("cells", []) if c.get("cell") == first.get("cell")), {})
        actors = ((cell.get("workload") or {}).get("load") or {}).get("actors") or 1
        late = first.get("generator_lateness_p99_ms", math.nan)
        per_actor = qps / actors if isinstance(actors, int) else qps
        if per_actor < STARVED_QPS:
            return (f"the load generator sent late ({late:.3g} ms p99) at {per_actor:,.0f} QPS per load actor, far "
                    "below what one holds: its host is busy (the system under test or Ray share its CPUs); run the "
                    "load on cores of its own (cluster.load_placement, fewer search actors per host) or a quieter "
                    "host")
        return (f"the load generator sent late ({late:.3g} ms p99) at {per_actor:,.0f} QPS per load actor: add load "
                "actors (load.actors, or auto after perfray calibrate)")
    return f"the search ended before a step held ({search['limited_by']}; min_qps {spec.get('min_qps', math.nan):g})"


def capacity_scaling(rows: list[dict], rate: float | None = None) -> list[dict]:
    """Capacity against GPU count for every group of searches that differ only in ``n_gpus``, with the USL
    fitted to those capacities (``ok`` False and a reason when it cannot be) and, for a goal ``rate``, the GPUs it
    needs (the sizing answer)."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        key = json.dumps({k: v for k, v in row.items() if k not in _RESULT_COLUMNS}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(row)
    out = []
    for key, members in groups.items():
        members = sorted(members, key=lambda r: r.get("n_gpus") or 0)
        if len({r.get("n_gpus") for r in members}) < 2:
            continue
        n = [r["n_gpus"] for r in members]
        capacity = [r["capacity_qps"] for r in members]
        # only a capacity an SLO bounded is the system's; the generator or max_qps gives a lower bound
        bounded = [r for r in members if r["limited_by"] == "slo"]
        fit = fit_usl([r["n_gpus"] for r in bounded], [r["capacity_qps"] for r in bounded], rate=rate)
        if not fit["ok"] and len(bounded) < len(members) and fit["reason"].startswith("too few points"):
            others = "; ".join(f"{r['n_gpus']} GPU{'s' if r['n_gpus'] != 1 else ''}: "
                               f"{LIMITED_BY.get(r['limited_by'], r['limited_by'])}" for r in members if r not in bounded)
            fit["reason"] = (f"too few points: a capacity an SLO bounded at {len(bounded)} of {len(members)} GPU "
                             f"counts ({others}), the USL needs at least 3")
        out.append({"workload": json.loads(key), "n_gpus": n, "capacity_qps": capacity,
                    "limited_by": [r["limited_by"] for r in members], "searches": [r["search"] for r in members],
                    "fitted_n_gpus": [r["n_gpus"] for r in bounded], "usl": fit})
    return out


def goal_rate(spec: dict) -> float | None:
    """The rate a capacity run sizes for: ``sizing_qps``, else its ``target_qps``."""
    return spec.get("sizing_qps") or spec.get("target_qps")


def sizing_line(fit: dict, rate: float) -> str:
    """The sizing answer for ``rate`` from a USL fit on capacities: N [lo, hi], or why there is none."""
    head = f"**GPUs for {rate:,.0f} QPS at these SLOs:** "
    if not fit.get("ok"):
        return head + f"cannot extrapolate ({fit.get('reason')})."
    size = fit["sizing"]
    if math.isinf(size["n"]):
        return head + (f"not reachable by adding GPUs of this kind: the fitted capacity peaks at "
                       f"{size['peak_qps']:,.0f} QPS (N* = {fit['peak_n']:.3g}).")
    lo, hi = (f"{v:,.0f}" if math.isfinite(v) else "never" for v in size["ci"])
    return head + (f"{size['n']:,.0f} [{lo}, {hi}] (USL on the SLO-bounded capacities, 95% bootstrap interval"
                   + (f"; {size['unreachable_share']:.0%} of the bootstrap fits never reach it" if
                      size["unreachable_share"] else "") + ").")


def _fmt(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:,.0f}"


LIMITED_BY = {"slo": "an SLO broke above it", "generator": "the load generator fell behind (a lower bound, not "
              "the system's limit)", "max_qps": "max_qps reached with every SLO met",
              "min_qps": "an SLO already broke at min_qps", "undecided": "undecided at min_qps: an SLO's interval still "
              "straddled its bound in the longest step", "max_steps": "max_steps reached",
              "unfinished": "the search did not finish"}


def _searched(manifest: dict, search: dict) -> tuple[str, object, str]:
    """(system label, GPU count, arrival process) of a search, from its first step's cell."""
    cells = manifest.get("cells", [])
    first = search.get("steps") or [{}]
    entry = next((c for c in cells if c.get("cell") == first[0].get("cell")), {})
    workload = entry.get("workload") or {}
    system = (entry.get("system") or {}).get("label") or workload.get("system", "–")
    return system, (workload.get("search") or {}).get("n_gpus", "–"), (workload.get("load") or {}).get("arrival", "")


def capacity_section(manifest: dict, figure: Path | None) -> list[str]:
    capacity = manifest.get("capacity")
    if not capacity:
        return []
    spec = capacity.get("spec") or {}
    lines = ["", "## Capacity at the SLO", "",
             f"SLOs: `{'`, `'.join(spec.get('slo', []))}`. Open-loop steps from {spec.get('min_qps', 0):,.0f} QPS "
             f"grown ×{spec.get('growth', 2):g} until one breaks, then bisected to {spec.get('resolution', 0):.0%}; "
             "a percentile SLO counts as met only when its whole 95% interval is (an undecided step is re-run "
             f"longer, up to {spec.get('max_step_s', 0):g} s). Capacity is the highest rate shown to hold.", "",
             "| search | system | GPUs | capacity QPS | broke at QPS | steps | ended because |", "|---|---|---|---|---|---|---|"]
    for s in capacity.get("searches", []):
        system, gpus, _ = _searched(manifest, s)
        lines.append(f"| {s['search']} | {system} | {gpus} | {_fmt(s['capacity_qps'])} | {_fmt(s['capacity_hi'])} | "
                     f"{s['steps'] if isinstance(s['steps'], int) else len(s['steps'])} | "
                     f"{LIMITED_BY.get(s['limited_by'], s['limited_by'])} |")
    for s in capacity.get("searches", []):
        lines += ["", f"Steps of search {s['search']}:", "",
                  "| cell | offered QPS | s | p50 ms | p99 ms (95% CI) | p99.9 ms | failed | outcome |",
                  "|---|---|---|---|---|---|---|---|"]
        for st in s.get("steps", []):
            lines.append(f"| {st['cell']} | {st['qps']:,.0f} | {st['duration_s']:g} | {st['p50_ms']:.3g} | "
                         f"{st['p99_ms']:.3g} ({st['p99_lo_ms']:.3g}–{st['p99_hi_ms']:.3g}) | {st['p999_ms']:.3g} | "
                         f"{st['failure_rate']:.2%} | {st['outcome']}"
                         f"{' (' + ', '.join(st['broken']) + ')' if st.get('broken') else ''} |")
    for group in capacity.get("scaling", []):
        fit = group["usl"]
        pairs = ", ".join(f"{n} GPU: {_fmt(c)}{'' if why == 'slo' else ' (at least: ' + why + ')'}" for n, c, why in
                          zip(group["n_gpus"], group["capacity_qps"], group["limited_by"], strict=True))
        lines += ["", f"Capacity vs GPUs: {pairs}."]
        if fit.get("ok"):
            lines.append(f"USL fit on capacities (R² {fit['r2']:.3f}): σ = {fit['sigma']:.4f}, κ = {fit['kappa']:.2e}, "
                         f"peak at N* = {fit['peak_n']:.3g}; predicted capacity at {fit['predict_at']} GPUs: "
                         f"{fit['predicted_qps']:,.0f} QPS ({fit['predicted_qps_ci'][0]:,.0f}–"
                         f"{fit['predicted_qps_ci'][1]:,.0f}).")
        else:
            lines.append(f"USL fit on capacities (those an SLO bounded): not made — {fit.get('reason')}.")
        if rate := goal_rate(spec):
            lines.append(sizing_line(fit, rate))
    if figure is not None:
        lines += ["", f"![latency vs offered rate]({figure.name})"]
    return lines


def capacity_curve(manifest: dict, out: Path) -> Path | None:
    """Latency–throughput curve of every search: p50/p99/p99.9 against offered rate (the longest step at each
    rate), the bounds of latency SLOs, the capacity (the knee) and the rate that broke."""
    capacity = manifest.get("capacity")
    searches = [s for s in (capacity or {}).get("searches", []) if s.get("steps")]
    if not searches:
        return None
    from perfray.analysis.figures import _pyplot, _save

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(searches), figsize=(6.5 * len(searches), 4.5), squeeze=False)
    bounds = [(slo.partition("<=")[0].strip(), float(slo.partition("<=")[2]))
              for slo in capacity["spec"]["slo"] if "<=" in slo and slo.partition("<=")[0].strip().endswith("_ms")]
    for ax, s in zip(axes[0], searches, strict=True):
        steps: dict[float, dict] = {}
        for st in s["steps"]:
            if st["qps"] not in steps or st["duration_s"] >= steps[st["qps"]]["duration_s"]:
                steps[st["qps"]] = st
        rates = sorted(steps)
        for key, label, style in (("p50_ms", "p50", "o-"), ("p99_ms", "p99", "s-"), ("p999_ms", "p99.9", "^-")):
            ax.plot(rates, [steps[r][key] for r in rates], style, label=label, ms=4)
        for metric, bound in bounds:
            ax.axhline(bound, color="red", ls="--", lw=1, label=f"SLO {metric} <= {bound:g}")
        if math.isfinite(s["capacity_qps"]):
            ax.axvline(s["capacity_qps"], color="green", lw=1.5, label=f"capacity {s['capacity_qps']:,.0f} QPS")
        if s.get("capacity_hi") is not None and math.isfinite(s["capacity_hi"]):
            ax.axvline(s["capacity_hi"], color="grey", ls=":", lw=1, label=f"broke at {s['capacity_hi']:,.0f} QPS")
        broken = [r for r in rates if steps[r]["outcome"] != "meets"]
        ax.plot(broken, [steps[r]["p99_ms"] for r in broken], "x", color="red", ms=9, label="SLO not shown met")
        system, gpus, arrival = _searched(manifest, s)
        ax.set(xlabel="offered QPS", ylabel="latency (ms)", yscale="log",
               title=f"search {s['search']}: {system[:40]}, {gpus} GPU, {arrival}")
        ax.legend(fontsize=7)
    return _save(fig, out, "capacity_curve.png")
