"""What one GPU of another type (the plan's T4) could serve, on paper, built from what this run measured per
request, never from the kernel's roofline alone.

Terms, each reported with where it came from ("cannot estimate" when one is missing):

- **search cost per query here**: the search actors' busy time over the queries they searched (``gpu_usage`` in
  the manifest: ``busy_s``, ``rows``), at the batch their searches had (rows / searches, after coalescing);
- **kernel per query here**: the microbenchmark's batch time over its batch, at the measured batch size nearest
  that batch (``microbench.parquet``);
- **overhead per query**: the cost less the kernel: the actor's own work around the kernel (copies, merging,
  Python), assumed to stay the same on the other GPU (it runs on the host);
- **kernel per query on the other GPU**: its roofline at that batch (``paper_seconds``: the index read or the GEMM,
  whichever is slower) — the kernel's bound, nothing more;
- **service rate per GPU** = 1 / (other GPU's kernel + overhead): the GPU busy all the time (constant arrivals
  reach it); **at the SLO with Poisson arrivals**, the M/M/1 bound λ = μ − ln(100) / (SLO − the latency floor),
  conservative (a GPU's service time varies less than exponentially); the floor is the cells' lowest p50 less
  their search time (batch window, the Ray call, the load actor);
- **N GPUs** = per GPU × N × the scaling efficiency at N from the USL fitted to capacities (with its interval),
  never × N flat; without such a fit, no N-GPU figure.
"""

from __future__ import annotations

import math

import numpy as np

from perfray.analysis.scaling_model import GpuSpec, paper_seconds


def measured_costs(cells: list[dict], usage: list[list[dict]], microbench: list[dict]) -> dict:
    """Per-query costs of the search actors over ``cells`` (summary rows) with their ``usage`` (manifest
    ``gpu_usage`` per cell) and the ``microbench`` rows: cost, batch, kernel and overhead (NaN when unknown)."""
    busy = sum(u["busy_s"] or 0.0 for per_cell in usage for u in per_cell if u.get("busy_s") is not None)
    rows = sum(u["rows"] or 0 for per_cell in usage for u in per_cell if u.get("busy_s") is not None)
    searches = sum(u.get("searches") or 0 for per_cell in usage for u in per_cell if u.get("busy_s") is not None)
    cost = busy / rows if rows else math.nan
    batch = rows / searches if searches else math.nan
    kernel, kernel_batch = math.nan, None
    k = cells[0].get("k") if cells else None
    bench = [m for m in microbench if m.get("k") == k and m.get("batch_ns")]
    if bench and math.isfinite(batch):
        sizes = sorted({m["batch"] for m in bench})
        kernel_batch = min(sizes, key=lambda b: abs(math.log(b) - math.log(max(batch, 1.0))))
        kernel = float(np.median([m["batch_ns"] for m in bench if m["batch"] == kernel_batch])) / 1e9 / kernel_batch
    return {"cost_s": cost, "batch": batch, "kernel_s": kernel, "kernel_batch": kernel_batch,
            "overhead_s": max(cost - kernel, 0.0) if math.isfinite(cost) and math.isfinite(kernel) else math.nan,
            "floor_ms": _floor_ms(cells, usage), "queries": rows}


def _floor_ms(cells: list[dict], usage: list[list[dict]]) -> float:
    """What a request spends outside the search: the lowest of the cells' p50 less their search time per call
    (busy time / searches): the batch window, the calls, the load actor."""
    best = math.nan
    for row, per_cell in zip(cells, usage, strict=True):
        known = [u for u in per_cell if u.get("busy_s") is not None and u.get("searches")]
        p50 = row.get("p50_ms", math.nan)
        if known and math.isfinite(p50):
            search_ms = sum(u["busy_s"] for u in known) / sum(u["searches"] for u in known) * 1e3
            best = p50 - search_ms if not math.isfinite(best) or p50 - search_ms < best else best
    return best


def per_gpu(gpu: GpuSpec, costs: dict, n: int, dim: int, slo_ms: float | None) -> dict:
    """The other GPU's per-GPU rates from the measured costs: service rate and the rate at the SLO."""
    if not all(math.isfinite(costs[key]) for key in ("overhead_s", "batch")) or not n or not dim:
        return {"service_qps": math.nan, "slo_qps": math.nan, "kernel_s": math.nan}
    batch = max(int(round(costs["batch"])), 1)
    kernel = paper_seconds(gpu, n, dim, batch) / batch
    mu = 1.0 / (kernel + costs["overhead_s"])
    at_slo = math.nan
    if slo_ms is not None and math.isfinite(costs["floor_ms"]):
        budget_s = (slo_ms - max(costs["floor_ms"], 0.0)) / 1e3
        at_slo = max(mu - math.log(100) / budget_s, 0.0) if budget_s > 0 else 0.0
    return {"service_qps": mu, "slo_qps": at_slo, "kernel_s": kernel}


def cluster_rate(per_gpu_qps: float, fit: dict | None, n_gpus: int) -> tuple[float, float, float] | None:
    """``per_gpu_qps`` × N × the fitted efficiency at N (and its interval), or None without a usable fit."""
    if not fit or not fit.get("ok") or fit.get("predict_at") != n_gpus or not math.isfinite(per_gpu_qps):
        return None
    flat = fit["lambda"] * n_gpus
    efficiency = [fit["predicted_qps"] / flat, *(v / flat for v in fit["predicted_qps_ci"])]
    return tuple(per_gpu_qps * n_gpus * e for e in efficiency)


def slo_ms(config: dict) -> float | None:
    """The tightest p99 bound the run must meet everywhere (a must-pass target or an slo: goal over every cell, or a
    capacity search's SLO), in ms."""
    bounds = [t["max"] for t in config.get("targets") or [] if t.get("metric") == "p99_ms" and t.get("max")
              and t.get("must_pass", True) and not t.get("where")]
    bounds += [s["goal"] for s in config.get("slo") or [] if s.get("metric") == "p99_ms" and not s.get("where")]
    for slo in (config.get("capacity") or {}).get("slo") or []:
        text = slo if isinstance(slo, str) else f"{slo.get('metric')}<={slo.get('max')}"
        if text.replace(" ", "").startswith("p99_ms<="):
            bounds.append(float(text.split("<=")[1]))
    return min(bounds) if bounds else None


def on_paper(manifest: dict, cells: list[dict], microbench: list[dict], gpu: GpuSpec) -> dict | None:
    """``per_gpu`` for ``cells`` (summary rows of one kind of search) with what it came from: the measured costs,
    the index (rows × dim) and the SLO; None when the run had no GPU search actors."""
    actors = (manifest.get("gpus") or {}).get("actors") or []
    if not actors or not cells:
        return None
    n = sum(a["rows"] for a in actors) if cells[0].get("topology") == "sharded" else actors[0].get("rows")
    dim = actors[0].get("dim")
    costs = measured_costs(cells, [manifest["cells"][r["cell"]].get("gpu_usage") or [] for r in cells], microbench)
    slo = slo_ms(manifest.get("config") or {})
    return {"gpu": per_gpu(gpu, costs, n, dim, slo), "costs": costs, "n": n, "dim": dim, "slo_ms": slo}


def paper_sizing_line(manifest: dict, summary: list[dict], microbench: list[dict], rate: float, fit: dict | None,
                      gpu: GpuSpec) -> str:
    """Beside the measured sizing answer: the GPUs of type ``gpu`` the rate needs on paper, from its per-GPU rate
    at the SLO (``per_gpu``) and the contention the USL fitted to the measured capacities (``fit``); without a fit,
    the least it could be (perfect scaling)."""
    head = f"**On paper, {gpu.name}s for {rate:,.0f} QPS:** "
    cells = [r for r in summary if r.get("capacity_search") is not None] or summary
    paper = on_paper(manifest, cells, microbench, gpu)
    per = paper["gpu"]["slo_qps"] if paper else math.nan
    if not math.isfinite(per) or per <= 0:
        return head + ("cannot estimate (" + ("no GPU search actors in this phase" if paper is None else
                       "no measured search cost, kernel or latency floor to build it from") + ").")
    source = (f"{per:,.0f} QPS per {gpu.name} at p99 ≤ {paper['slo_ms']:g} ms (this phase's measured cost per query "
              "with the kernel at the T4's roofline, M/M/1 at the SLO)")
    if fit and fit.get("ok"):
        grid = np.arange(1, 10_001, dtype=np.float64)
        scaled = per * grid / (1 + fit["sigma"] * (grid - 1) + fit["kappa"] * grid * (grid - 1))
        hit = np.flatnonzero(scaled >= rate)
        return head + (f"{int(grid[hit[0]]):,}" if hit.size else "not reachable") + (
            f": {source}, scaled by the USL fitted to the measured capacities (σ {fit['sigma']:.3g}, "
            f"κ {fit['kappa']:.3g}).")
    return head + (f"at least {math.ceil(rate / per):,}: {source}, scaled perfectly (no USL fit on the measured "
                   "capacities to add their contention).")


def model_lines(manifest: dict, cells: list[dict], microbench: list[dict], fit: dict | None, gpu: GpuSpec,
                n_target: int = 100) -> list[str]:
    """The report's on-paper lines for ``cells`` (one scaling curve's summary rows): each term and its source."""
    paper = on_paper(manifest, cells, microbench, gpu)
    if paper is None:
        return []
    g, costs, n, dim, slo = paper["gpu"], paper["costs"], paper["n"], paper["dim"], paper["slo_ms"]

    def us(seconds: float) -> str:
        return "cannot estimate" if not math.isfinite(seconds) else f"{seconds * 1e6:,.1f} µs"

    def qps(value: float) -> str:
        return "cannot estimate" if not math.isfinite(value) else f"{value:,.0f} QPS"

    batch = costs["batch"]
    at = f"{batch:.1f}" if math.isfinite(batch) else "?"
    total = cluster_rate(g["slo_qps"] if math.isfinite(g["slo_qps"]) else g["service_qps"], fit, n_target)
    lines = [f"On paper, {gpu.name} per GPU, from this run's measured costs per query ({n:,} × {dim} fp32 index; "
             "the kernel's roofline bounds only the kernel):", "", "| term | value | from |", "|---|---|---|",
             f"| search cost per query here | {us(costs['cost_s'])} at batch {at} | search actors' busy time / "
             f"queries searched ({costs['queries']:,}), manifest gpu_usage |",
             f"| kernel per query here | {us(costs['kernel_s'])}"
             + (f" at batch {costs['kernel_batch']}" if costs["kernel_batch"] else "")
             + (" | microbench.parquet: batch time / batch |" if costs["kernel_batch"] else
                " | microbench off or at another k: no kernel split |"),
             f"| service rate per GPU here | {qps(1 / costs['cost_s'] if costs['cost_s'] > 0 else math.nan)} | "
             "1 / cost: this run's device busy all the time |",
             f"| overhead per query (host side) | {us(costs['overhead_s'])} | cost − kernel |",
             f"| {gpu.name} kernel per query | {us(g['kernel_s'])} | roofline at batch {at}: "
             f"{gpu.mem_bw_bytes_s / 1e9:,.0f} GB/s, {gpu.fp32_flops / 1e12:g} TFLOP/s |",
             f"| latency floor | {_ms(costs['floor_ms'])} | cell p50 − its search time per call, the lowest (window, calls, load actor) |",
             *_floor_parts(cells),
             f"| {gpu.name} service rate per GPU | {qps(g['service_qps'])} | 1 / (kernel + overhead): busy all the time |",
             f"| {gpu.name} per GPU at p99 ≤ {slo if slo is not None else '?'} ms, Poisson | {qps(g['slo_qps'])} | "
             "M/M/1 bound: μ − ln(100) / (SLO − floor) |"]
    if total is None:
        lines.append(f"| {n_target} × {gpu.name} | cannot estimate | needs a USL fit on capacities or saturated "
                     "throughput for the scaling efficiency (never × N flat) |")
    else:
        lines.append(f"| {n_target} × {gpu.name} | {total[0]:,.0f} QPS ({total[1]:,.0f}–{total[2]:,.0f}) | per GPU × "
                     f"{n_target} × the USL's efficiency at {n_target} (95% interval) |")
    return lines + [""]


# The parts of a request outside the GPU search that the run measured, as (summary column, what it is): the
# floor above holds them; named here so that a reader sees which one the SLO budget goes to.
FLOOR_PARTS = (("transport_p50_ms", "the Ray call there and back (service − actor queue − search)"),
               ("queue_p50_ms", "the wait in the search actor's queue"),
               ("graph_p50_ms", "the graph stage after the vector search (hybrid: Neo4j)"),
               ("policy_p50_ms", "the policy stage (hybrid: PostgreSQL)"))


def _floor_parts(cells: list[dict]) -> list[str]:
    """A row per measured part of the floor: its p50 in the cell the floor came from's kind (the lowest over the
    cells), with the column it came from."""
    rows = []
    for column, what in FLOOR_PARTS:
        values = [r[column] for r in cells if isinstance(r.get(column), (int, float)) and math.isfinite(r[column])]
        if values:
            rows.append(f"| of which {column.removesuffix('_p50_ms')} p50 | {_ms(min(values))} | summary "
                        f"{column}, the lowest cell: {what} |")
    return rows


def _ms(value: float) -> str:
    return "cannot estimate" if not math.isfinite(value) else f"{value:,.2f} ms"


def capacity_model_lines(manifest: dict, summary: list[dict], microbench: list[dict], gpu: GpuSpec) -> list[str]:
    """``model_lines`` for a capacity run: per group of searches over GPU counts, with the USL on their capacities
    (a search outside any group gets its per-GPU lines alone)."""
    capacity = manifest.get("capacity") or {}
    groups = [(g["searches"], g["usl"]) for g in capacity.get("scaling", [])]
    grouped = {s for searches, _ in groups for s in searches}
    groups += [([s["search"]], None) for s in capacity.get("searches", []) if s["search"] not in grouped]
    out = []
    for searches, fit in groups:
        cells = [r for r in summary if r.get("capacity_search") in searches]
        out += ["", *model_lines(manifest, cells, microbench, fit, gpu)] if cells else []
    return out


def split_section(summary: list[dict]) -> list[str]:
    """Where a GPU search request's time goes (gpu_search cells): the micro-batch wait (schedule lag), the Ray call
    there and back (service − queue − search), the wait in the search actor's queue, and the search itself."""
    rows = [r for r in summary if r.get("system_name", "gpu_search") == "gpu_search"
            and math.isfinite(r.get("queue_p50_ms", math.nan))]
    if not rows:
        return []

    def pair(r: dict, name: str) -> str:
        return f"{r[f'{name}_p50_ms']:.3g} / {r[f'{name}_p99_ms']:.3g}"

    lines = ["", "## Where a GPU search request's time goes", "",
             "p50 / p99 ms of each part, over ok rows: the search actor reports its queue and search times with "
             "each answer; the Ray call is the rest of the service time (with any wait for a free call slot in the "
             "load actor); the batch wait is the schedule lag (the micro-batch window and the generator's own "
             "lateness, p99 only).", "",
             "| cell | GPUs | QPS | latency | batch wait p99 | Ray call | actor queue | search |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cell']} | {r.get('n_gpus')} | {r['target_qps']:,.0f} | "
                     f"{r['p50_ms']:.3g} / {r['p99_ms']:.3g} | {r.get('schedule_lag_p99_ms', math.nan):.3g} | "
                     f"{pair(r, 'transport')} | {pair(r, 'queue')} | {pair(r, 'vector')} |")
    return lines
