"""Sending one actor's share of a cell: pace, send, record, time out — all in loop callbacks.

The hot path per request is: wake (a ``Pacer`` timer for the whole group of due requests), stamp, record,
hand the bytes to the target; the reply is a callback that stamps and records. There is no coroutine,
future or timer handle per request: timeouts come from one deadline queue (sends are in time order, so
deadlines are too), checked by one loop timer.

Targets speak one protocol: ``send(queries, k, rows, reply) -> handle | None`` starts a request now and later
calls ``reply(result=..., error=..., sent_ns=..., done_ns=...)`` once; ``handle.cancel()`` (when given) gives
up on it. ``result`` is None or ``(ids, dists, endpoint[, stages])``; ``sent_ns``/``done_ns`` are the target's
own stamps when it has better ones (e.g. bytes written / first reply bytes read). Targets that only offer
``submit(queries, k, rows) -> awaitable`` are adapted by ``callback_target``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque

import numpy as np

from perfray.load.writing import write_and_probe
from perfray.schema import STATUS_CODE

PENDING = STATUS_CODE["pending"]
# The pacer's timer is armed this long before a request is due, and a gap this short is spun, not slept: a
# sleeping loop takes tens of microseconds to wake (more on a VM), which would otherwise be every request's
# lateness. Kept short, because a spinning generator takes the core a co-located system needs: measured at
# 5,000 req/s (benchmarks/results/http_sweep-2026-11-29.txt) 20 µs gave lateness p50 2-3 µs / p99 44-60 µs at
# 42-49 µs CPU per request, against 1 / 12-62 µs at 71-78 µs for 50 µs (no spin: 23-25 / 90-111 µs at 53-61 µs);
# at 20,000 req/s a 50 µs spin never slept, starved the local server and dropped 95% of the requests. A loop that
# slept long wakes slower (~50 µs at 200 req/s, where a 20 µs lead made sends ~30 µs late), and there a longer spin
# costs next to nothing: a wait longer than IDLE_GAP_NS arms SPIN_IDLE_NS ahead.
SPIN_NS, SPIN_IDLE_NS, IDLE_GAP_NS = 20_000, 60_000, 1_000_000
# Requests sent per wake before the loop gets a turn for replies, when the generator is behind.
MAX_SENDS_PER_WAKE = 256


class CellSender:
    """Sends the rows of ``rec`` to ``target`` at their intended times; ``await run()`` until all are final."""

    def __init__(self, rec, query_start: np.ndarray, pool, target, pacer, clock, plan,
                 first_batch_id: int = 0) -> None:
        self.rec, self.pool, self.target, self.pacer, self.clock, self.plan = rec, pool, target, pacer, clock, plan
        self.loop = pacer.loop
        self.n = len(rec)
        # A target whose request is on its way when ``send`` returns (``starts_on_send``: bytes written, or an
        # eagerly started client call) gets the pacer re-armed at once; for one that starts on the loop's next
        # turn (a task, a thread) the re-arm (a syscall) waits a turn, so the request starts first. A turn per
        # request costs ~2 µs of CPU (measured at 5,000 req/s on the http path: 48 -> 46 µs per request).
        self._defer_arm = not getattr(target, "starts_on_send", False)
        # Arrays, not lists: a 10-minute cell at 7,000 QPS is 4.2M requests (34 MB a column as int64, ~150 MB as
        # Python ints); reading one element per request costs ~0.1 µs.
        self.due_perf = rec.intended_ns - clock.offset_ns
        self.qstart = np.asarray(query_start, dtype=np.int64)
        self._single_query = bool((rec.n_queries == 1).all())
        # load.writes: rows whose op is the write kind go to ``target.write`` one by one, never in a read batch
        self.writes = getattr(plan, "writes", None)
        self._is_write = rec.op == len(plan.ops) if self.writes is not None else None
        if self._is_write is not None:
            self._next_write = np.flatnonzero(self._is_write)
        self.per_request = plan.batch_window_ns <= 0 or plan.batch_max <= int(rec.n_queries.min(initial=1))
        if not self.per_request:
            self._cum_queries = np.cumsum(rec.n_queries, dtype=np.int64)
        self.next_batch_id = first_batch_id
        self.in_flight = 0
        self._lateness = np.full(self.n, 0, dtype=np.int64)  # per batch (at most one per request); pages touched now
        self.batches = 0
        self._handoff = np.full(self.n, 0, dtype=np.int64)  # per reply with the client's own sent stamp
        self.handoffs = 0
        self._next = 0  # first request not yet sent
        self._batch = None  # (a, b, due_perf) of the next batch, once computed
        self._deadlines: deque = deque()
        self._timeout_handle = None
        self._all_sent = False
        self._finished: asyncio.Future | None = None

    # ------------------------------------------------------------------------------------------ driving
    async def run(self) -> None:
        self._finished = self.loop.create_future()
        self._guard(self._wake)
        try:
            await self._finished
        finally:
            if self._timeout_handle is not None:
                self._timeout_handle.cancel()

    def _guard(self, fn, *args, **kwargs) -> None:
        """Run a callback; a bug in it ends ``run()`` with the exception instead of hanging the cell."""
        try:
            fn(*args, **kwargs)
        except BaseException as err:  # surfaced through run()
            if self._finished is not None and not self._finished.done():
                self._finished.set_exception(err)

    def _on_timer(self) -> None:
        self._guard(self._wake)

    def _wake(self) -> None:
        perf = time.perf_counter_ns
        sends = 0
        while self._next < self.n:
            a, b, due = self._batch or self._next_batch()
            now = perf()
            if now < due:
                if due - now > SPIN_NS:
                    self._batch = (a, b, due)
                    if sends and self._defer_arm:  # what was just sent starts first (on the loop's next turn)
                        self.loop.call_soon(self._on_timer)
                    else:
                        self.pacer.arm(due - (SPIN_IDLE_NS if due - now > IDLE_GAP_NS else SPIN_NS), self._on_timer)
                    return
                while perf() < due:
                    pass
            elif sends >= MAX_SENDS_PER_WAKE:  # behind schedule: let replies in, then carry on at once
                self._batch = (a, b, due)
                self.loop.call_soon(self._on_timer)
                return
            self._batch = None
            self._next = b
            self._send(a, b, due)
            sends += 1
        self._all_sent = True
        self._maybe_finished()

    def _next_batch(self) -> tuple[int, int, int]:
        """The next micro-batch from ``self._next``: requests within the window, at most ``batch_max`` queries;
        due when full or when the window closes."""
        a = self._next
        if self.per_request or (self._is_write is not None and self._is_write[a]):
            return a, a + 1, int(self.due_perf[a])
        plan, cum, intended = self.plan, self._cum_queries, self.rec.intended_ns
        before = int(cum[a]) - int(self.rec.n_queries[a])
        by_size = max(a + 1, int(np.searchsorted(cum, before + plan.batch_max, side="right")))
        by_window = int(np.searchsorted(intended, intended[a] + plan.batch_window_ns, side="right"))
        b = min(self.n, by_size, by_window)
        if self._is_write is not None:  # a batch of reads ends before the next write
            at = int(np.searchsorted(self._next_write, a))
            if at < self._next_write.size and self._next_write[at] < b:
                return a, int(self._next_write[at]), int(self.due_perf[a]) + plan.batch_window_ns
        if b == by_size and by_size <= by_window:
            return a, b, int(self.due_perf[b - 1])
        return a, b, int(self.due_perf[a]) + plan.batch_window_ns

    # ------------------------------------------------------------------------------------------ sending
    def _send(self, a: int, b: int, due_perf: int) -> None:
        rec = self.rec
        if self.in_flight + (b - a) > self.plan.max_in_flight:
            rec.finish(a, b, "dropped")
            return
        if self._is_write is not None and self._is_write[a]:
            self._send_write(a, due_perf)
            return
        if b == a + 1 and self._single_query:
            row = int(self.qstart[a])
            rows = self.qstart[a:b]
            queries = self.pool.queries[row:row + 1]
            k = int(rec.k[a])
        else:
            rows = _query_rows(self.qstart[a:b], rec.n_queries[a:b], self.pool.queries.shape[0])
            queries = self.pool.queries[rows]
            k = int(rec.k[a:b].max())
        sent = self._stamp_sent(a, b, due_perf, rows.size)
        try:
            handle = self.target.send(queries, k, rows, functools.partial(self._guard, self._replied, a, b, rows))
        except Exception as exc:
            self._settle(a, b, "error", self.clock.now_ns(), error=type(exc).__name__)
            return
        self._await_reply(a, b, sent, handle)

    def _send_write(self, a: int, due_perf: int) -> None:
        """Write ``qstart[a]`` of the cell's ``WriteSet``: ``target.write(writes, j, reply)``, replied like a read
        (no ids; a probed write's reply carries ``freshness_ns``)."""
        sent = self._stamp_sent(a, a + 1, due_perf, 1)
        try:
            handle = self.target.write(self.writes, int(self.qstart[a]),
                                       functools.partial(self._guard, self._write_replied, a))
        except Exception as exc:
            self._settle(a, a + 1, "error", self.clock.now_ns(), error=type(exc).__name__)
            return
        self._await_reply(a, a + 1, sent, handle)

    def _write_replied(self, a: int, **reply) -> None:
        """A delete's acknowledgement is kept: reads sent after it (plus the store's visibility delay) must not
        return the item (``Recorder.deleted``)."""
        if self.writes.kind == "delete" and reply.get("error") is None and self.rec.status[a] == PENDING:
            self.rec.deleted(int(self.writes.ids[self.qstart[a]]), reply.get("done_ns") or self.clock.now_ns())
        self._replied(a, a + 1, None, **reply)

    def _stamp_sent(self, a: int, b: int, due_perf: int, n_queries: int) -> int:
        sent = self.clock.now_ns()
        self.rec.sent(a, b, sent, self.next_batch_id, n_queries)
        self.next_batch_id += 1
        self._lateness[self.batches] = sent - self.clock.offset_ns - due_perf
        self.batches += 1
        self.in_flight += b - a
        return sent

    def _await_reply(self, a: int, b: int, sent: int, handle) -> None:
        """Keep the request's deadline, unless it was answered synchronously."""
        rec = self.rec
        if rec.status[a] != PENDING:
            return
        deadlines, status = self._deadlines, rec.status
        # Settled requests leave from the front as new ones join at the back, so the queue (and every reply
        # handle it keeps alive) stays about as long as what is in flight: no long-lived object per request
        # for the garbage collector to walk, however long the timeout.
        while deadlines and status[deadlines[0][1]] != PENDING:
            deadlines.popleft()
        deadlines.append((sent + self.plan.timeout_ns, a, b, handle))
        if self._timeout_handle is None:
            self._arm_timeouts()

    def _replied(self, a: int, b: int, rows, result=None, error=None, sent_ns=None, done_ns=None,
                 freshness_ns=None) -> None:
        rec = self.rec
        if rec.status[a] != PENDING:  # timed out already
            return
        done = done_ns or self.clock.now_ns()
        if done - int(rec.sent_ns[a]) > self.plan.timeout_ns:  # the reply beat the timeout check, not the limit
            self._settle(a, b, "timeout", int(rec.sent_ns[a]) + self.plan.timeout_ns)
            return
        if error is not None:
            self._settle(a, b, "error", done, error=error if isinstance(error, str) else type(error).__name__,
                         endpoint=getattr(error, "perfray_endpoint", -1))
            return
        if sent_ns:
            self._handoff[self.handoffs] = sent_ns - int(rec.sent_ns[a])
            self.handoffs += 1
            rec.started(a, b, sent_ns)
        if result is None:
            self._settle(a, b, "ok", done, freshness_ns=freshness_ns)
            return
        ids, _dists, endpoint, *extra = result
        self._settle(a, b, "ok", done, endpoint=endpoint, stages=extra[0] if extra else None, found_ids=ids,
                     q_index=rows)

    @property
    def lateness_ns(self) -> np.ndarray:
        """The generator's own lateness per batch sent: sent − due."""
        return self._lateness[: self.batches]

    @property
    def handoff_ns(self) -> np.ndarray:
        """Per reply whose client stamped its own start: that start − the generator's send (the hand-off to
        the client, and any wait for a free connection)."""
        return self._handoff[: self.handoffs]

    def _settle(self, a: int, b: int, status: str, done_ns: int, **row) -> None:
        self.rec.finish(a, b, status, done_ns=done_ns, **row)
        self.in_flight -= b - a
        self._maybe_finished()

    # ------------------------------------------------------------------------------------------ timeouts
    def _arm_timeouts(self) -> None:
        self._timeout_handle = None
        if self._deadlines:
            delay_ns = self._deadlines[0][0] - self.clock.now_ns()
            self._timeout_handle = self.loop.call_later(max(delay_ns, 0) / 1e9, self._on_timeouts)

    def _on_timeouts(self) -> None:
        self._guard(self._expire)

    def _expire(self) -> None:
        now = self.clock.now_ns()
        deadlines, status = self._deadlines, self.rec.status
        while deadlines:
            deadline, a, b, handle = deadlines[0]
            if status[a] == PENDING:
                if deadline > now:
                    break
                self._settle(a, b, "timeout", deadline)
                if handle is not None:
                    handle.cancel()
            deadlines.popleft()
        self._arm_timeouts()

    def _maybe_finished(self) -> None:
        if self._all_sent and self.in_flight == 0 and self._finished is not None and not self._finished.done():
            self._finished.set_result(None)


class _AwaitableTarget:
    """``send`` over a target that offers ``submit(queries, k, rows) -> awaitable``."""

    def __init__(self, target, clock) -> None:
        self.target, self.clock = target, clock

    def send(self, queries, k, rows, reply):
        future = asyncio.ensure_future(self._stamped(self.target.submit(queries, k, rows)))
        future.add_done_callback(functools.partial(self._settled, reply))
        return future

    async def _stamped(self, awaitable):
        """The reply's stamp is taken the moment it resolves, inside the same task step (a done-callback runs
        one loop turn later)."""
        try:
            result = await awaitable
        except Exception as err:
            return None, err, self.clock.now_ns()
        return result, None, self.clock.now_ns()

    def write(self, writes, j: int, reply):
        """A write of ``load.writes`` (and its probes) through the target's ``write_async`` / ``shows_async``."""
        future = asyncio.ensure_future(write_and_probe(self.target, writes, j))
        future.add_done_callback(functools.partial(self._written, reply))
        return future

    def _written(self, reply, future) -> None:
        if future.cancelled():
            return
        if future.exception() is not None:
            reply(error=future.exception(), done_ns=self.clock.now_ns())
        else:
            reply(**future.result())

    def _settled(self, reply, future) -> None:
        if future.cancelled():
            return
        result, error, done_ns = future.result()
        if error is not None:
            reply(error=error, done_ns=done_ns)
        else:
            reply(result=result, done_ns=done_ns)


def callback_target(target, clock):
    """``target`` itself when it speaks ``send``; otherwise its ``submit`` adapted."""
    return target if callable(getattr(target, "send", None)) else _AwaitableTarget(target, clock)


def _query_rows(starts: np.ndarray, counts: np.ndarray, n_pool: int) -> np.ndarray:
    """Pool rows for a batch: each request takes ``count`` consecutive queries from its start."""
    if (counts == 1).all():
        return starts.astype(np.int64)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return (np.repeat(starts, counts) + np.arange(counts.sum()) - first) % n_pool
