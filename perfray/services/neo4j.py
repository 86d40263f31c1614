"""Neo4j Community Edition (from Maven Central, built by ``services/neo4j/pom.xml``) with Bolt on a loopback
port, in its own home directory."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from perfray.errors import UnavailableError
from perfray.services.process import free_port, kill, stop, wait_for_port

PROJECT = Path(__file__).resolve().parents[2] / "services" / "neo4j"


def neo4j_classpath(build: bool = True) -> str:
    """The launcher's classpath; runs Maven once when the build is missing (``mvn -B package``)."""
    classes, lib = PROJECT / "target" / "classes", PROJECT / "target" / "lib"
    if not (classes / "perfray" / "Neo4jServer.class").exists() or not lib.is_dir():
        if not build:
            raise UnavailableError(f"Neo4j launcher not built; run: mvn -q -B -f {PROJECT}/pom.xml package")
        mvn = shutil.which("mvn")
        if mvn is None or not (PROJECT / "pom.xml").exists():
            raise UnavailableError(f"cannot build the Neo4j launcher: needs Maven and {PROJECT}/pom.xml")
        out = subprocess.run([mvn, "-q", "-B", "-f", str(PROJECT / "pom.xml"), "package"], capture_output=True,
                             text=True)
        if out.returncode != 0:
            tail = (out.stdout + out.stderr).strip().splitlines()[-1:] or ["no output"]
            raise UnavailableError(f"building the Neo4j launcher failed: {tail[0][:300]}")
    return f"{classes}{os.pathsep}{lib}{os.sep}*"


class LocalNeo4j:
    """``start()`` launches Neo4j and waits for Bolt; ``kill()`` ends it like a crash; ``stop()`` cleanly."""

    def __init__(self, home: Path, port: int | None = None, heap_mb: int = 768, page_cache_mb: int = 128) -> None:
        self.home, self.port = Path(home), port or free_port()
        self.heap_mb, self.page_cache_mb = heap_mb, page_cache_mb
        self.log = self.home / "neo4j.log"
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120) -> LocalNeo4j:
        classpath = neo4j_classpath()
        self.home.mkdir(parents=True, exist_ok=True)
        java = os.environ.get("PERFRAY_JAVA") or shutil.which("java")
        if java is None:
            raise UnavailableError("Neo4j needs Java 17 or 21 on PATH (or PERFRAY_JAVA)")
        log = open(self.log, "ab")  # noqa: SIM115 - the server writes to it for its whole life
        self.proc = subprocess.Popen(
            [java, f"-Xmx{self.heap_mb}m", "-XX:+UseParallelGC", "-cp", classpath, "perfray.Neo4jServer",
             str(self.home / "db"), str(self.port), str(self.page_cache_mb)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, timeout_s, "Neo4j", self.proc, str(self.log))
        return self

    def kill(self) -> None:
        kill(self.proc)

    def stop(self) -> None:
        if self.proc:
            stop(self.proc, timeout_s=60)

    def settings(self) -> dict:
        """``stores.neo4j`` fields for this server."""
        return {"uri": self.uri}
