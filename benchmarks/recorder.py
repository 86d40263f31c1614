"""Per-row bookkeeping cost on the hot path: perfray's Recorder (preallocated columns, scalar writes for single
rows, Arrow batches on drain) vs the usual alternative (a dict per request, ``pa.Table.from_pylist`` on drain),
side by side in one process, for the per-request path and for 8-request micro-batches.

    python benchmarks/recorder.py [--rows 200000] [--drain-every 4000]

Cost = (time to stamp sent + finish every row + drain every ``--drain-every`` rows) / rows. Goal: <= 2 µs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from perfray.load.recorder import Recorder


def ours(n: int, drain_every: int, batch: int) -> float:
    rec = Recorder(0, 0, np.arange(n), np.arange(n, dtype=np.int64) * 1000, np.zeros(n, np.int16),
                   np.zeros(n, np.int16), np.array([10]), np.array([1]), ["s"], ["o"])
    order = np.random.default_rng(0).permutation(n // batch).tolist()  # replies come back out of order
    started = time.perf_counter_ns()
    for count, j in enumerate(order, 1):
        a = j * batch
        rec.sent(a, a + batch, a * 1000 + 50, j, batch)
        rec.finish(a, a + batch, "ok", done_ns=a * 1000 + 90_000, endpoint=0)
        if count * batch % drain_every == 0:
            rec.drain()
    rec.drain()
    return (time.perf_counter_ns() - started) / n / 1e3


def naive(n: int, drain_every: int, batch: int) -> float:
    rows: list[dict] = []
    order = np.random.default_rng(0).permutation(n // batch).tolist()
    started = time.perf_counter_ns()
    for count, j in enumerate(order, 1):
        for i in range(j * batch, (j + 1) * batch):
            intended = i * 1000
            rows.append({"seq": i, "status": "ok", "intended_ns": intended, "sent_ns": intended + 50,
                         "done_ns": intended + 90_000, "latency_ns": 90_000, "service_ns": 89_950,
                         "schedule_lag_ns": 50, "batch_id": j, "batch_size": batch, "endpoint": 0})
        if count * batch % drain_every == 0:
            pa.Table.from_pylist(rows)
            rows = []
    pa.Table.from_pylist(rows)
    return (time.perf_counter_ns() - started) / n / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--drain-every", type=int, default=4000)
    args = parser.parse_args()
    Recorder.warm_up()
    print(f"{args.rows:,} rows, drained every {args.drain_every:,}, replies out of order\n")
    print(f"{'path':<26} {'perfray µs/row':>14} {'dict rows µs/row':>16} {'ratio':>6}")
    for batch, name in ((1, "per request"), (8, "8-request micro-batches")):
        a = min(ours(args.rows, args.drain_every, batch) for _ in range(3))
        b = min(naive(args.rows, args.drain_every, batch) for _ in range(3))
        print(f"{name:<26} {a:>14.2f} {b:>16.2f} {b / a:>5.1f}x")
    print("\ngoal: perfray <= 2 µs per row amortised; rerun: python benchmarks/recorder.py")


if __name__ == "__main__":
    main()
