import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def sweep_cli(*args, env=None, timeout=300):
    """Run ``python -m perfray.sweep`` as a user would."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "perfray.sweep", "--quiet", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=full_env)


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())
