"""Driver-side handling of the database systems: reach every store before anything is written, serve an
embedded Milvus Lite file from one process, load the catalogue once, and say what load actors connect to."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from perfray.data.catalogue import Catalogue, build_catalogue
from perfray.sut import SYSTEMS


@dataclass
class SystemPlan:
    """What a load actor needs to build its own client of a system (plain data: it crosses Ray)."""

    name: str
    key: str
    workload: dict
    stores: dict
    label: str
    needs_ray: bool = False  # its client reaches the GPU actors (so it runs in the load actor's Ray worker)


def make_system(name: str, workload, stores):
    return SYSTEMS.load(name)(workload, stores)


def effective_batching(cell):
    """The cell as its load actors run it: a system that answers one request per call gets one request per call
    (no micro-batch window, ``batch_max`` 1) whatever the config says; the micro-batched GPU search path keeps
    the configured window and size."""
    if SYSTEMS.load(cell.system).micro_batched or (cell.load.batch_max == 1 and cell.load.batch_window_ms == 0):
        return cell
    return cell.model_copy(update={"load": cell.load.model_copy(update={"batch_window_ms": 0.0, "batch_max": 1})})


class SystemSession:
    """Stores used by a sweep's cells: ``check()`` connects to each once; ``plan(cell, catalogue)`` loads
    (idempotently) and returns the SystemPlan for load actors; ``close()`` stops what it started."""

    def __init__(self, stores, serve_embedded=None) -> None:
        """``serve_embedded(path)``: starts a server for an embedded Milvus Lite file (the cluster layer's
        ``serve_milvus_lite``), for load actors that share it."""
        self.stores = stores
        self._serve = serve_embedded
        self._milvus_server = None
        self._loaded: set[tuple[str, str]] = set()
        self._catalogues: dict[str, Catalogue] = {}

    def needed(self, cells) -> list[str]:
        """Systems the cells use that have stores (the micro-batched GPU path has none)."""
        names = []
        for cell in cells:
            cls = SYSTEMS.load(cell.system)
            if not cls.micro_batched and cell.system not in names:
                names.append(cell.system)
        return names

    def actor_stores(self):
        """The stores spec load actors use: an embedded Milvus Lite file becomes the driver's local server."""
        milvus = self.stores.milvus
        if not milvus.embedded:
            return self.stores
        if self._milvus_server is None:
            if self._serve is None:
                from perfray.errors import UnavailableError

                raise UnavailableError(f"stores.milvus.uri {milvus.uri!r}: an embedded Milvus Lite file needs the "
                                       "driver to serve it to load actors (SystemSession(serve_embedded=…))")
            self._milvus_server = self._serve(Path(milvus.uri))
        return self.stores.model_copy(update={"milvus": milvus.model_copy(update={"uri": self._milvus_server.uri})})

    def check(self, cells) -> None:
        """Connect to every store the cells use; the first one that is down raises a one-line error."""
        for cell in cells:
            cls = SYSTEMS.load(cell.system)
            if cls.micro_batched:
                continue
            system = cls(cell, self._stores_for(cell))
            try:
                system.connect()
            finally:
                system.close()

    def check_reachable(self, cells, nodes: int) -> None:
        """An embedded Milvus Lite is served on the driver's loopback: load actors on other nodes cannot reach
        it, so on a multi-node cluster a cell that uses it stops the run (exit 3) before anything is measured."""
        if nodes <= 1 or not self.stores.milvus.embedded:
            return
        if any("milvus" in self.stores_of(cell) for cell in cells):
            from perfray.errors import UnavailableError

            raise UnavailableError(
                f"stores.milvus.uri {self.stores.milvus.uri!r} is an embedded Milvus Lite file, served on the "
                f"driver's loopback; load actors on the other {nodes - 1} node(s) of this Ray cluster cannot reach "
                "it: run a Milvus server and set stores.milvus.uri to an address every node reaches")

    def stores_of(self, cell) -> tuple[str, ...]:
        return tuple(make_system(cell.system, cell, self.stores).stores)

    def _stores_for(self, cell):
        uses = make_system(cell.system, cell, self.stores).stores
        return self.actor_stores() if "milvus" in uses else self.stores

    def catalogue(self, cell, dataset) -> Catalogue:
        key = json.dumps([dataset.fingerprint, cell.catalogue.model_dump(mode="json")])
        if key not in self._catalogues:
            self._catalogues[key] = build_catalogue(dataset, cell.catalogue)
        return self._catalogues[key]

    def plan(self, cell, catalogue: Catalogue, progress=None) -> tuple[SystemPlan, dict]:
        """Load the catalogue into the cell's stores (once per system and catalogue) and describe it."""
        stores = self._stores_for(cell)
        system = make_system(cell.system, cell, stores)
        label = make_system(cell.system, cell, self.stores).label()
        info: dict = {}
        system.connect()
        try:
            if (cell.system, catalogue.fingerprint) not in self._loaded:
                info = system.load(catalogue, progress)
                self._loaded.add((cell.system, catalogue.fingerprint))
        finally:
            system.close()
        stores_json = stores.model_dump(mode="json")
        workload_json = cell.model_dump(mode="json")
        key = json.dumps([cell.system, workload_json, stores_json, catalogue.fingerprint], sort_keys=True)
        return SystemPlan(cell.system, key, workload_json, stores_json, label, system.needs_gpu_actors), info

    def on_system(self, cell, action: str, *args) -> None:
        """``action(*args)`` (``begin_writes``, ``undo_writes``) on a connected instance of the cell's system."""
        system = make_system(cell.system, cell, self._stores_for(cell))
        system.connect()
        try:
            getattr(system, action)(*args)
        finally:
            system.close()

    def close(self) -> None:
        if self._milvus_server is not None:
            self._milvus_server.stop()
            self._milvus_server = None
