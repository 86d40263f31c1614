"""Server-side (GPU actor) and client-side (load actor) coalescing of micro-batches: fewer calls, and every
caller still gets exactly its own top-k."""

import asyncio

import numpy as np
import pytest

from perfray.load.targets import CoalescingEndpoint
from perfray.sut.gpu_search import GpuSearchWorker, SearchCoalescer


@pytest.fixture(scope="module")
def worker():
    rng = np.random.default_rng(5)
    w = GpuSearchWorker("numpy")
    w.build(rng.standard_normal((3000, 16)).astype(np.float32))
    return w, rng.standard_normal((64, 16)).astype(np.float32)


def test_calls_queued_behind_a_search_are_answered_by_one_search_each_with_its_own_top_k(worker):
    w, queries = worker
    coalescer = SearchCoalescer(w.search)
    batches = [(queries[i * 4:(i + 1) * 4], 5 + i % 3) for i in range(16)]

    async def main():
        return await asyncio.gather(*(coalescer.search(q, k) for q, k in batches))

    answers = asyncio.run(main())
    assert coalescer.searches < len(batches)
    for (q, k), (ids, dists) in zip(batches, answers, strict=True):
        want_ids, want_dists = w.search(q, k)
        assert np.array_equal(ids, want_ids) and np.allclose(dists, want_dists)

    def broken(q, k, windows=None):
        raise MemoryError("out of device memory")

    async def failing():
        bad = SearchCoalescer(broken)
        return await asyncio.gather(*(bad.search(q, k) for q, k in batches[:3]), return_exceptions=True)

    assert all(isinstance(e, MemoryError) for e in asyncio.run(failing()))


class SlowEndpoint:
    """Answers exact kNN after 20 ms; counts calls."""

    fatal_errors = ()

    def __init__(self, w):
        self.w, self.calls, self.rows = w, 0, 0

    def submit(self, queries, k, rows=None):
        self.calls += 1
        self.rows += len(queries)
        return self._reply(queries, k)

    async def _reply(self, queries, k):
        await asyncio.sleep(0.02)
        return self.w.search(queries, k)


def test_client_side_coalescing_keeps_two_calls_in_flight_and_splits_replies_exactly(worker):
    w, queries = worker
    slow = SlowEndpoint(w)
    endpoint = CoalescingEndpoint(slow, max_calls=2)
    batches = [(queries[i * 2:(i + 1) * 2], 3 + i % 4) for i in range(32)]

    async def main():
        answers = []
        for q, k in batches:  # a batch every ~1 ms: many arrive during each 20 ms call
            answers.append(endpoint.submit(q, k))
            await asyncio.sleep(0.0005)
        given_up = endpoint.submit(queries[:2], 3)
        given_up.cancel()  # a timed-out batch: its rows are never sent
        return await asyncio.gather(*answers)

    answers = asyncio.run(main())
    assert slow.calls <= len(batches) // 4
    assert slow.rows == sum(len(q) for q, _ in batches)  # the cancelled batch never went
    for (q, k), (ids, dists) in zip(batches, answers, strict=True):
        want_ids, want_dists = w.search(q, k)
        assert np.array_equal(ids, want_ids) and np.allclose(dists, want_dists)


def test_each_answer_carries_its_own_searchs_queue_and_search_times():
    """A search actor (its body, without Ray) simulating 20 ms per query: three calls that arrive together are one
    search of 3 queries (~60 ms each, no queue); the call after them gets its own span, not the last one's."""
    from perfray.cluster.actors import GpuSearchActorBody

    rng = np.random.default_rng(2)
    body = GpuSearchActorBody("numpy")
    body.build(rng.standard_normal((500, 8)).astype(np.float32))
    queries = rng.standard_normal((4, 8)).astype(np.float32)

    async def main():
        await body.simulate_service(20.0)
        together = await asyncio.gather(*(body.search(queries[i:i + 1], 3) for i in range(3)))
        alone = await body.search(queries[3:4], 3)
        return together, alone

    together, alone = asyncio.run(main())
    spans = [answer[2] for answer in together]
    assert len({s["vector_ns"] for s in spans}) == 1 and 55e6 <= spans[0]["vector_ns"] <= 200e6  # one search
    assert all(s["queue_ns"] < 5e6 for s in spans)
    assert alone[2]["vector_ns"] >= 18e6 and alone[2]["vector_ns"] <= 100e6  # one query: its own search, not 60 ms
    assert [len(a[0]) for a in (*together, alone)] == [1, 1, 1, 1]
