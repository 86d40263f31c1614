"""Gathering a cell's rows from its load actors on the driver: drains as the cell runs, dead actors recorded
once, and every request a dead load actor never reported written as a ``lost`` row, so each scheduled request
of a cell is a row whatever happened to the actors."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from perfray.load.generator import lost_rows
from perfray.results.frame import CellFrame
from perfray.schema import REQUEST_SCHEMA

NODE_FIELDS = (REQUEST_SCHEMA.field("load_node"), REQUEST_SCHEMA.field("search_node"))


class RowGatherer:
    """Rows from ``load`` (index -> load actor handle, shared with the driver) into ``writer``, each with the
    nodes that sent and served it; failures into ``manifest``, each with its node (``node_of(role, index)``).
    ``live``: the load actors still running the current cell."""

    def __init__(self, run_dir, writer, manifest, progress, load: dict, node_of=lambda role, index: None) -> None:
        self.run_dir, self.writer, self.manifest, self.progress, self.load = run_dir, writer, manifest, progress, load
        self.node_of = node_of
        self.live: set[int] = set()
        self.seconds, self.drains = 0.0, 0
        self._load_nodes: dict[int, str | None] = {}
        self._search_nodes = pa.array([], type=pa.string())

    def start_cell(self, actors, search_nodes: list[str] | None = None) -> set[int]:
        """``actors``: the cell's load actor indices; ``search_nodes``: the node of each search actor (endpoint)."""
        self.live = set(actors)
        self.seconds, self.drains = 0.0, 0
        self._load_nodes = {i: self.node_of("load", i) for i in self.live}
        self._search_nodes = pa.array(search_nodes or [], type=pa.string())
        return self.live

    def _write(self, cell: int, actor: int, batch: pa.RecordBatch) -> None:
        """``batch`` with its load_node and search_node columns, to the writer."""
        n = batch.num_rows
        node = self._load_nodes.get(actor)
        sender = (pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int16)), pa.array([node]))
                  if node else pa.nulls(n, NODE_FIELDS[0].type))
        endpoint = batch.column("endpoint").to_numpy(zero_copy_only=False)
        served = np.nan_to_num(endpoint.astype(np.float64), nan=-1).astype(np.int64)
        outside = (served < 0) | (served >= len(self._search_nodes))
        server = pa.DictionaryArray.from_arrays(pa.array(np.where(outside, 0, served).astype(np.int16), mask=outside),
                                                self._search_nodes)
        at = batch.schema.get_field_index
        batch = batch.set_column(at("load_node"), NODE_FIELDS[0], sender)
        self.writer.write(cell, actor, batch.set_column(at("search_node"), NODE_FIELDS[1], server))

    def drain(self, cell: int) -> None:
        """Rows the live load actors finished since the last drain."""
        import ray

        started = time.perf_counter()
        self.progress.drain_started(time.time_ns())
        try:
            pending = {i: self.load[i].drain.remote() for i in sorted(self.live)}
            for i, ref in pending.items():
                try:
                    batch = ray.get(ref, timeout=60)
                except ray.exceptions.RayActorError as err:
                    self.actor_failed("load", i, cell, err)
                    continue
                if batch is not None and batch.num_rows:
                    self._write(cell, i, batch)
                    self.progress.rows(batch)
        finally:
            self.seconds += time.perf_counter() - started
            self.drains += 1
            self.progress.drain_finished()

    def actor_failed(self, role: str, index: int, cell: int, err: Exception) -> None:
        """Record a dead actor once (a load actor's drain and its run call both notice)."""
        if role == "load":
            if index not in self.live:
                return
            self.live.discard(index)
            self.load.pop(index, None)
        elif any((f["role"], f["actor"], f["cell"]) == (role, index, cell) for f in self.manifest.doc["failures"]):
            return
        self.manifest.add_failure(role=role, actor=index, cell=cell, node_id=self.node_of(role, index),
                                  error=type(err).__name__, detail=str(err).splitlines()[0][:300])
        self.progress.note(f"  [red]{role} actor {index} failed in cell {cell}: {type(err).__name__}[/red]")

    def account_lost(self, cell: int, plans: list, n_pool: int) -> int:
        """After the cell's files are closed: each dead load actor's unreported share becomes ``lost`` rows
        (error: the class that ended the actor). Returns how many."""
        dead = {f["actor"]: f["error"] for f in self.manifest.doc["failures"]
                if f["role"] == "load" and f["cell"] == cell}
        if not dead:
            return 0
        rows = CellFrame.read(self.run_dir, cell)
        actors, seq = rows.ints("actor"), rows.ints("seq")
        lost = 0
        for actor, error in sorted(dead.items()):
            recorded = seq[actors == actor]
            batch = lost_rows(plans[actor], n_pool, recorded, error)
            if batch is not None:
                self._write(cell, actor, batch)
                lost += batch.num_rows
        self.writer.close_cell(cell)
        return lost

    def failed_in(self, cell: int) -> list[dict]:
        return [f for f in self.manifest.doc["failures"] if f.get("cell") == cell]
