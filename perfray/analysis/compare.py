"""``perfray compare BASELINE CANDIDATE``: per matching grid cell, side by side, speedup with a 95% CI, verdict
against a minimum speedup, regressions flagged. Writes CANDIDATE/comparison.md.

With repeats in both runs (``--repeat N``) the interval comes from the variance between repeats (Welch t on
the log of the metric, ``perfray.analysis.repeats``); without, from a bootstrap over one run's rows, which
ignores run-to-run noise: it is labelled so, and a tail percentile (p95/p99/p99.9) then gets no verdict, nor
with fewer than ``MIN_REPEATS`` repeats a side.

Speedup > 1 means the candidate is better: baseline/candidate for latencies, candidate/baseline for
throughput."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perfray.analysis.distributions import distribution_section, quantile_shifts
from perfray.analysis.repeats import MIN_REPEATS, TAIL_METRICS, between_runs, by_base
from perfray.analysis.runs import Run, open_run
from perfray.errors import UsageError

GRID_KEYS = ("n_gpus", "k", "target_qps", "topology", "op_mix", "batch_max", "load_actors")
LATENCY_METRICS = {"p50_ms": 50.0, "p95_ms": 95.0, "p99_ms": 99.0, "p999_ms": 99.9}
BOOTSTRAP_SAMPLES = 400
BOOTSTRAP_MAX_ROWS = 50_000


def _ok_per_second(run: Run, cell: int) -> np.ndarray:
    frame, measured = run.measured(cell)
    done = frame.ints("done_ns")[measured & frame.isin("status", ["ok"])]
    if done.size == 0:
        return np.zeros(1)
    sec = (done - done.min()) // 1_000_000_000
    return np.bincount(sec.astype(np.int64))


def _boot_percentile(values: np.ndarray, q: float, rng: np.random.Generator) -> np.ndarray:
    if values.size > BOOTSTRAP_MAX_ROWS:
        values = rng.choice(values, BOOTSTRAP_MAX_ROWS, replace=False)
    samples = rng.choice(values, size=(BOOTSTRAP_SAMPLES, values.size), replace=True)
    return np.percentile(samples, q, axis=1)


def _boot_mean(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(values, size=(BOOTSTRAP_SAMPLES, values.size), replace=True).mean(axis=1)


def _check_metric(metric: str) -> None:
    if metric not in (*LATENCY_METRICS, "achieved_qps"):
        raise UsageError(f"--metric {metric}: use one of {', '.join([*LATENCY_METRICS, 'achieved_qps'])}")


def speedup(base: Run, cand: Run, cell: int, metric: str, seed: int = 0) -> dict:
    """Point estimate and bootstrap 95% CI of the candidate's speedup on one metric of one cell."""
    rng = np.random.default_rng(seed)
    if metric in LATENCY_METRICS:
        q = LATENCY_METRICS[metric]
        b, c = base.latencies_ms(cell), cand.latencies_ms(cell)
        if b.size == 0 or c.size == 0:
            return {"point": float("nan"), "low": float("nan"), "high": float("nan")}
        point = np.percentile(b, q) / np.percentile(c, q)
        ratios = _boot_percentile(b, q, rng) / _boot_percentile(c, q, rng)
    elif metric == "achieved_qps":
        b, c = _ok_per_second(base, cell), _ok_per_second(cand, cell)
        point = c.mean() / b.mean() if b.mean() else float("nan")
        ratios = _boot_mean(c, rng) / np.maximum(_boot_mean(b, rng), 1e-12)
    else:
        _check_metric(metric)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return {"point": float(point), "low": float(low), "high": float(high)}


def match_cells(base: Run, cand: Run) -> list[tuple[list[dict], list[dict]]]:
    """Pairs of (baseline rows, candidate rows) per grid cell (its repeats), checked to be the same cell."""
    if not base.summary or not cand.summary:
        raise UsageError("both runs need a summary.parquet (did they run any cell?)")
    b_groups, c_groups = by_base(base.summary), by_base(cand.summary)
    if len(b_groups) != len(c_groups):
        raise UsageError(f"the runs' cells don't match: {len(b_groups)} cells in {base.path}, "
                         f"{len(c_groups)} in {cand.path}")
    pairs = []
    for (_, b), (_, c) in zip(sorted(b_groups.items()), sorted(c_groups.items()), strict=True):
        for key in GRID_KEYS:
            if b[0].get(key) != c[0].get(key):
                raise UsageError(f"the runs' cells don't match: cell {b[0]['cell']} has {key}={b[0].get(key)!r} in "
                                 f"the baseline and {c[0].get(key)!r} in the candidate")
        pairs.append((b, c))
    return pairs


def compare(baseline: Path, candidate: Path, metric: str = "p99_ms", min_speedup: float = 1.5,
            confidence: float = 0.95) -> tuple[Path, list]:
    """Write candidate/comparison.md; return it and one verdict per grid cell."""
    _check_metric(metric)
    base, cand = open_run(baseline), open_run(candidate)
    if base.manifest.get("run_id") == cand.manifest.get("run_id"):
        # a run against itself (or its copy) always reads 1.00x: no comparison at all
        raise UsageError(f"{candidate}: the same run as the baseline {baseline} (run_id "
                         f"{cand.manifest.get('run_id')!r}); compare two runs")
    rows = []
    for b, c in match_cells(base, cand):
        repeats = min(len(b), len(c))
        if repeats >= 2:
            s = between_runs([r[metric] for r in b], [r[metric] for r in c], metric == "achieved_qps", confidence)
            method = f"between runs ({len(b)} vs {len(c)} repeats)"
        else:
            s = speedup(base, cand, b[0]["cell"], metric)
            method = "within one run (ignores run-to-run noise)"
        if metric in TAIL_METRICS and repeats < MIN_REPEATS:
            verdict = f"no verdict (a tail percentile needs >= {MIN_REPEATS} repeats a side)"
        elif s["low"] >= min_speedup:
            verdict = "meets"
        elif s["high"] < 1.0:
            verdict = "REGRESSION"
        else:
            verdict = "below target"
        shifts = quantile_shifts(np.concatenate([base.latencies_ms(r["cell"]) for r in b]),
                                 np.concatenate([cand.latencies_ms(r["cell"]) for r in c]))
        rows.append({"cell": b[0].get("base_cell", b[0]["cell"]), "baseline": _mean_row(b), "candidate": _mean_row(c),
                     **s, "method": method, "verdict": verdict, "distribution": shifts})
    path = Path(candidate) / "comparison.md"
    path.write_text(render(base, cand, rows, metric, min_speedup))
    return path, rows


def _mean_row(rows: list[dict]) -> dict:
    """A grid cell's figures over its repeats (means)."""
    out = dict(rows[0])
    for key in ("p50_ms", "p99_ms", "achieved_qps"):
        out[key] = float(np.mean([r[key] for r in rows]))
    return out


def render(base: Run, cand: Run, rows: list[dict], metric: str, min_speedup: float) -> str:
    lines = [f"# Comparison: {cand.manifest.get('run_id')} vs baseline {base.manifest.get('run_id')}", "",
             f"Speedup on **{metric}** (> 1: the candidate is better) with its interval: between runs (Welch t on the "
             "log of the metric over each run's repeats) when both ran `--repeat`, else a bootstrap over one run's "
             "request rows, which ignores run-to-run noise (identical runs moved p99 2-3x on a shared VM), so a tail "
             f"percentile then gets no verdict. Verdict against a minimum speedup of {min_speedup:g}x (the interval's "
             "lower bound must reach it); figures are means over repeats.", "",
             "| cell | GPUs | target QPS | baseline p50 / p99 ms | candidate p50 / p99 ms | baseline QPS | "
             "candidate QPS | speedup | interval | from | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b, c = r["baseline"], r["candidate"]
        lines.append(
            f"| {r['cell']} | {b['n_gpus']} | {b['target_qps']:,.0f} | {b['p50_ms']:.3g} / {b['p99_ms']:.3g} | "
            f"{c['p50_ms']:.3g} / {c['p99_ms']:.3g} | {b['achieved_qps']:,.0f} | {c['achieved_qps']:,.0f} | "
            f"{r['point']:.2f}x | {r['low']:.2f}–{r['high']:.2f} | {r['method']} | {r['verdict']} |")
    regressions = [r["cell"] for r in rows if r["verdict"] == "REGRESSION"]
    lines += ["", f"Regressions (candidate significantly worse): {', '.join(map(str, regressions)) or 'none'}."]
    lines += distribution_section([(r["cell"], r["distribution"]) for r in rows])
    for run, name in ((base, "baseline"), (cand, "candidate")):
        if run.manifest.get("gpus", {}).get("simulated"):
            lines.append(f"The {name} ran on simulated GPUs.")
    return "\n".join(lines) + "\n"
