"""Every config, flag and dataset file a user can get wrong ends in exit 2 and one line naming it."""

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import REPO

from perfray.config import load_config
from perfray.data.datasets import write_fvecs
from perfray.errors import UsageError

CONFIGS = sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "configs" / "phases").glob("*.yaml"))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "perfray.sweep", *args], capture_output=True, text=True, timeout=120)


def test_files_that_are_not_configs_or_datasets_exit_2_with_one_line(tmp_path):
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "comment.yaml").write_text("# nothing here\n")
    base = np.random.default_rng(0).random((50, 4)).astype(np.float32)
    base[7, 1] = np.inf
    write_fvecs(tmp_path / "inf.fvecs", base)
    write_fvecs(tmp_path / "q.fvecs", base[:5] * 0 + 1)
    cases = [
        (["--config", str(tmp_path / "latin1.yaml")], f"{tmp_path / 'latin1.yaml'}: not UTF-8 text (byte 9)"),
        (["--config", str(tmp_path / "empty.yaml")], f"{tmp_path / 'empty.yaml'}: the file is empty"),
        (["--config", str(tmp_path / "comment.yaml")], f"{tmp_path / 'comment.yaml'}: the file is empty"),
        (["--set", f"dataset={{kind: file, path: {tmp_path / 'inf.fvecs'}, queries_path: {tmp_path / 'q.fvecs'}}}",
          "--set", "sweep={}", "--set", "duration_s=0.5", "--results-dir", str(tmp_path / "r")],
         f"{tmp_path / 'inf.fvecs'}: base vector 7 has a NaN or infinite value"),
    ]
    for args, start in cases:
        out = _cli(*args)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and lines[-1].startswith(f"perfray: error: {start}"), (args, out.stderr[-1500:])
        assert "Traceback" not in out.stderr
    # the dataset's fault is found once it is read, in a run already begun: its manifest says nothing ran
    runs = [json.loads(p.read_text()) for p in (tmp_path / "r").glob("*/manifest.json")]
    assert [(m["status"], m["error"].split(":")[0]) for m in runs] == [("not_started", str(tmp_path / "inf.fvecs"))]


# Mutations of the shipped configs: a key removed, or a value replaced by something of another kind.
ODD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                       st.text(max_size=12), st.lists(st.integers(-3, 3), max_size=3),
                       st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*prefix, i)
            yield from _paths(value, (*prefix, i))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=st.sampled_from(CONFIGS), pick=st.integers(0, 10**6), remove=st.booleans(), value=ODD_VALUES)
def test_a_mutated_shipped_config_is_valid_or_one_line_naming_the_field(tmp_path, config, pick, remove, value):
    data = yaml.safe_load(config.read_text())
    paths = list(_paths(data))
    path = paths[pick % len(paths)]
    mutated = copy.deepcopy(data)
    parent = mutated
    for key in path[:-1]:
        parent = parent[key]
    if remove:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    file = tmp_path / "mutated.yaml"
    file.write_text(yaml.safe_dump(mutated))
    try:
        load_config(file)
    except UsageError as err:
        text = str(err)
        assert text and "\n" not in text and "Traceback" not in text
        assert str(file) in text or text.startswith(("--", "dataset", "cell", "sweep", "load")), text
    # any other exception fails the test: a traceback is not an answer


@pytest.mark.parametrize("override", ["load.target_qps=", "=5", "load", "sweep={k: []}", "load.phases=[]",
                                      "targets=[{metric: p99_ms}]", "dataset.n=0", "search.k=-1",
                                      "cluster.generator_cpus=[-1]"])
def test_bad_overrides_are_one_line(override):
    with pytest.raises(UsageError) as err:
        load_config(None, [override])
    assert "\n" not in str(err.value) and str(err.value)


def test_the_last_bad_inputs_end_before_ray_starts_with_one_line_and_no_run_directory(tmp_path):
    """A file that is no dataset at all, a key given twice, an explicit empty run id: exit 2, perfray's line alone
    on stderr (Ray never started: none of its start-up lines), and nothing written."""
    rng = np.random.default_rng(5)
    (tmp_path / "random.hdf5").write_bytes(rng.bytes(4000))
    (tmp_path / "random.fvecs").write_bytes(rng.bytes(4001))
    (tmp_path / "twice.yaml").write_text("name: x\nworkload:\n  load: {target_qps: 5}\nname: y\n")
    results = tmp_path / "results"
    cases = [
        (["--set", f"dataset={{kind: file, path: {tmp_path / 'random.hdf5'}}}"],
         f"{tmp_path / 'random.hdf5'}: not an HDF5 file (no HDF5 signature at its start)"),
        (["--set", f"dataset={{kind: file, path: {tmp_path / 'random.fvecs'}, queries_path: {tmp_path / 'random.fvecs'}}}"],
         f"{tmp_path / 'random.fvecs'}: not a .fvecs file (first dim "),
        (["--config", str(tmp_path / "twice.yaml")],
         f"{tmp_path / 'twice.yaml'}: key 'name' appears twice (lines 1 and 4)"),
        (["--set", "load={target_qps: 5, target_qps: 6}"], "key 'target_qps' appears twice"),
        (["--run-id", ""], "--run-id '': must not be empty"),
    ]
    for args, expected in cases:
        out = _cli(*args, "--results-dir", str(results))
        assert out.returncode == 2, (args, out.stderr[-2000:])
        assert out.stderr.count("\n") == 1 and expected in out.stderr, (args, out.stderr[-2000:])
        assert not results.exists()
