"""The open-loop load generator: sends each micro-batch when the schedule says, whatever came back.

Latency is measured from the *intended* send time, so a stalled target shows up as queueing delay in every
request that was due during the stall (no coordinated omission). Overflow beyond ``max_in_flight`` becomes
``dropped`` rows; nothing scheduled is ever skipped. The sending itself (pacing, replies, timeouts) is
callback-driven, in ``perfray.load.sending``: no task, future or timer per request.
"""

from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass, field

import numpy as np

from perfray.load.pacer import Pacer
from perfray.load.profiles import OpSpec, assign_ops, query_rows
from perfray.load.recorder import Recorder
from perfray.load.schedules import PhaseRates, arrival_offsets_ns, write_schedule
from perfray.load.sending import CellSender, callback_target
from perfray.timing import Clock, process_clock

SCORE_SLICE = 256  # replies scored per loop turn while draining (~0.3 ms)


@dataclass(frozen=True)
class QueryPool:
    """Query vectors a load actor draws from, with exact ground truth when recall is wanted."""

    queries: np.ndarray
    gt_ids: np.ndarray | None = None
    gt_dists: np.ndarray | None = None
    filters: np.ndarray | None = None  # (n_pool, 2) filter windows per row (perfray.data.filters), or None


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
    trace: np.ndarray | None = None  # a trace: arrival's recorded offsets (s), read by the driver
    query_skew: str = "uniform"  # which pool rows are asked: uniform or zipf:<s>
    write_rate: float = 0.0  # load.writes.rate: writes per second across the actors
    writes: object | None = None  # the cell's ``perfray.data.writes.WriteSet`` when it writes
    cpu: int | None = None  # the CPU this actor's generator is pinned to (cluster.generator_cpus), None: any


def op_table(plan: CellPlan) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(name, k, queries per request) per op index: the plan's read ops, then its write kind (k 0, one item)."""
    names = [o.name for o in plan.ops]
    k = [o.k for o in plan.ops]
    n_queries = [o.n_queries for o in plan.ops]
    if plan.writes is not None:
        names, k, n_queries = [*names, plan.writes.kind], [*k, 0], [*n_queries, 1]
    return names, np.array(k, dtype=np.int32), np.array(n_queries, dtype=np.int32)


def plan_requests(plan: CellPlan, n_pool: int):
    """This actor's share of the cell's schedule: (seq, intended_ns, phase, op, query_start).

    The whole cell is generated from one seed and dealt round-robin, so the union over actors is exactly the
    configured arrival process. Writes (``plan.writes``) are merged in by time, with op index ``len(plan.ops)``
    and the write's index in the cell's ``WriteSet`` as their query_start."""
    rng = np.random.default_rng(np.random.SeedSequence([plan.seed, plan.cell]))
    offsets, phase = arrival_offsets_ns(plan.phases, plan.arrival, rng, plan.trace)
    op = assign_ops(offsets.size, plan.ops, rng)
    query_start = query_rows(offsets.size, n_pool, plan.query_skew, rng)
    if plan.writes is not None:
        w_offsets, w_phase = write_schedule(plan.phases, plan.write_rate, plan.seed, plan.cell)
        if w_offsets.size != len(plan.writes):
            raise ValueError(f"the cell's write set holds {len(plan.writes)} writes, its schedule {w_offsets.size}")
        order = np.argsort(np.concatenate([offsets, w_offsets]), kind="stable")
        offsets = np.concatenate([offsets, w_offsets])[order]
        phase = np.concatenate([phase, w_phase])[order]
        op = np.concatenate([op, np.full(w_offsets.size, len(plan.ops), dtype=op.dtype)])[order]
        query_start = np.concatenate([query_start, np.arange(w_offsets.size, dtype=query_start.dtype)])[order]
    mine = slice(plan.actor, None, plan.n_actors)
    seq = np.arange(offsets.size, dtype=np.int64)[mine]
    return seq, plan.start_unix_ns + offsets[mine], phase[mine], op[mine], query_start[mine]


def lost_rows(plan: CellPlan, n_pool: int, recorded_seq: np.ndarray, error: str):
    """Rows for this actor's share of the cell that it never reported (it died): status ``lost``, the error
    class that ended it, no sent or done time. Returns a record batch, or None when nothing is missing."""
    seq, intended, phase, op, _ = plan_requests(plan, n_pool)
    missing = ~np.isin(seq, recorded_seq)
    if not missing.any():
        return None
    op_names, op_k, op_q = op_table(plan)
    rec = Recorder(plan.cell, plan.actor, seq[missing], intended[missing], phase[missing], op[missing], op_k, op_q,
                   [p.name for p in plan.phases], op_names)
    rec.finish(0, len(rec), "lost", error=error)
    return rec.drain()


class LoadGenerator:
    """Plain class (no Ray): a Ray actor wraps it; tests and the GPU box call it directly."""

    def __init__(self, actor: int = 0, clock: Clock | None = None) -> None:
        self.actor = actor
        self.clock = clock or process_clock()
        self.recorder: Recorder | None = None
        self._sender: CellSender | None = None
        self._batch_seq = 0
        Recorder.warm_up()

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return self._sender.in_flight if self._sender is not None else 0

    def drain(self):
        """Finished rows since the last call, as an Arrow record batch (or None)."""
        return self.recorder.drain() if self.recorder is not None else None

    async def drain_rows(self):
        """Finished rows since the last call as plain columns (``DrainedRows``, or None), for a generator that
        is sending: replies are scored in slices with the loop's turn in between, and the Arrow batch is left to
        the caller, so a drain never holds the pacer up for long."""
        rec = self.recorder
        if rec is None:
            return None
        while rec.score(SCORE_SLICE):
            await asyncio.sleep(0)
        return rec.drain_rows()

    async def run_cell(self, plan: CellPlan, pool: QueryPool, target) -> dict:
        """Send this actor's share of the cell to ``target``; returns once every row is final."""
        seq, intended, phase, op, qstart = plan_requests(plan, pool.queries.shape[0])
        op_names, op_k, op_q = op_table(plan)
        rec = Recorder(plan.cell, plan.actor, seq, intended, phase, op, op_k, op_q,
                       [p.name for p in plan.phases], op_names)
        rec.score_against(pool.gt_ids, pool.gt_dists, ignore=plan.writes.touched if plan.writes is not None else None)
        rec.visibility_ns = plan.writes.visibility_ns if plan.writes is not None else 0
        self.recorder = rec
        loop = asyncio.get_running_loop()
        pacer = Pacer(loop)
        sender = self._sender = CellSender(rec, qstart, pool, callback_target(target, self.clock), pacer, self.clock,
                                           plan, first_batch_id=self._batch_seq)
        # A full collection walks every object of the process (a Ray worker holds millions): tens of ms in
        # which nothing is sent or stamped. Objects older than the cell are frozen out of the collector's walks.
        gc.collect()
        gc.freeze()
        try:
            await sender.run()
        finally:
            gc.unfreeze()
            pacer.close()
            self._batch_seq = sender.next_batch_id
        late = sender.lateness_ns if sender.batches else np.zeros(1, dtype=np.int64)
        stats = {"actor": plan.actor, "cell": plan.cell, "requests": len(rec), **rec.counts,
                 "batches": sender.batches, "event_loop": type(loop).__module__.split(".")[0],
                 "pacer": pacer.kind, "generator_lateness_p50_ns": int(np.percentile(late, 50)),
                 "generator_lateness_p99_ns": int(np.percentile(late, 99)), "generator_lateness_max_ns": int(late.max())}
        if sender.handoffs:
            handoff = sender.handoff_ns
            stats["client_handoff_p50_ns"] = int(np.percentile(handoff, 50))
            stats["client_handoff_p99_ns"] = int(np.percentile(handoff, 99))
        return stats
