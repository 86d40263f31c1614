"""Micro-batching in front of a vector stage: many client threads' single searches become one search call
per window, as a coordinator in front of GPU search does (one Ray call per request does not scale)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from perfray.backends.base import stack_windows


@dataclass
class _Ticket:
    queries: np.ndarray
    k: int
    windows: np.ndarray | None = None  # filter windows per query row, when the cell filters
    done: threading.Event = field(default_factory=threading.Event)
    ids: np.ndarray | None = None
    error: BaseException | None = None


class MicroBatcher:
    """``search(queries, k)`` blocks the calling thread until its rows are answered; a dispatcher thread
    sends whatever arrived within ``window_s`` of the first waiting request (at most ``batch_max`` query
    rows) as one call. One batch is in flight at a time."""

    def __init__(self, search, window_s: float, batch_max: int) -> None:
        self._search, self.window_s, self.batch_max = search, window_s, batch_max
        self._cond = threading.Condition()
        self._pending: list[_Ticket] = []
        self._closed = False
        self.calls = self.rows = 0
        self._thread = threading.Thread(target=self._run, name="perfray-vector-batcher", daemon=True)
        self._thread.start()

    def search(self, queries: np.ndarray, k: int, windows: np.ndarray | None = None) -> np.ndarray:
        ticket = _Ticket(np.ascontiguousarray(queries, dtype=np.float32), int(k), windows)
        with self._cond:
            if self._closed:
                raise RuntimeError("the vector batcher is closed")
            self._pending.append(ticket)
            self._cond.notify()
        ticket.done.wait()
        if ticket.error is not None:
            raise ticket.error
        return ticket.ids

    def _take(self) -> list[_Ticket] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None
            deadline = time.monotonic() + self.window_s
            while sum(t.queries.shape[0] for t in self._pending) < self.batch_max:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            batch, rows = [], 0
            while self._pending and (not batch or rows + self._pending[0].queries.shape[0] <= self.batch_max):
                ticket = self._pending.pop(0)
                batch.append(ticket)
                rows += ticket.queries.shape[0]
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            k = max(t.k for t in batch)
            windows = stack_windows([(t.queries.shape[0], t.windows) for t in batch])
            try:
                queries = np.concatenate([t.queries for t in batch])
                ids = self._search(queries, k) if windows is None else self._search(queries, k, windows)
            except BaseException as err:  # every waiting request gets the call's error
                for t in batch:
                    t.error = err
                    t.done.set()
                continue
            self.calls += 1
            offset = 0
            for t in batch:  # rows are sorted by distance: the first t.k of a larger k are its top-k
                n = t.queries.shape[0]
                t.ids = ids[offset:offset + n, : t.k]
                offset += n
                self.rows += n
                t.done.set()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(5)
