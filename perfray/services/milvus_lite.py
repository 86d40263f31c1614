"""Milvus Lite served from one process: a ``.db`` file can be open in only one process at a time, so when
several load actors share it, the driver runs ``python -m milvus_lite server`` on a loopback port."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from perfray.services.process import free_port, stop, wait_for_port


class LocalMilvusLite:
    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir, self.port = Path(data_dir), port or free_port()
        self.log = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60) -> LocalMilvusLite:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log, "ab")  # noqa: SIM115 - the server writes to it for its whole life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
             "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, timeout_s, "Milvus Lite", self.proc, str(self.log))
        return self

    def stop(self, timeout_s: float = 60) -> None:
        """Stop the server the way it closes cleanly (an interrupt: it drains requests, then writes what it holds
        in memory into its files). Killed by any other signal it is left to replay its write-ahead log, which
        concurrent writers can leave unreadable (milvus-lite 3.2): acknowledged writes would then be lost."""
        if self.proc:
            stop(self.proc, timeout_s, signal.SIGINT)
