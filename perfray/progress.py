"""A live line per cell: elapsed, achieved QPS, p99 so far, errors and drops (rich; plain when not a tty).

Elapsed counts from the cell's first scheduled send; the QPS is the ok completions per second of the last line's
interval up to the start of the latest drain (rows done before it have all arrived), by the rows' own done
times. Counting rows gathered since the cell was set up read ~330 QPS for a 500 QPS cell 2 s in: the start lead
and the rows still on the load actors (up to a drain interval) counted as time without completions."""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import pyarrow.compute as pc
from rich.console import Console

from perfray.redact import redact

# The live line's "p99 so far" comes from a log-bucketed histogram (1 µs … 100 s, ~1.9% wide buckets): fixed
# memory and work per batch. Keeping every latency of the cell grew the driver 8 B a request and re-sorted all of
# them every line.
_EDGES_NS = np.geomspace(1e3, 1e11, 1001)
_TICK_NS = 100_000_000  # done times are counted per 100 ms
_SPAN_S = 3600  # ... over the cell's first hour (later completions share the last slot: the rate reads "-")


class Progress:
    """Prints cell progress to stderr; never used for reported figures."""

    def __init__(self, enabled: bool = True, every_s: float = 2.0) -> None:
        self.console = Console(stderr=True, highlight=False)
        self.enabled = enabled
        self.every_s = every_s

    def cell_started(self, cell: int, total: int, label: str, duration_s: float, start_unix_ns: int | None = None
                     ) -> None:
        """``start_unix_ns``: the cell's first scheduled send (default: now)."""
        self.cell, self.total, self.label, self.duration_s = cell, total, label, duration_s
        self.start_ns = time.time_ns() if start_unix_ns is None else start_unix_ns
        self._last = time.monotonic()
        self._mark_ns = self.start_ns
        self.histogram = np.zeros(_EDGES_NS.size + 1, dtype=np.int64)
        self.done = np.zeros(_SPAN_S * 1_000_000_000 // _TICK_NS + 1, dtype=np.int64)
        self.ok = self.errors = self.dropped = 0
        self._say(f"[bold]cell {cell + 1}/{total}[/bold] {label}")

    def rows(self, batch) -> None:
        status = pc.cast(batch.column("status"), "string").to_numpy(zero_copy_only=False)
        self.ok += int((status == "ok").sum())
        self.errors += int(((status == "error") | (status == "timeout")).sum())
        self.dropped += int((status == "dropped").sum())
        if not self.enabled:
            return
        ok = status == "ok"
        lat = batch.column("latency_ns").to_numpy(zero_copy_only=False)[ok]
        self.histogram += np.bincount(np.searchsorted(_EDGES_NS, lat), minlength=self.histogram.size)
        done = batch.column("done_ns").to_numpy(zero_copy_only=False)[ok]
        if done.size:
            ticks = np.clip((done - self.start_ns) // _TICK_NS, 0, self.done.size - 1).astype(np.int64)
            first = int(ticks.min())
            counts = np.bincount(ticks - first)  # the batch's span only, not the whole hour
            self.done[first:first + counts.size] += counts

    def drain_started(self, at_unix_ns: int) -> None:
        """A drain of every live load actor begins: the rows done before ``at_unix_ns`` are those it brings."""
        self._mark_ns = at_unix_ns

    def drain_finished(self) -> None:
        """Print the line when its interval has passed."""
        if self.enabled and time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            self._say("  " + self._line())

    def cell_finished(self, row: dict) -> None:
        self._say(f"  done: {row['achieved_qps']:,.0f} QPS (target {row['target_qps']:,.0f}) | "
                  f"p50 {row['p50_ms']:.2f} ms p99 {row['p99_ms']:.2f} ms | failed {row['failure_rate']:.2%} "
                  f"(errors {row['error_rate']:.2%}, drops {row['drop_rate']:.2%}, lost {row['lost_rate']:.2%}) | "
                  f"recall {row['recall_mean']:.4f}{' | ' + row['status'] if row['status'] != 'complete' else ''}")

    def note(self, text: str) -> None:
        self._say(text)

    @contextmanager
    def counter(self, description: str, total: int):
        """A progress bar; yields ``advance(n)``."""
        if not self.enabled:
            yield lambda n: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        with Bar("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                 console=self.console) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)

    def _line(self) -> str:
        elapsed = (time.time_ns() - self.start_ns) / 1e9
        p99 = f"{self.p99_ms():.2f} ms" if self.histogram.sum() else "-"
        qps = self.qps()
        return (f"{elapsed:5.1f}/{self.duration_s:.1f} s | ~{'-' if qps is None else format(qps, ',.0f')} QPS | "
                f"p99 so far {p99} | errors {self.errors} | dropped {self.dropped}")

    def qps(self) -> float | None:
        """ok completions per second over the last ``every_s`` before the latest drain's start (None before the
        first send or past the counted span)."""
        end = (self._mark_ns - self.start_ns) // _TICK_NS
        if end <= 0 or end >= self.done.size - 1:
            return None
        begin = max(0, end - int(self.every_s * 1e9) // _TICK_NS)
        return float(self.done[begin:end].sum()) / ((end - begin) * _TICK_NS / 1e9)

    def p99_ms(self) -> float:
        """p99 of the ok latencies so far, to the histogram's bucket (the upper edge of the bucket holding it)."""
        cumulative = np.cumsum(self.histogram)
        bucket = int(np.searchsorted(cumulative, 0.99 * cumulative[-1]))
        return float(_EDGES_NS[min(bucket, _EDGES_NS.size - 1)]) / 1e6

    def _say(self, text: str) -> None:
        if self.enabled:
            self.console.print(redact(text))
