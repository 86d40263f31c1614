"""Time to compute the full per-cell summary (and the report figures) for 10 million request rows read from
Parquet, side by side with a straightforward pandas groupby computing the same percentiles and rates.

    python benchmarks/analysis.py [--rows 10000000] [--cells 10] [--no-figures]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from perfray.analysis.summary import summarize_cell
from perfray.load.recorder import Recorder
from perfray.results.frame import CellFrame
from perfray.results.writer import RequestWriter


def write_rows(run_dir: Path, rows: int, cells: int) -> None:
    rng = np.random.default_rng(0)
    writer = RequestWriter(run_dir)
    per_cell = rows // cells
    for cell in range(cells):
        intended = 1_795_000_000_000_000_000 + np.cumsum(rng.exponential(1e5, per_cell)).astype(np.int64)
        rec = Recorder(cell, 0, np.arange(per_cell), intended, (np.arange(per_cell) > per_cell // 10).astype(np.int16),
                       rng.integers(0, 3, per_cell).astype(np.int16), np.array([10, 50, 10]), np.array([1, 1, 8]),
                       ["warmup", "sustained"], ["knn_k10_q1", "knn_k50_q1", "knn_k10_q8"])
        latency = rng.lognormal(np.log(2e6), 0.5, per_cell).astype(np.int64)
        step = 100_000
        for a in range(0, per_cell, step):
            b = min(per_cell, a + step)
            rec.sent(a, b, int(intended[a]), a // 64, b - a)
            rec.finish(a, b, "ok", done_ns=int(intended[b - 1] + latency[a]), endpoint=0,
                       recall=np.ones(b - a, np.float32))
            writer.write(cell, 0, rec.drain())
        writer.close_cell(cell)


def ours(run_dir: Path, cells: int) -> list[dict]:
    out = []
    for cell in range(cells):
        rows = CellFrame.read(run_dir, cell)  # as the driver reads a cell: a column at a time
        meta = {"cell": cell, "target_qps": 10_000.0, "measured_phases": ["sustained"], "measured_s": 100.0,
                "window_end_ns": 2**62, "labels": {}}
        out.append(summarize_cell(rows, meta))
    return out


def pandas_baseline(run_dir: Path) -> object:
    df = pq.read_table(run_dir / "requests").to_pandas()
    df = df[df["phase"] == "sustained"]
    timed = df[df["status"].isin(["ok", "timeout"])]
    g = timed.groupby("cell")
    quant = g["latency_ns"].quantile([0.5, 0.95, 0.99, 0.999]).unstack() / 1e6
    rates = df.groupby("cell")["status"].value_counts(normalize=True).unstack(fill_value=0)
    extra = g.agg(max_ms=("latency_ns", "max"), mean_ms=("latency_ns", "mean"), recall=("recall", "mean"),
                  lag_p99=("schedule_lag_ns", lambda s: s.quantile(0.99)),
                  service_p99=("service_ns", lambda s: s.quantile(0.99)))
    return quant.join(rates).join(extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--cells", type=int, default=10)
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        (run_dir / "requests").mkdir()
        t0 = time.perf_counter()
        write_rows(run_dir, args.rows, args.cells)
        print(f"wrote {args.rows:,} rows in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        summary = ours(run_dir, args.cells)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        baseline = pandas_baseline(run_dir)
        t_pandas = time.perf_counter() - t0
        assert np.allclose([s["p99_ms"] for s in summary], baseline[0.99].to_numpy(), rtol=1e-6)
        print(f"summary of {args.rows:,} rows: perfray {t_ours:.2f} s vs pandas groupby {t_pandas:.2f} s "
              f"({t_pandas / t_ours:.1f}x); goal <= 3 s -> {'met' if t_ours <= 3 else 'missed'}")
        if not args.no_figures:
            from perfray.analysis import figures
            from perfray.analysis.runs import Run

            cells = [{"cell": c, "status": "complete",
                      "workload": {"load": {"phases": [{"name": "warmup", "duration_s": 1, "measured": False},
                                                       {"name": "sustained", "duration_s": 1}]}}}
                     for c in range(args.cells)]
            for s in summary:
                s.update(n_gpus=1, target_qps=10_000.0, topology="replicated")
            run = Run(run_dir, {"cells": cells}, summary)
            t0 = time.perf_counter()
            for fig in figures.ALL:
                fig(run, run_dir)
            print(f"figures for {args.rows:,} rows: {time.perf_counter() - t0:.1f} s")
    print("rerun: python benchmarks/analysis.py")


if __name__ == "__main__":
    main()
