"""Facts about the cluster's nodes: what each is (id, host, IP, CPUs, GPUs, resources, labels), where an actor
runs, which nodes died during a run, and each load node's clock against the driver's."""

from __future__ import annotations

import os
import socket
import time

NODE_POLL_S = 1.0  # at most this often the driver asks the GCS which nodes are alive while a cell runs


def cluster_nodes() -> list[dict]:
    """The alive nodes of the connected Ray cluster, in Ray's order, as a manifest keeps them."""
    import ray

    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        everything = node.get("Resources") or {}
        resources = {k: v for k, v in everything.items() if not k.startswith("node:")}
        nodes.append({"node_id": node["NodeID"], "hostname": node.get("NodeManagerHostname"),
                      "ip": node.get("NodeManagerAddress"), "head": "node:__internal_head__" in everything,
                      "cpus": resources.get("CPU", 0.0), "gpus": resources.get("GPU", 0.0), "resources": resources,
                      "labels": {k: v for k, v in (node.get("Labels") or {}).items() if k != "ray.io/node-id"}})
    return nodes


def here() -> dict:
    """Where the calling actor runs: its Ray node, host, IP and pid (inside a Ray worker)."""
    import ray

    context = ray.get_runtime_context()
    return {"node_id": context.get_node_id(), "hostname": socket.gethostname(),
            "ip": ray.util.get_node_ip_address(), "pid": os.getpid()}


def gpu_identity() -> dict:
    """The model and UUID NVML gives for this actor's (first visible) GPU; {} without a real GPU or NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
        handle = pynvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)
        name, uuid = pynvml.nvmlDeviceGetName(handle), pynvml.nvmlDeviceGetUUID(handle)
    except Exception:  # ImportError, or no driver: a simulated GPU
        return {}
    return {"gpu_model": _text(name), "gpu_uuid": _text(uuid)}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NodeWatch:
    """Which of the nodes known at the start have died since; asks the GCS at most every ``NODE_POLL_S``."""

    def __init__(self, node_ids) -> None:
        self.known = set(node_ids)
        self.dead: dict[str, int] = {}  # node id -> when this process learnt it (Unix ns)
        self._asked = 0.0

    def newly_dead(self, force: bool = False) -> list[str]:
        import ray

        now = time.monotonic()
        if not force and now - self._asked < NODE_POLL_S:
            return []
        self._asked = now
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        new = sorted(self.known - alive - set(self.dead))
        for node in new:
            self.dead[node] = time.time_ns()
        return new


def clock_offset(ask_clock, samples: int = 8) -> dict:
    """A remote clock against this one: ``ask_clock()`` returns the remote Unix ns time; of ``samples`` round trips
    the one with the shortest wait bounds the offset best (its true value is within ± half that round trip)."""
    best = None
    for _ in range(samples):
        sent = time.time_ns()
        remote = ask_clock()
        back = time.time_ns()
        if best is None or back - sent < best[0]:
            best = (back - sent, remote - (sent + back) // 2)
    return {"offset_ns": int(best[1]), "bound_ns": int(best[0] // 2 + 1)}
