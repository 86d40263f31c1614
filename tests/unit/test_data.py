import numpy as np
import pytest

from perfray.config import FileDataset, SyntheticDataset
from perfray.data import load_dataset
from perfray.data.datasets import read_fvecs, write_fvecs
from perfray.data.groundtruth import ground_truth, recall
from perfray.errors import UsageError


def test_synthetic_is_deterministic_and_seed_sensitive():
    a = load_dataset(SyntheticDataset(n=500, dim=8, seed=1))
    b = load_dataset(SyntheticDataset(n=500, dim=8, seed=1))
    c = load_dataset(SyntheticDataset(n=500, dim=8, seed=2))
    assert np.array_equal(a.base, b.base) and a.fingerprint == b.fingerprint
    assert not np.array_equal(a.base, c.base) and a.fingerprint != c.fingerprint
    assert a.base.dtype == np.float32 and a.base.flags.c_contiguous


def test_fvecs_round_trip_and_bad_file(tmp_path):
    x = np.random.default_rng(0).standard_normal((30, 5), dtype=np.float32)
    write_fvecs(tmp_path / "b.fvecs", x)
    assert np.array_equal(read_fvecs(tmp_path / "b.fvecs"), x)
    (tmp_path / "bad.fvecs").write_bytes(b"\x05\x00\x00\x00abc")
    with pytest.raises(UsageError, match="not a .fvecs file"):
        read_fvecs(tmp_path / "bad.fvecs")
    spec = FileDataset(kind="file", path=tmp_path / "b.fvecs")
    with pytest.raises(UsageError, match="dataset.queries_path: required"):
        load_dataset(spec)
    write_fvecs(tmp_path / "q.fvecs", x[:4])
    ds = load_dataset(FileDataset(kind="file", path=tmp_path / "b.fvecs", queries_path=tmp_path / "q.fvecs"))
    assert ds.n == 30 and ds.queries.shape == (4, 5)


def test_ann_benchmarks_hdf5_angular_is_normalised(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    path = tmp_path / "glove-like.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = "angular"
        f["train"] = rng.standard_normal((100, 6)).astype(np.float32) * 5
        f["test"] = rng.standard_normal((10, 6)).astype(np.float32)
    ds = load_dataset(FileDataset(kind="file", path=path, n_queries=4))
    assert ds.queries.shape == (4, 6)
    assert np.allclose(np.linalg.norm(ds.base, axis=1), 1.0, atol=1e-5)
    with h5py.File(tmp_path / "jac.hdf5", "w") as f:
        f.attrs["distance"] = "jaccard"
        f["train"] = np.zeros((3, 2), np.float32)
        f["test"] = np.zeros((1, 2), np.float32)
    with pytest.raises(UsageError, match="jaccard"):
        load_dataset(FileDataset(kind="file", path=tmp_path / "jac.hdf5"))


@pytest.mark.parametrize(("train", "test", "message"), [
    (np.ones(10, np.float32), np.ones((2, 4), np.float32), r"'train' has shape \(10,\); expected a 2-D array"),
    (np.ones((10, 4, 2), np.float32), np.ones((2, 4), np.float32), r"'train' has shape \(10, 4, 2\); expected a 2-D"),
    (np.ones((10, 0), np.float32), np.ones((2, 0), np.float32), r"'train' has shape \(10, 0\)"),
    (np.ones((10, 4), np.float32), np.array([b"a", b"b"]), r"'test' holds \|S1; expected numbers"),
    (np.ones((10, 4), np.float32), None, r"'test' is a group; expected a 2-D array"),
    (np.ones((10, 4), np.float32), np.ones((0, 4), np.float32), r"no query rows"),
    (np.ones((0, 4), np.float32), np.ones((2, 4), np.float32), r"no base vector rows"),
])
def test_an_hdf5_file_of_the_wrong_shape_is_one_line_naming_the_array(tmp_path, train, test, message):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "odd.hdf5"
    with h5py.File(path, "w") as f:
        f["train"] = train
        if test is None:
            f.create_group("test")
        else:
            f["test"] = test
    with pytest.raises(UsageError, match=message):
        load_dataset(FileDataset(kind="file", path=path))


def test_ground_truth_is_cached_by_fingerprint(tmp_path):
    ds = load_dataset(SyntheticDataset(n=800, dim=8, n_queries=50))
    ids, dists = ground_truth(ds, 10, tmp_path)
    assert len(list(tmp_path.glob("gt-*.npz"))) == 1
    again = ground_truth(ds, 5, tmp_path)  # smaller k is served from the cached file
    assert np.array_equal(again[0], ids[:, : again[0].shape[1]])
    assert len(list(tmp_path.glob("gt-*.npz"))) == 1
    exact = ((ds.queries[:, None, :].astype(np.float64) - ds.base[None]) ** 2).sum(-1)
    assert np.allclose(dists, np.sort(exact, axis=1)[:, : ids.shape[1]])


def test_recall_counts_only_true_neighbours_with_tolerance_for_ties():
    gt_ids = np.array([[1, 2, 3, 4]])
    gt_d = np.array([[0.1, 0.2, 0.3, 0.3]])  # 3 and 4 tie at the 3rd place
    assert recall(np.array([[1, 2, 4]]), gt_ids, gt_d, 3)[0] == 1.0
    assert recall(np.array([[1, 9, 3]]), gt_ids, gt_d, 3)[0] == pytest.approx(2 / 3)


def test_recall_counts_each_returned_id_once_and_missing_or_foreign_ids_as_misses():
    gt_ids = np.array([[5, 6, 7], [5, 6, 7]])
    gt_d = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]])
    assert recall(np.array([[5, 5, 5], [6, 5, 6]]), gt_ids, gt_d, 3).tolist() == pytest.approx([1 / 3, 2 / 3])
    assert recall(np.array([[-1, 5, 10**9], [7, -1, -1]]), gt_ids, gt_d, 3).tolist() == pytest.approx([1 / 3, 1 / 3])


def test_a_large_query_pool_gets_exact_truth_for_a_seeded_sample_and_the_rest_is_not_scored(tmp_path, monkeypatch):
    """Above TRUTH_ROWS_MAX pool rows, exact ground truth covers a seeded sample; requests asking another row get
    recall NaN (not scored), the sampled rows' truth equals the full computation, and the manifest says which."""
    from perfray.config import SyntheticDataset
    from perfray.data import groundtruth
    from perfray.data.groundtruth import ground_truth, truth_coverage
    from perfray.load.recorder import Recorder

    ds = load_dataset(SyntheticDataset(n=500, dim=8, n_queries=300, seed=4))
    full_ids, full_d = ground_truth(ds, 5, None)
    monkeypatch.setattr(groundtruth, "TRUTH_ROWS_MAX", 100)
    ids, d = ground_truth(ds, 5, tmp_path)
    have = ids[:, 0] >= 0
    assert have.sum() == 100 and (ids[have] == full_ids[have]).all() and np.isnan(d[~have]).all()
    assert (ground_truth(ds, 5, tmp_path)[0] == ids).all()  # cached, and the same sample
    assert truth_coverage(ids)["how"].startswith("exact, a seeded sample of 100 of 300")
    assert truth_coverage(full_ids) == {"rows": 300, "of": 300, "how": "exact, every pool row"}
    asked = np.array([int(np.flatnonzero(have)[0]), int(np.flatnonzero(~have)[0])])
    rec = Recorder(0, 0, np.arange(2), np.zeros(2, np.int64), np.zeros(2, np.int16), np.zeros(2, np.int16),
                   np.array([5]), np.array([1]), ["m"], ["knn"])
    rec.score_against(ids, d)
    for i in range(2):
        rec.sent(i, i + 1, 1, i, 1)
        rec.finish(i, i + 1, "ok", done_ns=2, endpoint=0, found_ids=full_ids[asked[i:i + 1], :5], q_index=asked[i:i + 1])
    recall = rec.drain().column("recall").to_numpy(zero_copy_only=False)
    assert recall[0] == 1.0 and np.isnan(recall[1])
