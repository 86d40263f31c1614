"""The CuPy backend against the numpy reference. Skips cleanly where CuPy or a CUDA device is missing."""

import numpy as np
import pytest

from perfray.backends.cupy_backend import CupyBackend
from perfray.backends.numpy_backend import NumpyBackend

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not CupyBackend.is_available(), reason="needs CuPy and a CUDA device")]


def reference(base, queries, k):
    ref = NumpyBackend(np.float64)
    ref.build(base)
    return ref.search(queries, k)


@pytest.mark.parametrize(("n", "dim", "q", "k"), [
    (1000, 16, 1, 1), (5003, 32, 7, 10), (70_001, 64, 33, 10), (20_000, 128, 256, 64), (3000, 8, 5, 128),
    (4000, 16, 3, 200),  # above the kernel's MAX_K: sorted fallback
])
def test_cupy_matches_exact_reference(n, dim, q, k):
    rng = np.random.default_rng(n)
    base = rng.standard_normal((n, dim), dtype=np.float32)
    queries = rng.standard_normal((q, dim), dtype=np.float32)
    backend = CupyBackend()
    backend.build(base)
    ids, dists = backend.search(queries, k)
    want_ids, want_dists = reference(base, queries, k)
    assert ids.shape == (q, k) and ids.dtype == np.int64
    assert np.allclose(dists, want_dists, rtol=1e-4, atol=1e-3)
    mismatched = ids != want_ids
    # float32 vs float64 may only swap neighbours whose distances are equal within rounding
    assert np.allclose(dists[mismatched], want_dists[mismatched], rtol=1e-5, atol=1e-4)
    assert mismatched.mean() < 0.01


def test_ties_break_by_smaller_id_like_numpy():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 3, size=(4096, 4)).astype(np.float32)  # massive duplication
    queries = base[:9]
    backend = CupyBackend()
    backend.build(base)
    numpy = NumpyBackend()
    numpy.build(base)
    assert np.array_equal(backend.search(queries, 16)[0], numpy.search(queries, 16)[0])


def test_column_chunking_gives_the_same_answer(monkeypatch):
    import perfray.backends.cupy_backend as mod

    rng = np.random.default_rng(5)
    base = rng.standard_normal((50_000, 32), dtype=np.float32)
    queries = rng.standard_normal((64, 32), dtype=np.float32)
    backend = CupyBackend()
    backend.build(base)
    whole = backend.search(queries, 10)
    monkeypatch.setattr(mod, "DIST_BLOCK_BYTES", 64 * 4 * 7_000)  # forces 8 chunks
    chunked = backend.search(queries, 10)
    assert np.array_equal(whole[0], chunked[0])


def test_worker_on_gpu_reports_a_real_device():
    from perfray.sut.gpu_search import GpuSearchWorker

    worker = GpuSearchWorker("auto")
    info = worker.build(np.random.default_rng(0).standard_normal((1000, 8), dtype=np.float32))
    assert info["backend"] == "cupy" and info["simulated"] is False and info["device"]


@pytest.mark.parametrize(("n", "q", "k", "width"), [
    (20_000, 64, 10, 200), (20_000, 64, 10, 4), (5000, 7, 200, 300),  # k above MAX_K: sorted fallback
])
def test_filtered_search_keeps_only_each_querys_window(n, q, k, width):
    """The device mask: excluded items are +inf, ids past the items that passed are -1, as numpy's."""
    rng = np.random.default_rng(width)
    base = rng.standard_normal((n, 32), dtype=np.float32)
    queries = rng.standard_normal((q, 32), dtype=np.float32)
    attr = rng.permutation(n).astype(np.int64)
    lo = rng.integers(0, n - width + 1, q)
    windows = np.stack([lo, lo + width], axis=1)
    backend = CupyBackend()
    backend.build(base, attr)
    ids, dists = backend.search(queries, k, windows)
    ref = NumpyBackend(np.float64)
    ref.build(base, attr)
    want_ids, want_dists = ref.search(queries, k, windows)
    assert ((ids == -1) == (want_ids == -1)).all()
    passed = ids >= 0
    inside = (attr[np.maximum(ids, 0)] >= windows[:, :1]) & (attr[np.maximum(ids, 0)] < windows[:, 1:])
    assert inside[passed].all() and np.allclose(dists[passed], want_dists[passed], rtol=1e-4, atol=1e-3)
    assert (ids[passed] == want_ids[passed]).mean() > 0.99


@pytest.mark.parametrize("k", [129, 300, 1024])
def test_k_above_the_kernel_is_exact_with_ties_by_id_in_bounded_blocks(monkeypatch, k):
    """Above MAX_K: column blocks sorted stably and merged (memory bounded by SORT_BLOCK_BYTES, forced small
    here so many blocks are merged), the same ids as numpy, duplicates included."""
    from perfray.backends import cupy_backend

    monkeypatch.setattr(cupy_backend, "SORT_BLOCK_BYTES", 12 * 9 * 1500)  # 1,500 columns per block
    rng = np.random.default_rng(k)
    base = rng.integers(0, 4, size=(20_000, 8)).astype(np.float32)  # integer data: exact, many ties
    queries = base[:9]
    backend = CupyBackend()
    backend.build(base)
    numpy = NumpyBackend()
    numpy.build(base)
    ids, dists = backend.search(queries, k)
    want_ids, want_dists = numpy.search(queries, k)
    assert np.array_equal(ids, want_ids) and np.allclose(dists, want_dists)


def test_writes_on_a_cupy_worker_answer_like_a_numpy_one():
    """load.writes on the GPU: a deleted or upserted item masked on the device (set_attr), written vectors in
    the exact delta beside it; the same answers as the numpy worker, and a reset gives the dataset back."""
    from perfray.sut.gpu_search import GpuSearchWorker

    rng = np.random.default_rng(5)
    base = rng.standard_normal((4000, 32), dtype=np.float32)
    attr = rng.permutation(4000).astype(np.int64)
    queries = rng.standard_normal((16, 32), dtype=np.float32)
    workers = [GpuSearchWorker(name) for name in ("cupy", "numpy")]
    for w in workers:
        w.build(base, attr=attr)
        for item in range(0, 400, 4):
            w.apply_write("delete", item)
        for j, item in enumerate(range(1, 400, 4)):
            w.apply_write("upsert", item, queries[j % 16] + 0.01)
        w.apply_write("insert", 4000, queries[3])
    (gpu_ids, gpu_d), (cpu_ids, cpu_d) = (w.search(queries, 10) for w in workers)
    assert np.array_equal(gpu_ids, cpu_ids) and np.allclose(gpu_d, cpu_d, rtol=1e-4, atol=1e-3)
    assert not np.isin(gpu_ids, np.arange(0, 400, 4)).any() and gpu_ids[3, 0] == 4000
    for w in workers:
        w.reset_writes()
    assert np.array_equal(workers[0].search(base[:400:4], 1)[0][:, 0], np.arange(0, 400, 4))
