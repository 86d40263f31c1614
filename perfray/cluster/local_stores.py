"""Servers the driver runs on its own host for a run's load actors: an embedded Milvus Lite file can be open in
one process only, so when load actors share it the driver serves it on a loopback port (``SystemSession`` is
handed this, so the systems layer starts no servers itself)."""

from __future__ import annotations

from pathlib import Path


def serve_milvus_lite(path: Path):
    """A started ``LocalMilvusLite`` serving ``path`` (its ``uri``; ``stop()`` ends it)."""
    from perfray.services.milvus_lite import LocalMilvusLite

    return LocalMilvusLite(Path(path)).start()
