import asyncio

import numpy as np
import pytest

from perfray.backends import BACKENDS, create_backend, resolve_backend_name
from perfray.backends.base import merge_topk, select_smallest
from perfray.config import SyntheticDataset
from perfray.data import load_dataset
from perfray.data.groundtruth import ground_truth, recall
from perfray.errors import UsageError
from perfray.load.targets import ShardedRouter, ThreadEndpoint
from perfray.registry import Registry
from perfray.sut.gpu_search import GpuSearchWorker, shard_bounds


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(SyntheticDataset(n=6000, dim=32, clusters=16, n_queries=200, seed=3))


@pytest.fixture(scope="module")
def truth(dataset):
    return ground_truth(dataset, 20, None)


def brute_force(base, queries, k):
    d = ((queries[:, None, :].astype(np.float64) - base[None].astype(np.float64)) ** 2).sum(-1)
    order = np.lexsort((np.broadcast_to(np.arange(base.shape[0]), d.shape), d), axis=1)[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


CPU_EXACT = [name for name in ("numpy", "faiss") if BACKENDS.load(name).is_available()]


@pytest.mark.parametrize("name", CPU_EXACT)
def test_exact_backends_have_recall_1_against_ground_truth(name, dataset, truth):
    backend = create_backend(name)
    backend.build(dataset.base)
    for k in (1, 10, 20):
        ids, dists = backend.search(dataset.queries, k)
        assert ids.shape == (200, k) and ids.dtype == np.int64
        assert recall(ids, *truth, k).min() == 1.0
        assert np.allclose(dists, truth[1][:, :k], rtol=1e-4, atol=1e-3)


def test_numpy_matches_float64_brute_force_and_breaks_ties_by_id():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((700, 8), dtype=np.float32)
    base = np.concatenate([base, base[:50]])  # exact duplicates: ids 700.. tie with 0..
    queries = np.concatenate([base[:5], rng.standard_normal((20, 8), dtype=np.float32)])
    backend = create_backend("numpy")
    backend.build(base)
    ids, dists = backend.search(queries, 7)
    want, want_d = brute_force(base, queries, 7)
    # A float32 GEMM need not give two equal columns bitwise-equal products (numpy 2.4's OpenBLAS does not):
    # duplicates come out together and in either order; every other position matches the float64 order.
    assert np.allclose(dists, want_d, atol=1e-4)
    assert [set(r) for r in ids] == [set(r) for r in want]

    def original(x):  # a duplicate's id -> the row it copies
        return np.where(x >= 700, x - 700, x)

    assert np.array_equal(original(ids), original(want)) and set(ids[0][:2]) == {0, 700}


def test_select_smallest_matches_a_full_sort_on_blocks_with_ties():
    rng = np.random.default_rng(1)
    d = rng.integers(0, 50, size=(9, 3000)).astype(np.float32)  # many ties
    ids, vals = select_smallest(d, 12, id_offset=100)
    order = np.lexsort((np.broadcast_to(np.arange(3000), d.shape), d), axis=1)[:, :12]
    assert np.array_equal(ids, order + 100)
    assert np.array_equal(vals, np.take_along_axis(d, order, axis=1))


def test_sharded_search_equals_replicated(dataset):
    full = GpuSearchWorker("numpy")
    full.build(dataset.base)
    shards = []
    for i in range(3):
        w = GpuSearchWorker("numpy", i)
        info = w.build(dataset.base, i, 3)
        assert info["rows"] == shard_bounds(dataset.n, i, 3)[1] - shard_bounds(dataset.n, i, 3)[0]
        shards.append(w)
    router = ShardedRouter([ThreadEndpoint(w) for w in shards])
    async def search():
        return await router.submit(dataset.queries, 10)

    ids, dists, endpoint = asyncio.run(search())
    want_ids, want_dists = full.search(dataset.queries, 10)
    assert endpoint == -1
    assert np.array_equal(ids, want_ids)
    assert np.allclose(dists, want_dists, rtol=1e-5)
    parts = [w.search(dataset.queries, 10) for w in shards]
    assert np.array_equal(merge_topk(parts, 10)[0], want_ids)


def test_auto_uses_cpu_reference_without_gpu_and_unknown_names_list_known_ones(monkeypatch):
    from perfray.backends import AUTO_GPU_ORDER, BACKENDS

    for name in AUTO_GPU_ORDER:  # every GPU backend importable but without a device: auto is the CPU reference
        monkeypatch.setattr(BACKENDS.load(name), "uses_gpu", classmethod(lambda cls: False))
    assert resolve_backend_name("auto") == "numpy"
    monkeypatch.setattr(BACKENDS.load(AUTO_GPU_ORDER[-1]), "uses_gpu", classmethod(lambda cls: True))
    monkeypatch.setattr(BACKENDS.load(AUTO_GPU_ORDER[-1]), "is_available", classmethod(lambda cls: True))
    assert resolve_backend_name("auto") == AUTO_GPU_ORDER[-1]  # a GPU backend that can run is chosen
    with pytest.raises(UsageError, match="known: cupy, faiss, numpy"):
        create_backend("annoy")


def test_registry_rejects_duplicates_and_bad_targets():
    reg = Registry("thing")
    reg.register("a", "json:loads")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", "json:dumps")
    with pytest.raises(ValueError, match="module:Class"):
        reg.register("b", "json.loads")
    assert reg.load("a")("[1]") == [1]


def test_microbench_reports_per_batch_rows(dataset):
    w = GpuSearchWorker("numpy")
    w.build(dataset.base)
    rows = w.microbench(dataset.queries, [1, 8], [5], repeats=3, warmup=1)
    assert len(rows) == 6
    for row in rows:
        assert row["batch_ns"] > 0
        assert row["qps"] == pytest.approx(row["batch"] / (row["batch_ns"] / 1e9))
        assert row["simulated"] is True


def test_a_row_with_fewer_than_k_finite_distances_keeps_its_own_neighbours():
    """A NaN (or inf) in a row's distances left it fewer than k survivors, and the selection took the next
    row's neighbours as its own. Each row gets its own k: finite first, then inf, then NaN; ties by id."""
    from perfray.backends.base import select_smallest

    d = np.array([[0.5, np.nan, np.inf, 0.1, np.nan],
                  [3.0, 1.0, 2.0, 0.0, 4.0],
                  [np.nan, np.nan, np.nan, np.nan, np.nan]], dtype=np.float32)
    ids, vals = select_smallest(d, 4, id_offset=10)
    assert ids[0].tolist() == [13, 10, 12, 11] and vals[0][:3].tolist() == [np.float32(0.1), 0.5, np.inf]
    assert ids[1].tolist() == [13, 11, 12, 10] and vals[1].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert ids[2].tolist() == [10, 11, 12, 13] and np.isnan(vals[2]).all()


@pytest.mark.parametrize(("n", "k", "chunk"), [(5000, 300, 700), (4096, 1024, 1024), (999, 200, 64), (50, 10, 7)])
def test_chunked_topk_is_exact_with_ties_by_id_across_blocks(n, k, chunk):
    """The CuPy backend's path for k above its kernel (run here with numpy: the same calls): every block sorted
    stably and merged with the best so far equals one full (distance, id) sort, ties, inf and NaN included."""
    from perfray.backends.base import chunked_topk

    rng = np.random.default_rng(n + k)
    d = rng.integers(0, 40, size=(9, n)).astype(np.float32)  # many exact ties, across block boundaries
    d[0, ::3] = np.inf
    d[1, 5:] = np.nan  # fewer than k finite values
    ids, vals = chunked_topk(np, lambda lo, hi: d[:, lo:hi], n, min(k, n), chunk)
    cols = np.broadcast_to(np.arange(n), d.shape)
    want = np.lexsort((cols, np.where(np.isnan(d), np.inf, d), np.isnan(d)), axis=1)[:, :min(k, n)]
    assert np.array_equal(ids, want) and ids.dtype == np.int64
    assert np.array_equal(vals, np.take_along_axis(d, want, axis=1), equal_nan=True)
