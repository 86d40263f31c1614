import pytest

from perfray.config import load_config, resolve_path
from perfray.errors import UsageError

BASE = """
name: t
workload:
  dataset: {kind: synthetic, n: 1000, dim: 8}
  load: {target_qps: 100, duration_s: 1}
sweep:
  n_gpus: [1, 2, 4]
  load.target_qps: [100, 200]
"""


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_expands_every_combination_in_order(tmp_path):
    config = load_config(write(tmp_path, BASE))
    cells = config.cells()
    assert [(c.search.n_gpus, c.load.target_qps) for c in cells] == [
        (1, 100), (1, 200), (2, 100), (2, 200), (4, 100), (4, 200)]


def test_set_overrides_by_path_or_unique_leaf_and_replaces_a_sweep_axis(tmp_path):
    config = load_config(write(tmp_path, BASE), ["duration_s=0.5", "search.k=5", "target_qps=300"])
    cells = config.cells()
    assert len(cells) == 3
    assert all(c.load.duration_s == 0.5 and c.search.k == 5 and c.load.target_qps == 300 for c in cells)
    assert resolve_path("n_gpus") == ("search", "n_gpus")
    with pytest.raises(ValueError, match="ambiguous"):
        resolve_path("seed")  # dataset.seed and load.seed
    assert resolve_path("dataset.n_queries") == ("dataset", "n_queries")


@pytest.mark.parametrize(("text", "overrides", "message"), [
    (BASE + "bogus: 1\n", [], r"bogus: Extra inputs are not permitted"),
    (BASE, ["load.target_qps=-5"], r"workload.load.target_qps: Input should be greater than 0"),
    (BASE, ["search.backend=annoy"], r"unknown backend 'annoy'; known: auto, cupy, faiss, numpy"),
    (BASE, ["dataset={kind: file, path: /nope.hdf5}"], r"dataset.path: no such file /nope.hdf5"),
    (BASE + "targets: [{metric: p42_ms, max: 1}]\n", [], r"unknown metric 'p42_ms'"),
    (BASE + "targets: [{metric: p99_ms}]\n", [], r"exactly one of 'max' or 'min'"),
    (BASE, ["nonsense=1"], r"--set nonsense: 'nonsense' is not a workload field"),
    (BASE, ["novalue"], r"expected key=value"),
    ("name: [unclosed\n", [], r"not valid YAML \(line"),
    (BASE, ["stores.http.url=ftp://h/x"], r"stores.http.url: expected http\(s\)://host\[:port\]/path, got 'ftp://h/x'"),
    (BASE, ["stores.http.url=notaurl"], r"stores.http.url: expected http\(s\)://host\[:port\]/path, got 'notaurl'"),
    (BASE, ["stores.http.url=http://me:hunter2@h:x/"], r"got 'http://me:\*\*\*@h:x/'$"),
    (BASE, ["stores.neo4j.uri=notauri"], r"stores.neo4j.uri: expected bolt://host:7687 or neo4j://host:7687"),
    (BASE, ["stores.neo4j.uri=http://127.0.0.1:7474"], r"stores.neo4j.uri: expected bolt://host:7687 or neo4j://"),
    (BASE, ["stores.milvus.uri=notauri"], r"stores.milvus.uri: expected a Milvus Lite file \(….db\) or a server's"),
    (BASE, ["stores.milvus.uri=http://root:Milvus@:19530"], r"got 'http://root:\*\*\*@:19530'$"),
    (BASE, ["search.k=1001"], r"search.k \(1001\) exceeds dataset.n \(1000\): a search cannot return more"),
    # targets and goals no system could meet, or that are not numbers
    (BASE + "targets: [{metric: p99_ms, max: 0}]\n", [], r"targets.0: p99_ms max 0: p99_ms is never at or below 0"),
    (BASE + "targets: [{metric: failure_rate, max: -0.01}]\n", [], r"failure_rate max -0.01: .* never below 0"),
    (BASE + "targets: [{metric: recall_min, min: 1.01}]\n", [], r"recall_min min 1.01: recall_min is never above 1"),
    (BASE + "targets: [{metric: gpu_util_mean, min: 101}]\n", [], r"gpu_util_mean min 101: .* never above 100"),
    (BASE + "targets: [{metric: p99_ms, max: .nan}]\n", [], r"targets.0.max: Input should be a finite number$"),
    (BASE, ["slo=[{metric: p99_ms, goal: -1}]"], r"slo.0: p99_ms goal -1: p99_ms is never at or below 0"),
    (BASE, ["slo=[{metric: recall_mean, goal: 0.9, stretch: 1.2}]"], r"recall_mean stretch 1.2: .* never above 1"),
    # a value of the wrong shape says what was expected and what came
    (BASE, ["sweep={load.target_qps: 500}"], r"sweep.load.target_qps: expected a list \[...\], got 500$"),
    (BASE, ["sweep=[1, 2]"], r": sweep: expected a mapping \{key: value\}, got \[1, 2\]$"),
    (BASE, ["slo={metric: p99_ms, goal: 10}"], r": slo: expected a list \[...\], got \{'metric': 'p99_ms', 'goal': 10\}$"),
    # every number of a config is finite: an infinite duration or rate ran until killed
    (BASE, ["load.duration_s=.inf"], r"workload.load.duration_s: Input should be a finite number$"),
    (BASE, ["capacity={max_qps: .inf}"], r"capacity.max_qps: Input should be a finite number$"),
    (BASE, ["cluster.load_actor_cpus=.nan"], r"cluster.load_actor_cpus: Input should be a finite number$"),
    # a control character the input brought into the message is written as its escape (hypothesis found a dataset
    # kind "\n" quoted on two lines)
    (BASE, ['dataset={kind: "\\n"}'], r"dataset: Input tag '\\n' found using 'kind' does not match any of the "
                                        r"expected tags: 'synthetic', 'file'$"),
])
def test_bad_config_is_one_line_usage_error(tmp_path, text, overrides, message):
    with pytest.raises(UsageError, match=message) as err:
        load_config(write(tmp_path, text), overrides)
    assert "\n" not in str(err.value)


def test_sweep_value_errors_name_the_field(tmp_path):
    with pytest.raises(UsageError, match=r"search.n_gpus: Input should be greater than or equal to 1"):
        load_config(write(tmp_path, BASE.replace("[1, 2, 4]", "[1, 0]")))


def test_default_config_is_valid():
    config = load_config(None)
    assert config.name == "smoke" and len(config.cells()) >= 2


def test_a_k_beyond_a_dataset_file_or_its_shards_is_one_line_naming_the_file():
    """A file's size is known once it is read: a k it cannot serve is refused then, not capped while the report
    says the k asked for."""
    from types import SimpleNamespace as NS

    from perfray.cluster.fleet import _check_k

    spec = NS(path="/data/base.fvecs")
    _check_k(spec, 100, [NS(k=100, n_gpus=1, topology="replicated"), NS(k=50, n_gpus=2, topology="sharded")])
    with pytest.raises(UsageError, match=r"^/data/base.fvecs: 100 vectors, fewer than search.k \(101\)"):
        _check_k(spec, 100, [NS(k=101, n_gpus=1, topology="replicated")])
    with pytest.raises(UsageError, match=r"^/data/base.fvecs: one of 3 shards holds 33, fewer than search.k \(34\)"):
        _check_k(spec, 100, [NS(k=34, n_gpus=3, topology="sharded")])
