import json
import subprocess
import sys


def report(path):
    return subprocess.run([sys.executable, "-m", "perfray", "report", str(path)], capture_output=True, text=True,
                          timeout=120)


def test_a_directory_that_is_not_a_run_exits_2(tmp_path):
    out = report(tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == f"perfray: error: {tmp_path}: not a perfray run (no manifest.json)"


def test_a_newer_schema_version_exits_2(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    out = report(tmp_path)
    assert out.returncode == 2 and "schema_version 99 is newer than this perfray reads" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
