"""Filtered search: exact windows per query, masked exact search on every CPU backend and on shards, exact
ground truth among the items that pass, recall where fewer than k pass, and configs that say what filters."""

import asyncio

import numpy as np
import pytest

from perfray.backends import BACKENDS, create_backend
from perfray.backends.base import ALL_ITEMS, select_smallest, take_waiting
from perfray.config import SyntheticDataset, load_config
from perfray.data import load_dataset
from perfray.data.filters import GENRE_SHARES, genre_bounds, item_attr, item_genre_label, query_filters
from perfray.data.groundtruth import ground_truth, recall
from perfray.errors import UsageError
from perfray.sut.gpu_search import GpuSearchWorker, SearchCoalescer


@pytest.fixture(scope="module")
def dataset():
    return load_dataset(SyntheticDataset(n=3000, dim=16, n_queries=60, clusters=8, seed=3))


def allowed_top_k(dataset, windows, k):
    """Brute force in float64 over each query's allowed items, ties by id; -1 / inf past them."""
    attr = item_attr(dataset)
    ids = np.full((len(windows), k), -1, dtype=np.int64)
    dists = np.full((len(windows), k), np.inf)
    for i, (lo, hi) in enumerate(windows):
        cand = np.flatnonzero((attr >= lo) & (attr < hi))
        d = ((dataset.base[cand].astype(np.float64) - dataset.queries[i].astype(np.float64)) ** 2).sum(1)
        order = np.lexsort((cand, d))[:k]
        ids[i, : order.size], dists[i, : order.size] = cand[order], d[order]
    return ids, dists


def test_every_query_gets_exactly_its_share_of_the_items_seeded(dataset):
    attr = item_attr(dataset)
    assert sorted(attr) == list(range(dataset.n))  # a permutation: the selectivity is exact
    f = query_filters(dataset, 0.01)
    assert f.width == 30 and f.windows.shape == (60, 2) and (f.windows[:, 1] - f.windows[:, 0] == 30).all()
    assert f.windows.min() >= 0 and f.windows.max() <= dataset.n and len(set(f.windows[:, 0])) > 30
    passing = ((attr[None, :] >= f.windows[:, :1]) & (attr[None, :] < f.windows[:, 1:])).sum(1)
    assert (passing == 30).all()
    assert np.array_equal(query_filters(dataset, 0.01).windows, f.windows)  # same for every actor and store
    assert not np.array_equal(query_filters(dataset, 0.02).windows[:, 0], f.windows[:, 0])
    assert query_filters(dataset, 1e-9).width == 1
    with pytest.raises(ValueError, match="selectivity"):
        query_filters(dataset, 0)



def test_a_genre_filter_asks_every_query_for_the_genre_holding_exactly_that_share(dataset):
    """filter.field genre: labels with the shares 50% … 0.1% (the rest "other"), each genre the items of one attr
    range, so the stores' genre_label = g and the search actors' window select the same items."""
    labels = item_genre_label(dataset)
    counts = np.bincount(labels, minlength=len(GENRE_SHARES) + 1)
    assert counts.tolist() == [1500, 600, 300, 150, 60, 30, 15, 6, 3, 336]  # round(share x 3000), then the rest
    for share in (0.5, 0.01, 0.001):
        f = query_filters(dataset, share, "genre")
        label = GENRE_SHARES.index(share)
        assert f.field == "genre" and (f.labels == label).all() and f.width == counts[label]
        lo, hi = f.windows[0]
        assert (f.windows == [lo, hi]).all()
        attr = item_attr(dataset)
        assert np.array_equal(np.flatnonzero(labels == label), np.flatnonzero((attr >= lo) & (attr < hi)))
    with pytest.raises(ValueError, match="genre shares 0.5, 0.2, 0.1"):
        query_filters(dataset, 0.03, "genre")
    assert genre_bounds(10)[-3:].tolist() == [10, 10, 10]  # too few items: the rarest genres are empty
    small = load_dataset(SyntheticDataset(n=10, dim=4, n_queries=3, clusters=2, seed=1))
    with pytest.raises(ValueError, match="too few for a genre of that share"):
        query_filters(small, 0.001, "genre")
    with pytest.raises(UsageError) as err:
        load_config(None, ["filter.field=genre", "filter.selectivity=0.03"])
    assert "filter" in str(err.value) and "genre shares" in str(err.value) and "\n" not in str(err.value)
    cell = load_config(None, ["filter.field=genre", "filter.selectivity=0.01"]).cells()[0]
    assert (cell.filter.field, cell.filter.selectivity) == ("genre", 0.01)


CPU = [name for name in ("numpy", "faiss") if BACKENDS.load(name).is_available()]


@pytest.mark.parametrize("name", CPU)
@pytest.mark.parametrize("selectivity", [0.5, 0.01, 0.002])
def test_backends_search_only_the_items_each_window_passes(dataset, name, selectivity):
    windows = query_filters(dataset, selectivity).windows
    backend = create_backend(name)
    backend.build(dataset.base, item_attr(dataset))
    ids, dists = backend.search(dataset.queries, 10, windows)
    want, want_d = allowed_top_k(dataset, windows, 10)
    assert np.array_equal(ids, want)  # at 0.002 only 6 items pass: the rest is -1 / inf
    assert np.allclose(np.where(np.isinf(want_d), 0, dists), np.where(np.isinf(want_d), 0, want_d), atol=1e-3)
    assert ((ids == -1) == np.isinf(want_d)).all()
    plain, _ = backend.search(dataset.queries, 10)  # no windows: the whole index, as before
    assert (plain >= 0).all()


def test_selection_with_most_columns_masked_is_exact():
    rng = np.random.default_rng(5)
    d = rng.random((40, 5000))
    d[rng.random(d.shape) < 0.995] = np.inf  # ~25 finite per row; some rows fewer than k
    ids, vals = select_smallest(d, 30)
    for row in range(40):
        finite = np.flatnonzero(np.isfinite(d[row]))
        want = finite[np.lexsort((finite, d[row, finite]))][:30]
        assert list(ids[row, : want.size]) == list(want) and np.isinf(vals[row, want.size:]).all()


def test_sharded_workers_merge_to_the_filtered_top_k(dataset):
    from perfray.backends.base import merge_topk

    attr = item_attr(dataset)
    windows = query_filters(dataset, 0.003).windows
    shards = []
    for s in range(3):
        w = GpuSearchWorker("numpy")
        w.build(dataset.base, s, 3, attr)
        shards.append(w.search(dataset.queries, 10, windows))
    ids, _ = merge_topk(shards, 10)
    assert np.array_equal(ids, allowed_top_k(dataset, windows, 10)[0])  # -1 stays -1 past the offset
    unfiltered = GpuSearchWorker("numpy")
    unfiltered.build(dataset.base)
    with pytest.raises(ValueError, match="filter attribute"):
        unfiltered.search(dataset.queries, 10, windows)


def test_ground_truth_is_exact_among_the_passing_items_and_cached_apart(dataset, tmp_path):
    f = query_filters(dataset, 0.002)  # 6 items per query
    ids, dists = ground_truth(dataset, 10, tmp_path, f)
    want, want_d = allowed_top_k(dataset, f.windows, 18)
    assert np.array_equal(ids, want) and np.allclose(dists[:, :6], want_d[:, :6]) and np.isinf(dists[:, 6:]).all()
    plain, _ = ground_truth(dataset, 10, tmp_path)
    assert not np.array_equal(plain, ids) and len(list(tmp_path.glob("gt-*.npz"))) == 2
    again, _ = ground_truth(dataset, 10, tmp_path, f)
    assert np.array_equal(again, ids)
    # recall where fewer than k pass: all six found is 1.0; -1 padding is no hit
    assert (recall(ids[:, :10], ids, dists, 10) == 1.0).all()
    half = ids[:, :10].copy()
    half[:, 3:] = -1
    assert np.allclose(recall(half, ids, dists, 10), 0.5)


def test_merged_batches_keep_each_ones_windows():
    loop = asyncio.new_event_loop()
    try:
        futures = [loop.create_future() for _ in range(3)]
        w1 = np.array([[0, 5], [10, 20]])
        waiting = [(np.zeros((2, 4)), 10, futures[0], w1), (np.zeros((1, 4)), 5, futures[1], None),
                   (np.zeros((1, 4)), 10, futures[2], np.array([[7, 9]]))]
        taken, queries, k, windows = take_waiting(waiting, 100)
        assert len(taken) == 3 and queries.shape == (4, 4) and k == 10
        assert windows.tolist() == [[0, 5], [10, 20], list(ALL_ITEMS), [7, 9]]
        plain = [(np.zeros((1, 4)), 10, loop.create_future(), None)]
        assert take_waiting(plain, 100)[3] is None
    finally:
        loop.close()


def test_the_search_actors_coalescer_passes_windows_on(dataset):
    worker = GpuSearchWorker("numpy")
    worker.build(dataset.base, attr=item_attr(dataset))
    windows = query_filters(dataset, 0.01).windows

    async def go():
        coalescer = SearchCoalescer(worker.search)
        return await asyncio.gather(*(coalescer.search(dataset.queries[i:i + 1], 10, windows[i:i + 1])
                                      for i in range(20)))

    got = np.concatenate([ids for ids, _ in asyncio.run(go())])
    assert np.array_equal(got, allowed_top_k(dataset, windows[:20], 10)[0])


def test_a_filter_on_a_system_that_cannot_apply_it_is_a_one_line_error():
    with pytest.raises(UsageError) as err:
        load_config(None, ["system=neo4j", "filter.selectivity=0.01"])
    assert "filter: system 'neo4j' has no vector search to filter (systems that filter: gpu_search, http, hybrid," \
        in str(err.value)
    assert "\n" not in str(err.value)
    cells = load_config(None, ["sweep={filter.selectivity: [0.1, 0.01]}"]).cells()
    assert [c.filter.selectivity for c in cells] == [0.1, 0.01]
