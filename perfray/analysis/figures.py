"""Report figures, all computed from raw request rows. Each function writes one PNG and returns its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perfray.analysis.runs import Run
from perfray.analysis.summary import STAGES, scaling_curves, status_masks

MAX_CELLS_PER_FIGURE = 8


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _cells(run: Run) -> list[dict]:
    return run.summary[:MAX_CELLS_PER_FIGURE]


def _label(row: dict) -> str:
    sim = " sim" if row.get("simulated") else ""
    return f"c{row['cell']}: {row['n_gpus']} GPU{sim} {row.get('topology', '')[:4]} {row['target_qps']:,.0f} QPS"


def _save(fig, out: Path, name: str) -> Path:
    path = out / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def latency_histogram(run: Run, out: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row in _cells(run):
        lat = run.latencies_ms(row["cell"])
        if lat.size:
            bins = np.logspace(np.log10(max(lat.min(), 1e-3)), np.log10(lat.max() * 1.01), 80)
            ax.hist(lat, bins=bins, histtype="step", label=_label(row))
    ax.set_xscale("log")
    ax.set(xlabel="latency from intended send (ms)", ylabel="requests", title="Latency histogram")
    ax.axvline(10, color="red", ls="--", lw=1, label="10 ms SLO")
    ax.legend(fontsize=7)
    return _save(fig, out, "latency_histogram.png")


def percentile_spectrum(run: Run, out: Path) -> Path:
    """Latency by percentile with a log tail (x = 1 / (1 - q)), to p99.99."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    qs = 1 - np.logspace(0, -4, 200)
    for row in _cells(run):
        lat = run.latencies_ms(row["cell"])
        if lat.size:
            ax.plot(1 / (1 - qs[:-1]), np.percentile(lat, qs[:-1] * 100), label=_label(row))
    ax.set_xscale("log")
    ticks = [1, 2, 10, 100, 1000, 10000]
    ax.set_xticks(ticks, ["p0", "p50", "p90", "p99", "p99.9", "p99.99"])
    ax.axhline(10, color="red", ls="--", lw=1, label="10 ms SLO")
    ax.set(xlabel="percentile", ylabel="latency (ms)", title="Latency percentile spectrum")
    ax.legend(fontsize=7)
    return _save(fig, out, "latency_percentiles.png")


def _per_second(run: Run, cell: int):
    """Per-second series from the cell's first intended time (warm-up included): offered, ok done, errors,
    drops, p99."""
    frame = run.frame(cell)
    if frame.n == 0:
        return None
    intended = frame.ints("intended_ns")
    status = status_masks(frame, np.ones(frame.n, dtype=bool))
    t0 = intended.min()
    sec = ((intended - t0) // 1_000_000_000).astype(np.int64)
    n = int(sec.max()) + 1
    ok = status["ok"]
    done_sec = ((frame.ints("done_ns")[ok] - t0) // 1_000_000_000).astype(np.int64)
    lat = frame.floats("latency_ns") / 1e6
    timed = ok | status["timeout"]
    p99 = np.full(n, np.nan)
    order = np.lexsort((lat[timed], sec[timed]))
    s_sorted, l_sorted = sec[timed][order], lat[timed][order]
    counts = np.bincount(s_sorted, minlength=n)
    starts = np.cumsum(counts) - counts
    has = counts > 0
    p99[has] = l_sorted[starts[has] + np.floor(0.99 * (counts[has] - 1)).astype(np.int64)]
    return {
        "t0_ns": int(t0),
        "t": np.arange(n),
        "offered": np.bincount(sec, minlength=n),
        "completed": np.bincount(done_sec[(done_sec >= 0) & (done_sec < n)], minlength=n),
        "errors": np.bincount(sec[status["error"] | status["timeout"] | status["lost"]], minlength=n),
        "dropped": np.bincount(sec[status["dropped"]], minlength=n),
        "p99": p99,
    }


def node_losses(manifest: dict, cell: int, t0_ns: int) -> list[float]:
    """Seconds after ``t0_ns`` at which the cell lost a node (``node_lost`` events)."""
    return [(e["at_unix_ns"] - t0_ns) / 1e9 for e in manifest.get("events", [])
            if e.get("event") == "node_lost" and e.get("cell") == cell]


def over_time(run: Run, out: Path) -> Path:
    """Achieved vs offered QPS, p99 latency, and error/drop rate, per second of each cell."""
    plt = _pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    for row in _cells(run):
        series = _per_second(run, row["cell"])
        if series is None:
            continue
        line, = axes[0].plot(series["t"], series["completed"], label=_label(row))
        axes[0].plot(series["t"], series["offered"], ls=":", color=line.get_color())
        axes[1].plot(series["t"], series["p99"], color=line.get_color())
        bad = (series["errors"] + series["dropped"]) / np.maximum(series["offered"], 1)
        axes[2].plot(series["t"], bad * 100, color=line.get_color())
        for at_s in node_losses(run.manifest, row["cell"], series["t0_ns"]):
            for ax in axes:
                ax.axvline(at_s, color=line.get_color(), ls="-.", lw=1)
            axes[0].annotate("node lost", (at_s, 0), xycoords=("data", "axes fraction"), fontsize=7, rotation=90,
                             va="bottom", ha="right")
    axes[0].set(ylabel="QPS (solid: ok done, dotted: offered)", title="Over time (1 s bins)")
    axes[1].set(ylabel="p99 latency (ms)")
    axes[1].axhline(10, color="red", ls="--", lw=1)
    axes[2].set(ylabel="failed: errors, timeouts, drops, lost (%)",
                xlabel="seconds since the cell's first request (warm-up included; dash-dot: a node lost)")
    axes[2].axhline(1, color="red", ls="--", lw=1)
    axes[0].legend(fontsize=7)
    return _save(fig, out, "over_time.png")


def by_operation(run: Run, out: Path) -> Path:
    """Latency by query type, all cells pooled."""
    plt = _pyplot()
    by_op: dict[str, list[np.ndarray]] = {}
    for r in run.summary:
        frame, measured = run.measured(r["cell"])
        keep = measured & frame.isin("status", ("ok", "timeout"))
        codes, names = frame.codes("op")
        lat = frame.floats("latency_ns") / 1e6
        for i, name in enumerate(names):
            by_op.setdefault(name, []).append(lat[keep & (codes == i)])
    names = sorted(n for n, parts in by_op.items() if sum(p.size for p in parts))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if names:
        ax.boxplot([np.concatenate(by_op[n]) for n in names], tick_labels=names, whis=(1, 99), showfliers=False)
    ax.set(ylabel="latency (ms)", title="Latency by operation (whiskers p1-p99)")
    return _save(fig, out, "latency_by_operation.png")


def schedule_lag(run: Run, out: Path) -> Path:
    """How late requests were sent (micro-batch wait + generator lateness): a saturated generator shows here."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for row in _cells(run):
        frame, measured = run.measured(row["cell"])
        lag = frame.floats("schedule_lag_ns")[measured & ~frame.isin("status", ("dropped", "lost"))] / 1e6
        lag = lag[~np.isnan(lag)]
        if lag.size:
            lag = np.sort(lag)
            ax.plot(lag, np.arange(1, lag.size + 1) / lag.size, label=_label(row))
    ax.set(xlabel="schedule lag: sent - intended (ms)", ylabel="share of requests", title="Schedule lag CDF")
    ax.legend(fontsize=7)
    return _save(fig, out, "schedule_lag.png")


def scaling(run: Run, out: Path) -> Path | None:
    """Throughput and p99 vs number of GPUs, one line per otherwise-identical workload."""
    curves = scaling_curves(run.summary)
    if not curves:
        return None
    plt = _pyplot()
    fig, (ax_q, ax_p, ax_e) = plt.subplots(1, 3, figsize=(14, 4.5))
    for rows in curves:
        gpus = [r["n_gpus"] for r in rows]
        label = f"{rows[0].get('topology')} {rows[0].get('backend')}" + (" (sim)" if rows[0].get("simulated") else "")
        label += " per-GPU load" if rows[0].get("scale_with_gpus") else f" @ {rows[0]['target_qps']:,.0f} QPS"
        ax_q.plot(gpus, [r["achieved_qps"] for r in rows], marker="o", label=label)
        ax_p.plot(gpus, [r["p99_ms"] for r in rows], marker="o", label=label)
        ax_e.plot(gpus, [r.get("scaling_efficiency", float("nan")) for r in rows], marker="o", label=label)
    ax_q.set(xlabel="GPUs", ylabel="achieved QPS", title="Throughput vs GPUs")
    ax_e.set(xlabel="GPUs", ylabel="QPS / (GPUs x 1-GPU QPS)", title="Scaling efficiency", ylim=(0, 1.2))
    ax_e.axhline(1, color="grey", ls=":", lw=1)
    for ax in (ax_q, ax_p, ax_e):
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_p.set(xlabel="GPUs", ylabel="p99 (ms)", title="p99 vs GPUs")
    ax_p.axhline(10, color="red", ls="--", lw=1)
    ax_q.legend(fontsize=7)
    return _save(fig, out, "scaling.png")


def stage_breakdown(run: Run, out: Path) -> Path | None:
    """Where a request's time goes: per cell, the p50 and p99 of each stage's span (a multi-store request's
    vector, graph and policy stages; a GPU search's queue in its actor, the search, and the Ray call around
    them) beside the request's own latency (cache hits, which skip the stages, are counted apart)."""
    stages = (*STAGES, "transport")
    rows = [r for r in _cells(run) if any(np.isfinite(r.get(f"{s}_p50_ms") or np.nan) for s in stages)]
    if not rows:
        return None
    plt = _pyplot()
    fig, (ax50, ax99) = plt.subplots(1, 2, figsize=(13, 0.6 * len(rows) + 2.5), sharey=True)
    labels = [f"c{r['cell']}: {r.get('system', '')}"[:60] for r in rows]
    y = np.arange(len(rows))
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:grey")
    # p50: stacked (medians of sequential stages roughly add up); p99: side by side (tails do not add).
    left = np.zeros(len(rows))
    for stage, color in zip(stages, colors, strict=True):
        width = np.nan_to_num([r.get(f"{stage}_p50_ms", np.nan) for r in rows])
        ax50.barh(y, width, left=left, color=color, label=f"{stage} p50")
        left += width
    height = 0.8 / len(stages)
    for i, (stage, color) in enumerate(zip(stages, colors, strict=True)):
        width = np.nan_to_num([r.get(f"{stage}_p99_ms", np.nan) for r in rows])
        ax99.barh(y - 0.4 + height * (i + 0.5), width, height=height, color=color, label=f"{stage} p99")
    for ax, q, how in ((ax50, "p50", "stacked"), (ax99, "p99", "per stage")):
        ax.scatter([r[f"{q}_ms"] for r in rows], y, color="black", marker="|", s=300, zorder=3,
                   label=f"request latency {q}")
        ax.set(xlabel="ms", title=f"Stage spans, {q} ({how}) vs request latency")
        ax.axvline(10, color="red", ls="--", lw=1)
        ax.legend(fontsize=7, loc="lower right")
    ax50.set_yticks(y, labels, fontsize=7)
    return _save(fig, out, "stage_breakdown.png")


ALL = (latency_histogram, percentile_spectrum, over_time, by_operation, schedule_lag, scaling, stage_breakdown)
