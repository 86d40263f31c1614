"""Bad input ends with exit 2 and one line, before Ray starts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "perfray.sweep", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.mark.parametrize(("args", "message"), [
    (["--config", "missing.yaml"], "--config missing.yaml: no such file"),
    (["--set", "load.target_qps=-1"], "load.target_qps: Input should be greater than 0"),
    (["--set", "search.backend=annoy"], "unknown backend 'annoy'"),
    (["--run-id", "../escape"], "--run-id '../escape'"),
    (["--run-id", "a/b"], "--run-id 'a/b'"),
    (["--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    (["--set", "load.bogus=1"], "workload.load.bogus: Extra inputs are not permitted"),
    (["--set", "load.actors=0"], "workload.load.actors: expected a number of load actors >= 1 or auto, got 0"),
    (["--set", "dataset={kind: file, path: /no/such.fvecs, queries_path: /no/q.fvecs}"],
     "dataset.path: no such file /no/such.fvecs"),
    (["--config", "/"], "--config /: a directory; expected a YAML file"),
    (["--set", "dataset={kind: file, path: /, queries_path: /}"], "dataset.path: / is a directory; expected a file"),
])
def test_bad_usage_exits_2_with_one_line(tmp_path, args, message):
    out = run_cli("--results-dir", str(tmp_path / "r"), *args)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("perfray: error:")
    assert "Traceback" not in out.stderr


def test_unwritable_results_dir_exits_2_with_one_line(tmp_path):
    """A directory this user may not write (root may write anywhere a mode allows: /proc refuses even root)."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    for where in ([] if os.geteuid() == 0 else [locked / "r"]) + [Path("/proc/self/perfray-results")]:
        out = run_cli("--results-dir", str(where))
        assert out.returncode == 2 and out.stderr.strip().splitlines() == [
            f"perfray: error: --results-dir {where}: cannot create it (No such file or directory)"
            if str(where).startswith("/proc") else out.stderr.strip()]
        assert f"--results-dir {where}" in out.stderr and "Traceback" not in out.stderr


def test_results_dir_that_is_a_file_exits_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = run_cli("--results-dir", str(blocker / "r"))
    assert out.returncode == 2
    assert out.stderr.strip().startswith("perfray: error: --results-dir") and len(out.stderr.strip().splitlines()) == 1



@pytest.mark.parametrize("command", [["services", "--dir"], ["validate", "--plan", "configs/phases", "--only", "1",
                                                             "--results-dir"], ["history", "configs", "--out"]])
def test_every_command_names_a_folder_it_cannot_make_in_one_line(tmp_path, command):
    """A folder perfray writes into that is a file, or cannot exist (/proc refuses even root): exit 2, one line
    naming the option, before any server or run starts."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for where, why in ((blocker, "a file; expected a folder"), (blocker / "d", "cannot create it (Not a directory)"),
                       (Path("/proc/self/perfray-x"), "cannot create it (No such file or directory)")):
        out = subprocess.run([sys.executable, "-m", "perfray", *command, str(where)], capture_output=True, text=True,
                             timeout=120, cwd=REPO)
        assert out.returncode == 2, out.stderr[-2000:]
        assert out.stderr.strip().splitlines() == [f"perfray: error: {command[-1]} {where}: {why}"], out.stderr[-2000:]


@pytest.mark.parametrize(("args", "message"), [
    (["--plan", "/nonexistent"], "--plan /nonexistent: not a directory of phase configs (N-name.yaml)"),
    (["--plan", "configs"], "--plan configs: no phase configs in it"),
    (["--resume", "/nonexistent"], "--resume /nonexistent: not a campaign (no campaign.json)"),
    (["--plan", "configs/phases", "--only", "9"], "--only '9': the plan's phases are 1, 2, 3, 4, 5, 6, 7"),
    (["--plan", "configs/phases", "--only", "x"], "--only 'x': expected phase numbers, e.g. 1,3"),
    (["--plan", "configs/phases", "--capacity", "3,9"], "--capacity '3,9': the plan's phases are 1, 2, 3, 4, 5, 6, 7"),
    (["--plan", "configs/phases", "--capacity", "x"], "--capacity 'x': expected phase numbers, e.g. 1,3, or none"),
])
def test_validate_bad_usage_exits_2_with_one_line_before_any_phase(tmp_path, args, message):
    out = subprocess.run([sys.executable, "-m", "perfray", "validate", "--results-dir", str(tmp_path / "r"), *args],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"perfray: error: {message}"), out.stderr[-2000:]
    assert not (tmp_path / "r").exists()

def test_existing_run_id_is_never_overwritten(tmp_path):
    (tmp_path / "r" / "taken").mkdir(parents=True)
    out = run_cli("--results-dir", str(tmp_path / "r"), "--run-id", "taken")
    assert out.returncode == 2 and "already exists" in out.stderr


def test_redact_masks_uri_credentials_and_credential_parameters():
    from perfray.redact import redact

    assert redact("http://u:p%40ss@h:1/x") == "http://u:***@h:1/x"
    assert redact("bolt://neo4j:pw@h:7687 and postgresql://postgres@h/db") == "bolt://neo4j:***@h:7687 and postgresql://postgres@h/db"
    assert redact("http://h/x?k=1&token=abc#f") == "http://h/x?k=1&token=***#f"
    assert redact("http://host/path@x, plain text") == "http://host/path@x, plain text"


def test_an_unexpected_exception_is_exit_4_with_its_traceback_never_1(monkeypatch, capsys, tmp_path):
    """A bug is not a failed target: a pipeline that reads exit 1 as "a target failed" must not be told so."""
    from perfray import cli

    def broken(args):
        raise IndexError("tuple index out of range at http://perf:hunter2@db.example:5432/x")

    monkeypatch.setattr(cli, "run_report_command", broken)
    assert cli.main(["report", str(tmp_path)]) == 4
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("perfray: internal error: IndexError: tuple index out of range") and "a bug in perfray" in last
    assert "hunter2" not in err and "perf:***@db.example" in err
    with pytest.raises(IndexError):  # --debug: the exception itself, as before
        cli.main(["--debug", "report", str(tmp_path)])
