"""``perfray services``: start local PostgreSQL, Neo4j and (optionally) pgvector servers on loopback ports
for trying the phase configs on one machine; prints the ``--set`` arguments that point a sweep at them and
runs until Ctrl-C / SIGTERM, then stops them cleanly."""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path

from perfray.errors import make_dir


def overrides(postgres, neo4j, pgvector) -> list[str]:
    """``--set`` arguments for a sweep or ``perfray load`` to use these servers."""
    args = [f"stores.postgres.port={postgres.port}", f"stores.postgres.user={postgres.conn_user}",
            f"stores.neo4j.uri={neo4j.uri}"]
    if pgvector is not None:
        args += [f"stores.pgvector.port={pgvector.port}", f"stores.pgvector.user={pgvector.conn_user}"]
    return [part for arg in args for part in ("--set", arg)]


def serve(root: Path, with_pgvector: bool, stop: threading.Event | None = None) -> int:
    from perfray.services.neo4j import LocalNeo4j
    from perfray.services.postgres import LocalPostgres, embedded_bindir

    root = make_dir(root, "--dir")
    stop = stop or threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    started = []
    try:
        postgres = LocalPostgres(root / "postgres").start()
        started.append(postgres)
        pgvector = LocalPostgres(root / "pgvector", bindir=embedded_bindir()).start() if with_pgvector else None
        if pgvector is not None:
            started.append(pgvector)
        neo4j = LocalNeo4j(root / "neo4j").start()
        started.append(neo4j)
        args = overrides(postgres, neo4j, pgvector)
        (root / "stores.args").write_text("\n".join(args) + "\n")
        print(f"perfray: services ready (Ctrl-C stops them); point a run at them with:\n  {shlex.join(args)}",
              flush=True)
        stop.wait()
    finally:
        for server in reversed(started):
            server.stop()
        print("perfray: services stopped", file=sys.stderr, flush=True)
    return 0
