"""Writes while searching: the writes' own seeded schedule merged into a cell's (reads unchanged), the write set
each actor and the driver derive, writes never batched with reads, and recall over the items no write touched."""

import asyncio
import dataclasses

import numpy as np
import pytest
from support import make_plan, run_plan

from perfray.config import SyntheticDataset, load_config
from perfray.data import load_dataset
from perfray.data.groundtruth import recall, stable_truth
from perfray.data.writes import cell_writes
from perfray.load.generator import plan_requests
from perfray.load.schedules import PhaseRates, write_schedule
from perfray.traffic_config import WriteSpec


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(SyntheticDataset(n=500, dim=8, n_queries=20, clusters=4, seed=5))


def _writing(plan, dataset, rate, kind="insert", sample=5):
    offsets, _ = write_schedule(plan.phases, rate, plan.seed, plan.cell)
    writes = cell_writes(dataset, WriteSpec(rate=rate, kind=kind, freshness_sample=sample), offsets.size, plan.seed,
                         plan.cell)
    return dataclasses.replace(plan, write_rate=rate, writes=writes)


def test_writes_join_the_schedule_at_their_rate_and_leave_the_reads_as_they_were(dataset):
    phases = [PhaseRates("warmup", 1.0, 300, 300, False), PhaseRates("sustained", 4.0, 300, 300, True)]
    plan = make_plan(300, 5.0, arrival="poisson", phases=phases)
    reads = plan_requests(plan, 20)
    written = _writing(plan, dataset, 50)
    seq, intended, phase, op, start = plan_requests(written, 20)
    is_write = op == len(plan.ops)
    assert is_write.sum() == 50 * 5 and (phase[is_write] == 0).sum() == 50  # exactly rate x duration per phase
    assert np.array_equal(np.sort(start[is_write]), np.arange(250))  # write j of the write set, each once
    assert np.array_equal(intended[~is_write], reads[1]) and np.array_equal(start[~is_write], reads[4])
    assert (np.diff(intended) >= 0).all() and np.array_equal(seq, np.arange(seq.size))
    gaps = np.diff(np.sort(intended[is_write])) / 1e9
    assert 0.8 < gaps.std() / gaps.mean() < 1.2  # Poisson: coefficient of variation ~1
    dealt = [plan_requests(dataclasses.replace(written, actor=i, n_actors=3), 20) for i in range(3)]
    assert np.array_equal(np.sort(np.concatenate([d[0] for d in dealt])), seq)  # round-robin, nothing twice
    again = plan_requests(_writing(plan, dataset, 50), 20)
    assert all(np.array_equal(a, b) for a, b in zip(again, (seq, intended, phase, op, start), strict=True))


def test_a_write_set_is_seeded_and_says_what_each_write_touches(dataset):
    spec = WriteSpec(rate=10, kind="insert", freshness_sample=4)
    inserts = cell_writes(dataset, spec, 30, seed=1, cell=2)
    assert inserts.ids.tolist() == list(range(500, 530)) and inserts.vectors.shape == (30, 8)
    assert np.flatnonzero(inserts.probe).tolist() == [0, 10, 19, 29]  # spread over the cell
    nearest = ((dataset.base[None, :, :] - inserts.vectors[:, None, :]) ** 2).sum(-1).min(1)
    assert (nearest > 0).all()  # new points: no base item sits exactly where an insert goes
    deletes = cell_writes(dataset, spec.model_copy(update={"kind": "delete"}), 30, seed=1, cell=2)
    assert np.unique(deletes.ids).size == 30 and deletes.ids.max() < 500
    assert np.array_equal(deletes.vectors, dataset.base[deletes.ids])  # what a delete's probe searches at
    assert np.array_equal(deletes.touched, np.sort(deletes.ids))
    again = cell_writes(dataset, spec.model_copy(update={"kind": "delete"}), 30, seed=1, cell=2)
    assert np.array_equal(again.ids, deletes.ids)
    assert not np.array_equal(cell_writes(dataset, spec.model_copy(update={"kind": "delete"}), 30, 1, 3).ids,
                              deletes.ids)
    with pytest.raises(ValueError, match="600 upserts in one cell, but the dataset has 500 items"):
        cell_writes(dataset, spec.model_copy(update={"kind": "upsert"}), 600, seed=1, cell=2)


class _Recording:
    """Answers reads and writes at once and keeps what each call carried."""

    def __init__(self) -> None:
        self.reads, self.writes = [], []

    def send(self, queries, k, rows, reply):
        self.reads.append(len(rows))
        reply(result=(np.zeros((len(rows), k), dtype=np.int64), None, 0))

    def write(self, writes, j, reply):
        self.writes.append(j)
        reply(sent_ns=None, done_ns=None, freshness_ns=1234 if writes.probe[j] else None)


def test_writes_go_to_the_target_one_by_one_and_never_in_a_read_batch(dataset):
    plan = _writing(make_plan(2000, 1.0, arrival="poisson", window_ns=5_000_000, batch_max=64), dataset, 200)
    target = _Recording()
    table, _ = run_plan(plan, target)
    rows = table.to_pandas()
    writes = rows[rows.op == "insert"]
    assert len(writes) == 200 and sorted(target.writes) == list(range(200))
    assert (writes.batch_size == 1).all() and (writes.k == 0).all() and (writes.status == "ok").all()
    assert writes.freshness_ns.notna().sum() == 5 and (writes.freshness_ns.dropna() == 1234).all()
    reads = rows[rows.op != "insert"]
    assert len(reads) == 2000 and sum(target.reads) == 2000 and reads.batch_size.max() > 1
    assert not set(writes.batch_id) & set(reads.batch_id)


def test_recall_with_writes_counts_only_the_items_no_write_touched():
    gt_ids = np.array([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]])
    gt_dists = np.arange(12, dtype=np.float64).reshape(2, 6)
    touched = np.array([2, 9, 10, 11, 500])
    ids, dists, depth = stable_truth(gt_ids, gt_dists, touched)
    assert ids.tolist() == [[1, 3, 4, 5, 6, -1], [7, 8, 12, -1, -1, -1]] and depth.tolist() == [5, 3]
    assert np.isinf(dists[0, 5]) and dists[1].tolist()[:3] == [6, 7, 11]
    # a reply with a new item (500) and a touched one (2) is scored on its other ids: the truth's first two
    found = np.array([[500, 1, 2, 3]])
    assert recall(found, ids[:1], dists[:1], 4, ignore=touched).tolist() == [1.0]
    assert recall(found, ids[:1], dists[:1], 4).tolist() == [0.5]  # without: the writes look like misses
    assert recall(np.array([[500, 1, 2, 6]]), ids[:1], dists[:1], 4, ignore=touched).tolist() == [0.5]  # 6 is 4th


def test_writes_are_validated_in_one_line():
    with pytest.raises(Exception, match="kind"):
        load_config(None, ["system=pgvector", "load.writes={rate: 10, kind: truncate}"])
    cell = load_config(None, ["system=pgvector", "load.writes={rate: 25, kind: upsert}"]).cells()[0]
    assert (cell.load.writes.rate, cell.load.writes.kind, cell.load.writes.freshness_sample) == (25, "upsert", 20)


@pytest.mark.parametrize(("topology", "kind"), [("replicated", "insert"), ("sharded", "upsert"),
                                                ("replicated", "delete"), ("sharded", "delete")])
def test_search_workers_apply_writes_on_every_replica_or_the_owning_shard(dataset, topology, kind):
    """The default path without Ray: numpy workers behind a router. Every write acknowledged is shown by the
    next search (freshness from the first probe), reads keep exact recall over the untouched items, a deleted
    item is never returned once its delete is acknowledged, and a reset gives the dataset back."""
    from perfray.data.filters import item_attr
    from perfray.data.groundtruth import ground_truth
    from perfray.load.generator import QueryPool
    from perfray.load.targets import ThreadEndpoint, make_router
    from perfray.sut.gpu_search import GpuSearchWorker

    workers = [GpuSearchWorker("numpy") for _ in range(2)]
    for i, w in enumerate(workers):
        w.build(dataset.base, *((i, 2) if topology == "sharded" else (0, 1)), attr=item_attr(dataset))
    gt_ids, gt_dists = ground_truth(dataset, 10, None)
    plan = _writing(make_plan(400, 1.5, arrival="poisson", window_ns=2_000_000, batch_max=16), dataset, 80, kind, 8)
    router = make_router(topology, [ThreadEndpoint(w) for w in workers])
    table, _ = run_plan(plan, router, QueryPool(dataset.queries, gt_ids, gt_dists))
    rows = table.to_pandas()
    writes, reads = rows[rows.op == kind], rows[rows.op != kind]
    assert len(writes) == 120 and (writes.status == "ok").all() and (reads.status == "ok").all()
    assert (reads.recall == 1.0).all()
    fresh = writes.freshness_ns.dropna()
    assert len(fresh) == 8 and (fresh >= 0).all()
    # the state the writes left: each written vector found (or, deleted, gone) on every path to it
    ids = asyncio.run(_search(router, plan.writes.vectors))[:, 0]
    if kind == "delete":
        assert not np.isin(ids, plan.writes.ids).any()
    else:
        assert np.array_equal(ids, plan.writes.ids)
    per_write = (2 if kind == "upsert" else 1) * (2 if topology == "replicated" else 1)  # mask + delta, replicas
    assert sum(w.reset_writes() for w in workers) == 120 * per_write
    after = asyncio.run(_search(router, dataset.base[plan.writes.ids[plan.writes.ids < dataset.n]]))[:, 0]
    assert np.array_equal(after, plan.writes.ids[plan.writes.ids < dataset.n])  # back where they were


async def _search(router, vectors):
    ids, *_ = await router.submit(np.ascontiguousarray(vectors, dtype=np.float32), 1)
    return ids


class _Forgetful(_Recording):
    """A store that acknowledges deletes but keeps answering with the items it was told to delete."""

    def __init__(self, plan) -> None:
        super().__init__()
        self.plan, self.acked = plan, []

    def send(self, queries, k, rows, reply):
        self.reads.append(len(rows))
        found = np.full((len(rows), k), -1, dtype=np.int64)
        found[:, 0] = self.acked[-1] if self.acked else 0
        reply(result=(found, None, 0))

    def write(self, writes, j, reply):
        self.acked.append(int(writes.ids[j]))
        reply(sent_ns=None, done_ns=None)


@pytest.mark.parametrize("visibility_ms", [0, 10_000])
def test_a_deleted_item_returned_after_its_delete_showed_is_a_stale_hit(dataset, visibility_ms):
    from perfray.data.groundtruth import ground_truth
    from perfray.load.generator import QueryPool

    plan = _writing(make_plan(300, 1.0, arrival="poisson"), dataset, 30, "delete", 0)
    plan = dataclasses.replace(plan, writes=dataclasses.replace(plan.writes, visibility_ns=visibility_ms * 1_000_000))
    gt_ids, gt_dists = ground_truth(dataset, 10, None)
    table, _ = run_plan(plan, _Forgetful(plan), QueryPool(dataset.queries, gt_ids, gt_dists))
    rows = table.to_pandas()
    reads = rows[rows.op != "delete"]
    after_first = reads.intended_ns > rows[rows.op == "delete"].intended_ns.min()
    if visibility_ms:  # within the stated delay: not stale
        assert (reads.stale_hits == 0).all()
    else:
        assert (reads.stale_hits[after_first] == 1).all() and (reads.stale_hits[~after_first] == 0).all()


def test_with_a_filter_written_items_never_pass_it_and_reads_stay_exact(dataset):
    """Written items carry no filter attribute: a filtered read returns neither a masked (deleted, upserted)
    item nor a written vector, and is exact over the untouched items that pass its window."""
    from perfray.data.filters import item_attr, query_filters
    from perfray.data.groundtruth import ground_truth
    from perfray.load.generator import QueryPool
    from perfray.load.targets import ThreadEndpoint, make_router
    from perfray.sut.gpu_search import GpuSearchWorker

    filters = query_filters(dataset, 0.2)
    worker = GpuSearchWorker("numpy")
    worker.build(dataset.base, attr=item_attr(dataset))
    gt_ids, gt_dists = ground_truth(dataset, 10, None, filters)
    plan = _writing(make_plan(300, 1.0, arrival="poisson"), dataset, 100, "upsert", 5)
    router = make_router("replicated", [ThreadEndpoint(worker, filters.windows)])
    table, _ = run_plan(plan, router, QueryPool(dataset.queries, gt_ids, gt_dists, filters.windows))
    rows = table.to_pandas()
    reads = rows[rows.op != "upsert"]
    assert (reads.status == "ok").all() and (reads.recall == 1.0).all() and (reads.stale_hits == 0).all()
    ids, _ = worker.search(dataset.queries, 100, filters.windows)
    assert not np.isin(ids, plan.writes.ids).any()  # upserted items gone from every filtered answer


def test_written_vectors_grow_forget_and_are_searched_exactly():
    from perfray.sut.gpu_search import WrittenVectors

    rng = np.random.default_rng(3)
    written = WrittenVectors(8)
    vectors = {int(i): rng.standard_normal(8).astype(np.float32) for i in range(1000, 1200)}
    for item, vector in vectors.items():  # 200 rows: the buffer grows 64 -> 128 -> 256
        written.put(item, vector)
    for item in range(1000, 1200, 3):  # removed rows are filled from the end
        written.remove(item)
        del vectors[item]
    written.put(1001, vectors[1001] + 1.0)  # a second write of an item replaces its vector
    vectors[1001] = vectors[1001] + 1.0
    assert len(written) == len(vectors) and 1000 not in written and 1001 in written
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    ids, dists = written.search(queries, 7)
    items = np.array(sorted(vectors))
    truth = ((np.stack([vectors[i] for i in items])[None] - queries[:, None]) ** 2).sum(-1)
    assert np.array_equal(ids, items[np.argsort(truth, axis=1)[:, :7]])
    assert np.allclose(dists, np.sort(truth, axis=1)[:, :7], rtol=1e-4, atol=1e-4)
