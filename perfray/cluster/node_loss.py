"""Nodes lost during a run: each is a ``node_lost`` event in the manifest (when, which node, the actors it held),
found by asking the GCS while cells run, and the cell's recovery time once it ends."""

from __future__ import annotations

import time

from perfray.cluster.nodes import NodeWatch
from perfray.errors import UnavailableError

# After a cell in which actors died, how long the driver waits for the GCS to say whether their node died (it
# decides after its health checks miss: ~15 s with Ray's defaults, so a verdict may also come in a later cell).
VERDICT_WAIT_S = 5.0


class NodeLost(UnavailableError):
    """A node died and ``cluster.on_node_loss`` is ``stop``: the run ends (exit 3) with every row kept."""

    run_status = "stopped"


class NodeLossTracker:
    """``node_lost`` events into ``manifest.doc["events"]``; ``fleet`` says where each actor ran and learns which
    nodes are gone (the next cells are placed on the survivors)."""

    def __init__(self, manifest, fleet, progress, node_ids) -> None:
        self.manifest, self.fleet, self.progress = manifest, fleet, progress
        self.watch = NodeWatch(node_ids)
        manifest.doc.setdefault("events", [])

    def poll(self, cell: int, force: bool = False) -> list[dict]:
        """Record the nodes that died since the last look; returns their events."""
        events = [self._record(node, cell) for node in self.watch.newly_dead(force)]
        if events:
            self.manifest.write()
        return events

    def settle(self, cell: int) -> None:
        """After a cell whose actors died: wait (at most ``VERDICT_WAIT_S``) until the GCS says whether their nodes
        died, so a cell's node loss is recorded with it."""
        failed = {f.get("node_id") for f in self.manifest.doc["failures"] if f.get("cell") == cell} - {None}
        deadline = time.monotonic() + VERDICT_WAIT_S
        while failed - set(self.watch.dead) and time.monotonic() < deadline:
            self.poll(cell, force=True)
            time.sleep(0.25)

    def events_in(self, cell: int) -> list[dict]:
        return [e for e in self.manifest.doc["events"] if e["event"] == "node_lost" and e["cell"] == cell]

    def _record(self, node: str, cell: int) -> dict:
        fleet = self.fleet
        fleet.lost_nodes.add(node)
        failures = [f for f in self.manifest.doc["failures"] if f.get("node_id") == node]
        detected = self.watch.dead[node]
        # the first sign of the loss: an actor of the node failing, or the GCS's verdict (which comes later)
        at_ns = min([int(f["unix_s"] * 1e9) for f in failures] + [detected])
        facts = next((n for n in self.manifest.doc.get("nodes", []) if n["node_id"] == node), {})
        facts["lost_unix_ns"] = at_ns
        event = {"event": "node_lost", "cell": min([f["cell"] for f in failures], default=cell), "node_id": node,
                 "hostname": facts.get("hostname"), "ip": facts.get("ip"), "at_unix_ns": at_ns,
                 "detected_unix_ns": detected,
                 "load_actors": sorted(i for i, w in fleet.load_where.items() if w.get("node_id") == node),
                 "search_actors": [i for i, d in enumerate(fleet.described) if d.get("node_id") == node]}
        self.manifest.doc["events"].append(event)
        self.progress.note(f"  [red]node {node[:12]} ({event['hostname']}) lost in cell {event['cell']}: load actors "
                           f"{event['load_actors']}, search actors {event['search_actors']}[/red]")
        return event

    def stop_if_asked(self, cell: int, on_node_loss: str) -> None:
        if on_node_loss == "stop" and self.events_in(cell):
            nodes = ", ".join(e["node_id"][:12] for e in self.events_in(cell))
            raise NodeLost(f"node {nodes} lost in cell {cell}; cluster.on_node_loss is stop, so the run ends here "
                           "(every row recorded so far is kept)")
