"""The open-loop load generator: sends each micro-batch when the schedule says, whatever came back.

Latency is measured from the *intended* send time, so a stalled target shows up as queueing delay in every
request that was due during the stall (no coordinated omission). Overflow beyond ``max_in_flight`` becomes
``dropped`` rows; nothing scheduled is ever skipped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from perfray.data.groundtruth import recall as recall_of
from perfray.load.profiles import OpSpec, assign_ops
from perfray.load.recorder import Recorder
from perfray.load.schedules import PhaseRates, arrival_offsets_ns
from perfray.timing import Clock


@dataclass(frozen=True)
class QueryPool:
    """Query vectors a load actor draws from, with exact ground truth when recall is wanted."""

    queries: np.ndarray
    gt_ids: np.ndarray | None = None
    gt_dists: np.ndarray | None = None


@dataclass(frozen=True)
class CellPlan:
    """Everything one load actor needs to run its share of a cell."""

    cell: int
    actor: int
    n_actors: int
    start_unix_ns: int
    phases: list[PhaseRates]
    arrival: str
    ops: list[OpSpec]
    seed: int
    batch_window_ns: int
    batch_max: int
    max_in_flight: int
    timeout_ns: int
    extra: dict = field(default_factory=dict)


def plan_requests(plan: CellPlan, n_pool: int):
    """This actor's share of the cell's schedule: (seq, intended_ns, phase, op, query_start).

    The whole cell is generated from one seed and dealt round-robin, so the union over actors is exactly the
    configured arrival process."""
    rng = np.random.default_rng(np.random.SeedSequence([plan.seed, plan.cell]))
    offsets, phase = arrival_offsets_ns(plan.phases, plan.arrival, rng)
    op = assign_ops(offsets.size, plan.ops, rng)
    query_start = rng.integers(0, n_pool, size=offsets.size)
    mine = slice(plan.actor, None, plan.n_actors)
    seq = np.arange(offsets.size, dtype=np.int64)[mine]
    return seq, plan.start_unix_ns + offsets[mine], phase[mine], op[mine], query_start[mine]


class LoadGenerator:
    """Plain class (no Ray): a Ray actor wraps it; tests and the GPU box call it directly."""

    def __init__(self, actor: int = 0, clock: Clock | None = None) -> None:
        self.actor = actor
        self.clock = clock or Clock()
        self.recorder: Recorder | None = None
        self._batch_seq = 0
        self._in_flight = {"requests": 0}
        Recorder.warm_up()

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return self._in_flight["requests"]

    def drain(self):
        """Finished rows since the last call, as an Arrow record batch (or None)."""
        return self.recorder.drain() if self.recorder is not None else None

    async def run_cell(self, plan: CellPlan, pool: QueryPool, target) -> dict:
        """Send this actor's share of the cell to ``target``; returns once every row is final."""
        seq, intended, phase, op, qstart = plan_requests(plan, pool.queries.shape[0])
        op_k = np.array([o.k for o in plan.ops], dtype=np.int32)
        op_q = np.array([o.n_queries for o in plan.ops], dtype=np.int32)
        rec = Recorder(plan.cell, plan.actor, seq, intended, phase, op, op_k, op_q,
                       [p.name for p in plan.phases], [o.name for o in plan.ops])
        self.recorder = rec
        nq = rec.n_queries
        cum_queries = np.cumsum(nq, dtype=np.int64)
        n = len(rec)
        in_flight = self._in_flight = {"requests": 0}
        tasks: set[asyncio.Task] = set()
        lateness_ns: list[int] = []  # sent - batch due: the generator's own lateness, per batch
        i = 0
        while i < n:
            a = i
            before = cum_queries[a] - nq[a]
            by_size = max(a + 1, int(np.searchsorted(cum_queries, before + plan.batch_max, side="right")))
            by_window = int(np.searchsorted(intended, intended[a] + plan.batch_window_ns, side="right"))
            b = min(n, by_size, by_window)
            due = int(intended[b - 1]) if b == by_size and by_size <= by_window else int(
                intended[a] + plan.batch_window_ns)
            # Prepare the batch before its due time, so waking up is followed only by stamp-and-send.
            q_index = _query_rows(qstart[a:b], nq[a:b], pool.queries.shape[0])
            queries = pool.queries[q_index]
            k_max = int(rec.k[a:b].max())
            await self.clock.wait_until(due)
            i = b
            if in_flight["requests"] + (b - a) > plan.max_in_flight:
                rec.finish(a, b, "dropped")
                continue
            sent = self.clock.now_ns()
            batch_id = self._batch_seq
            self._batch_seq += 1
            rec.sent(a, b, sent, batch_id, q_index.size)
            lateness_ns.append(sent - due)
            try:
                reply = target.submit(queries, k_max, q_index)  # leaves now; the reply is awaited below
            except Exception as exc:
                rec.finish(a, b, "error", done_ns=self.clock.now_ns(), error=type(exc).__name__)
                continue
            in_flight["requests"] += b - a
            task = asyncio.ensure_future(self._complete(rec, a, b, reply, q_index, pool, plan.timeout_ns,
                                                        in_flight))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*list(tasks))
        late = np.asarray(lateness_ns or [0], dtype=np.int64)
        return {"actor": plan.actor, "cell": plan.cell, "requests": n, **rec.counts, "batches": len(lateness_ns),
                "generator_lateness_p99_ns": int(np.percentile(late, 99)), "generator_lateness_max_ns": int(late.max())}

    async def _complete(self, rec: Recorder, a: int, b: int, reply, q_index: np.ndarray, pool: QueryPool,
                        timeout_ns: int, in_flight: dict) -> None:
        try:
            # asyncio.timeout (not wait_for) adds no extra task per batch.
            async with asyncio.timeout(timeout_ns / 1e9):
                result = await reply
        except TimeoutError:
            rec.finish(a, b, "timeout", done_ns=self.clock.now_ns())
        except Exception as exc:  # every failure becomes error rows with the error class
            rec.finish(a, b, "error", done_ns=self.clock.now_ns(), error=type(exc).__name__)
        else:
            done = self.clock.now_ns()
            if result is None:
                rec.finish(a, b, "ok", done_ns=done)
            else:
                ids, _dists, endpoint, *extra = result  # a multi-store system adds its stage spans
                stages = extra[0] if extra else None  # this reply's own dict: popping is safe
                if stages and "done_ns" in stages:  # stamped by the client around the real call
                    done = min(done, stages.pop("done_ns"))
                    rec.started(a, b, stages.pop("sent_ns"))
                recall = None if ids is None else _request_recall(rec, a, b, ids, q_index, pool)
                rec.finish(a, b, "ok", done_ns=done, endpoint=endpoint, recall=recall, stages=stages)
        finally:
            in_flight["requests"] -= b - a


def _query_rows(starts: np.ndarray, counts: np.ndarray, n_pool: int) -> np.ndarray:
    """Pool rows for a batch: each request takes ``count`` consecutive queries from its start."""
    if (counts == 1).all():
        return starts.astype(np.int64)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return (np.repeat(starts, counts) + np.arange(counts.sum()) - first) % n_pool


def _request_recall(rec: Recorder, a: int, b: int, ids: np.ndarray, q_index: np.ndarray, pool: QueryPool):
    if pool.gt_ids is None:
        return None
    counts = rec.n_queries[a:b]
    ks = rec.k[a:b]
    per_query_k = np.repeat(ks, counts)
    per_query = np.empty(q_index.size, dtype=np.float64)
    for k in np.unique(per_query_k):
        rows = per_query_k == k
        per_query[rows] = recall_of(ids[rows], pool.gt_ids[q_index[rows]], pool.gt_dists[q_index[rows]], int(k))
    starts = np.cumsum(counts) - counts
    return (np.add.reduceat(per_query, starts) / counts).astype(np.float32)
