"""manifest.json: what ran, on what, with which versions, and how it ended. Never secrets: the config holds
names of environment variables, not their values, and no environment is copied here."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from perfray import SCHEMA_VERSION, __version__
from perfray.redact import redact

PACKAGES = ("ray", "numpy", "pyarrow", "pydantic", "faiss-cpu", "faiss-gpu", "cupy", "cupy-cuda12x",
            "cupy-cuda13x", "h5py")


def versions() -> dict:
    out = {"perfray": __version__, "python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def git_commit(where: Path | None = None) -> str | None:
    where = where or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = out.stdout.strip()
    if out.returncode != 0 or not commit:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                           capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def host() -> dict:
    return {"hostname": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "machine": platform.machine()}


class Manifest:
    """A JSON document rewritten atomically whenever the run's state changes."""

    def __init__(self, run_dir: Path, **fields) -> None:
        self.path = Path(run_dir) / "manifest.json"
        self.doc = {"schema_version": SCHEMA_VERSION, "created_unix_s": time.time(), "status": "starting",
                    "versions": versions(), "git_commit": git_commit(), "host": host(), "failures": [],
                    **fields}

    def update(self, **fields) -> None:
        self.doc.update(fields)
        self.write()

    def add_failure(self, **failure) -> None:
        self.doc["failures"].append({"unix_s": time.time(), **failure})
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(redact(json.dumps(self.doc, indent=2, default=str, sort_keys=False)))
        os.replace(tmp, self.path)
