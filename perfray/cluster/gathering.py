"""Gathering a cell's rows from its load actors on the driver: drains as the cell runs, dead actors recorded
once, and every request a dead load actor never reported written as a ``lost`` row, so each scheduled request
of a cell is a row whatever happened to the actors."""

from __future__ import annotations

import time

import pyarrow.compute as pc

from perfray.load.generator import lost_rows
from perfray.results.writer import read_cell


class RowGatherer:
    """Rows from ``load`` (index -> load actor handle, shared with the driver) into ``writer``; failures into
    ``manifest``. ``live``: the load actors still running the current cell."""

    def __init__(self, run_dir, writer, manifest, progress, load: dict) -> None:
        self.run_dir, self.writer, self.manifest, self.progress, self.load = run_dir, writer, manifest, progress, load
        self.live: set[int] = set()
        self.seconds, self.drains = 0.0, 0

    def start_cell(self, actors) -> set[int]:
        self.live = set(actors)
        self.seconds, self.drains = 0.0, 0
        return self.live

    def drain(self, cell: int) -> None:
        """Rows the live load actors finished since the last drain."""
        import ray

        started = time.perf_counter()
        try:
            pending = {i: self.load[i].drain.remote() for i in sorted(self.live)}
            for i, ref in pending.items():
                try:
                    batch = ray.get(ref, timeout=60)
                except ray.exceptions.RayActorError as err:
                    self.actor_failed("load", i, cell, err)
                    continue
                if batch is not None and batch.num_rows:
                    self.writer.write(cell, i, batch)
                    self.progress.rows(batch)
        finally:
            self.seconds += time.perf_counter() - started
            self.drains += 1

    def actor_failed(self, role: str, index: int, cell: int, err: Exception) -> None:
        """Record a dead actor once (a load actor's drain and its run call both notice)."""
        if role == "load":
            if index not in self.live:
                return
            self.live.discard(index)
            self.load.pop(index, None)
        self.manifest.add_failure(role=role, actor=index, cell=cell, error=type(err).__name__,
                                  detail=str(err).splitlines()[0][:300])
        self.progress.note(f"  [red]{role} actor {index} failed in cell {cell}: {type(err).__name__}[/red]")

    def account_lost(self, cell: int, plans: list, n_pool: int) -> int:
        """After the cell's files are closed: each dead load actor's unreported share becomes ``lost`` rows
        (error: the class that ended the actor). Returns how many."""
        dead = {f["actor"]: f["error"] for f in self.manifest.doc["failures"]
                if f["role"] == "load" and f["cell"] == cell}
        if not dead:
            return 0
        rows = read_cell(self.run_dir, cell)
        lost = 0
        for actor, error in sorted(dead.items()):
            recorded = rows.filter(pc.equal(rows["actor"], actor))["seq"].to_numpy()
            batch = lost_rows(plans[actor], n_pool, recorded, error)
            if batch is not None:
                self.writer.write(cell, actor, batch)
                lost += batch.num_rows
        self.writer.close_cell(cell)
        return lost

    def failed_in(self, cell: int) -> list[dict]:
        return [f for f in self.manifest.doc["failures"] if f.get("cell") == cell]
