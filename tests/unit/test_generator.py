import asyncio
import os

import numpy as np
import pyarrow.compute as pc
import pytest
from support import NoopTarget, ServiceTimeTarget, make_plan, run_plan

from perfray.errors import UsageError
from perfray.load.host import pin_to
from perfray.timing import Clock


def statuses(table):
    return pc.cast(table["status"], "string").to_numpy(zero_copy_only=False)


def test_every_scheduled_request_appears_exactly_once_across_actors():
    rate, duration = 800, 2.0
    tables = [run_plan(make_plan(rate, duration, arrival="poisson", actor=i, n_actors=3), NoopTarget())[0]
              for i in range(3)]
    seq = np.concatenate([t["seq"].to_numpy() for t in tables])
    assert np.array_equal(np.sort(seq), np.arange(seq.size))
    assert abs(seq.size - rate * duration) / (rate * duration) < 0.05  # Poisson count, 1,600 expected
    const = run_plan(make_plan(rate, duration), NoopTarget())[0]
    assert abs(const.num_rows - rate * duration) <= 0.01 * rate * duration
    assert (statuses(const) == "ok").all()


def test_known_2ms_service_time_measures_p50_within_5_percent():
    """A 2 ms target, one request at a time (300/s): perfray's latency is the target's own reply stamp minus the
    intended time, to within 5% at the median and 0.1 ms for nearly every request. (The target's timer may
    overshoot 2 ms on a busy VM: that is the truth, not perfray's error.)"""
    target = ServiceTimeTarget(2.0)
    table, _ = run_plan(make_plan(300, 3.0, lead_s=1.0), target)  # set-up (gc, warm-up) before the first due
    order = np.argsort(table["seq"].to_numpy())
    latency = table["latency_ns"].to_numpy()[order].astype(np.float64)
    truth = np.array(target.replied_ns, dtype=np.float64) - table["intended_ns"].to_numpy()[order]
    assert np.median(latency) == pytest.approx(np.median(truth), rel=0.05)
    assert np.median(latency) / 1e6 == pytest.approx(2.0, rel=0.2)  # and it is a ~2 ms target
    assert np.percentile(np.abs(latency - truth), 95) < 100_000
    service_ms = table["service_ns"].to_numpy() / 1e6
    assert (service_ms >= 2.0).all()


class StallingServer:
    """One request at a time, 0.5 ms each; the first request after ``stall_at_ns`` takes 200 ms more."""

    def __init__(self, stall_at_ns: int) -> None:
        self.clock = Clock()
        self.lock = asyncio.Lock()
        self.stall_at_ns = stall_at_ns
        self.stalled_window = None

    def submit(self, queries, k, rows=None):
        return self._serve()

    async def _serve(self):
        async with self.lock:
            now = self.clock.now_ns()
            if self.stalled_window is None and now >= self.stall_at_ns:
                await self.clock.wait_until(now + 200_000_000)
                self.stalled_window = (now, self.clock.now_ns())
            await self.clock.wait_until(self.clock.now_ns() + 500_000)
        return None


def test_stall_shows_as_queueing_delay_not_missing_requests():
    """The coordinated-omission test: requests due during a 200 ms stall are sent on time and their
    latency (from the intended time) includes the wait for the stall to end."""
    plan = make_plan(500, 2.0)
    server = StallingServer(plan.start_unix_ns + 800_000_000)
    table, _ = run_plan(plan, server)
    assert table.num_rows == 1000 and (statuses(table) == "ok").all()
    stall_start, stall_end = server.stalled_window
    intended = table["intended_ns"].to_numpy()
    latency = table["latency_ns"].to_numpy()
    during = (intended > stall_start) & (intended < stall_end)
    assert during.sum() == pytest.approx(100, abs=3)  # 500 QPS x 200 ms: all recorded
    # each waited at least until the stall ended
    assert (latency[during] >= (stall_end - intended[during]) - 100_000).all()
    assert np.percentile(latency / 1e6, 99) > 100  # the tail tells the truth
    sent_lag = table["schedule_lag_ns"].to_numpy()[during]
    assert np.percentile(sent_lag, 50) < 1_000_000  # open loop: still sent on schedule


def test_concurrency_cap_turns_overflow_into_dropped_rows():
    plan = make_plan(1000, 1.0, max_in_flight=5)
    table, stats = run_plan(plan, ServiceTimeTarget(50.0))
    s = statuses(table)
    assert table.num_rows == 1000
    assert (s == "dropped").sum() > 500 and (s == "ok").sum() > 50
    dropped = s == "dropped"
    assert table["sent_ns"].null_count == dropped.sum() and table["latency_ns"].null_count == dropped.sum()
    assert stats["dropped"] == dropped.sum()


def test_timeouts_and_errors_become_rows_with_their_class():
    table, _ = run_plan(make_plan(200, 0.5, timeout_ms=20), ServiceTimeTarget(100.0))
    assert (statuses(table) == "timeout").all()
    assert np.median(table["latency_ns"].to_numpy() / 1e6) == pytest.approx(20, abs=5)

    class Broken:
        def submit(self, queries, k, rows=None):
            return self._fail()

        async def _fail(self):
            raise ConnectionResetError("peer went away")

    table, _ = run_plan(make_plan(200, 0.5), Broken())
    assert (statuses(table) == "error").all()
    assert set(pc.cast(table["error"], "string").to_pylist()) == {"ConnectionResetError"}


def test_micro_batches_respect_window_and_max():
    table, _ = run_plan(make_plan(4000, 1.0, window_ns=2_000_000, batch_max=5), NoopTarget())
    sizes = table["batch_size"].to_numpy()
    assert sizes.max() <= 5 and sizes.mean() > 3
    by_batch = {}
    for bid, t in zip(table["batch_id"].to_numpy(), table["intended_ns"].to_numpy(), strict=True):
        by_batch.setdefault(bid, []).append(t)
    assert max(max(v) - min(v) for v in by_batch.values()) <= 2_000_000
    lag = table["schedule_lag_ns"].to_numpy()
    assert np.percentile(lag, 50) < 3_000_000  # waits at most the window (+ generator lateness)


def test_drain_hands_out_each_row_once():
    from support import LoadGenerator, QueryPool

    gen = LoadGenerator(0)
    plan = make_plan(1000, 1.0)

    async def run_and_drain():
        task = asyncio.ensure_future(gen.run_cell(plan, QueryPool(np.zeros((4, 4), np.float32)), NoopTarget()))
        batches = []
        while not task.done():
            await asyncio.sleep(0.2)
            batches.append(gen.drain())
        await task
        batches.append(gen.drain())
        return [b for b in batches if b is not None]

    batches = asyncio.run(run_and_drain())
    assert len(batches) >= 3
    seq = np.concatenate([b.column("seq").to_numpy() for b in batches])
    assert np.array_equal(np.sort(seq), np.arange(1000))


class _SlowAsyncSystem:
    """An async-native client whose every request takes 20 ms on the loop; it notes how many run at once."""

    async_native = True

    def __init__(self) -> None:
        self.clock, self.running, self.most, self.started = Clock(), 0, 0, []

    async def execute_async(self, queries, k, rows):
        from perfray.sut.base import Answer

        self.running += 1
        self.most = max(self.most, self.running)
        self.started.append(int(rows[0]))
        sent = self.clock.now_ns()
        try:
            await asyncio.sleep(0.02)
        finally:
            self.running -= 1
        return Answer(sent_ns=sent, done_ns=self.clock.now_ns())


def test_async_client_path_runs_at_most_concurrency_requests_and_queues_the_rest():
    """One request per pooled connection at a time: the rest wait in order at the endpoint, and that wait is
    schedule lag, not service time."""
    from perfray.load.generator import QueryPool
    from perfray.load.targets import SystemEndpoint

    system = _SlowAsyncSystem()
    endpoint = SystemEndpoint(system, 2)
    pool = QueryPool(np.zeros((200, 4), dtype=np.float32))
    table, stats = run_plan(make_plan(500, 0.2, timeout_ms=5000), endpoint, pool)  # 5x what 2 slots serve
    assert endpoint.mode == "async" and system.most == 2 and len(system.started) == 100
    rows = table.to_pandas()
    assert (rows.status == "ok").all() and len(rows) == 100
    assert rows.service_ns.median() < 30e6 and rows.schedule_lag_ns.max() > 100e6  # the wait is lag
    assert stats["client_handoff_p99_ns"] > 100e6


def test_a_request_given_up_while_waiting_for_a_slot_is_never_started():
    from perfray.load.targets import SystemEndpoint

    system = _SlowAsyncSystem()
    endpoint = SystemEndpoint(system, 1)
    replies = []

    async def go():
        q = np.zeros((1, 4), dtype=np.float32)
        for row in (1, 2, 3):
            handle = endpoint.send(q, 10, np.array([row]), lambda **r: replies.append(r))
            if row == 2:
                handle.cancel()  # what a timeout does
        await asyncio.sleep(0.1)

    asyncio.run(go())
    assert system.started == [1, 3] and system.most == 1 and len(replies) == 2


def test_a_dead_actors_unreported_share_becomes_lost_rows():
    """What the driver writes for a load actor that died: exactly its share of the schedule that it never
    reported, each at its intended time, status lost, with the error class that ended the actor."""
    from perfray.load.generator import lost_rows, plan_requests

    plan = make_plan(200, 1.0, actor=1, n_actors=2)
    seq = plan_requests(plan, 16)[0]
    reported = seq[: seq.size // 3]
    batch = lost_rows(plan, 16, reported, "ActorDiedError")
    rows = batch.to_pandas()
    assert sorted(rows.seq) == sorted(set(seq) - set(reported)) and (rows.actor == 1).all()
    assert (rows.status == "lost").all() and (rows.error == "ActorDiedError").all()
    assert rows.done_ns.isna().all() and rows.sent_ns.isna().all() and rows.intended_ns.notna().all()
    assert lost_rows(plan, 16, seq, "ActorDiedError") is None


def test_a_generator_pinned_to_a_cpu_the_node_lacks_is_one_line_and_changes_nothing():
    before = os.sched_getaffinity(0)
    with pytest.raises(UsageError, match=r"^cluster.generator_cpus: cannot pin a load generator to CPU 4099 ") as err:
        pin_to(4099)
    assert "\n" not in str(err.value) and os.sched_getaffinity(0) == before
    assert pin_to(None) == sorted(before)


class _AnsweringAtOnce:
    """A target that speaks ``send`` and replies synchronously: its request is done when ``send`` returns."""

    def __init__(self, starts_on_send: bool) -> None:
        self.starts_on_send = starts_on_send

    def send(self, queries, k, rows, reply):
        reply()
        return None


@pytest.mark.parametrize("starts_on_send", [True, False])
def test_the_pacer_is_re_armed_at_once_for_a_target_whose_request_left_in_send(monkeypatch, starts_on_send):
    """After a send to a target whose request is on its way when ``send`` returns, the sender re-arms its pacer at
    once; a target that starts on the loop's next turn gets that turn first: one extra wake per request, which the
    pacer did not cause (wakes minus arms; how often the pacer itself fires depends on the box's wake-up latency)."""
    from perfray.load.pacer import Pacer
    from perfray.load.sending import CellSender

    counts = {"wakes": 0, "arms": 0}
    on_timer, arm = CellSender._on_timer, Pacer.arm

    def counted_wake(self):
        counts["wakes"] += 1
        on_timer(self)

    def counted_arm(self, due, callback):
        counts["arms"] += 1
        arm(self, due, callback)

    monkeypatch.setattr(CellSender, "_on_timer", counted_wake)
    monkeypatch.setattr(Pacer, "arm", counted_arm)
    table, _ = run_plan(make_plan(400, 0.5), _AnsweringAtOnce(starts_on_send))
    assert table.num_rows == 200 and (statuses(table) == "ok").all()
    not_by_the_pacer = counts["wakes"] - counts["arms"]
    # deferred: about one extra wake per request, fewer when the box wakes the pacer late and one wake sends two
    # (CI saw < 180 of 200 once, in the full suite); re-armed at once: none, whatever the box
    assert (not_by_the_pacer <= 2) if starts_on_send else (not_by_the_pacer >= 100)
