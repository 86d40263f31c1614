"""The CPU perfray's own processes take on the driver's host during a cell, and whether the system under test
shares a host with the load generation.

On a small box the harness (load actors and their generator processes, the driver, Ray's daemons) competes with a
co-located system under test for the same cores, and what it takes shows up in the latency it measures. A cell's
``host_cpu`` says how much: the host's busy cores over the cell, and the share of them each of perfray's roles used,
read from the kernel's per-process CPU times (``psutil``) at the cell's start and end. What is left (``other``) is
everything else on the host: a local server under test, or a neighbour.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time

import psutil

# Ray's own processes, by their command lines: the GCS and raylet binaries, the dashboard, its agents and module
# processes, the log monitor, the autoscaler monitor, the runtime-env agent, and idle or other workers ("ray::…").
# (the dashboard's module processes are forked from a forkserver named after its modules: "ray.dashboard.…").
RAY_MARKS = ("/ray/core/src/ray/", "/ray/dashboard/", "ray.dashboard.", "ray-dashboard-", "/ray/_private/",
             "/ray/autoscaler/", "ray::", "gcs_server", "raylet")
ROLES = ("load", "driver", "ray", "search")
HARNESS = ("load", "driver", "ray")  # perfray's own processes; "search" is the system under test on the GPU path
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


class HostCpu:
    """Samples of this host's CPU by role, every process read alike (its kernel CPU times), so that the roles and
    the rest add up. ``pids``: role -> pids on this host (load actors, search actors); their descendants (a load
    actor's generator process) count with them; this process is the driver; Ray's processes are found by command
    line; every other process is ``other``."""

    def __init__(self) -> None:
        self.host, self.cores = socket.gethostname(), psutil.cpu_count() or 1

    def sample(self, pids: dict[str, list[int]]) -> dict:
        roles: dict[int, str] = {}
        for role in ("load", "search"):
            for pid in pids.get(role, []):
                try:
                    proc = psutil.Process(pid)
                    roles[pid] = role
                    for child in proc.children(recursive=True):
                        roles.setdefault(child.pid, role)
                except psutil.Error:
                    continue
        roles[os.getpid()] = "driver"
        procs: dict[tuple[int, float], tuple[str, float]] = {}
        for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
            role = roles.get(proc.info["pid"])
            if role is None:
                line = " ".join(proc.info["cmdline"] or ())
                role = "ray" if any(mark in line for mark in RAY_MARKS) else "other"
            try:
                procs[(proc.info["pid"], proc.info["create_time"])] = (role, _cpu_s(proc))
            except psutil.Error:
                continue
        return {"t": time.monotonic(), "procs": procs}

    def between(self, first: dict, last: dict) -> dict:
        """Cores (CPU seconds per second of wall time) each role used between two samples: per process, what it
        used since the first sample (all of it, for a process started since); a process that ended between them
        is not counted. ``busy`` is their sum, ``other`` what no role of perfray's accounts for (a local server
        under test, a neighbour)."""
        wall = max(last["t"] - first["t"], 1e-9)
        used = dict.fromkeys((*ROLES, "other"), 0.0)
        for key, (role, cpu) in last["procs"].items():
            used[role] += max(cpu - first["procs"].get(key, (role, 0.0))[1], 0.0)
        cores = {role: value / wall for role, value in used.items()}
        busy = sum(cores.values())
        return {"host": self.host, "cores": self.cores, "seconds": round(wall, 3),
                "busy_share": round(busy / self.cores, 4), "busy_cores": round(busy, 3),
                **{f"{role}_cores": round(cores[role], 3) for role in (*ROLES, "other")},
                "harness_cores": round(sum(cores[role] for role in HARNESS), 3)}


def local_pids(entries, host: str) -> list[int]:
    """The pids of the actors (manifest entries with ``hostname`` and ``pid``) that run on ``host``."""
    return [int(e["pid"]) for e in entries if e and e.get("pid") is not None and e.get("hostname") == host]


def is_local_address(host: str | None, load_hosts: set) -> bool:
    """Whether a store's or service's ``host`` is where the load runs: a loopback name or address (as the load
    actors resolve it), or one of ``load_hosts`` (the load nodes' hostnames and IPs)."""
    if host is None:
        return False
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES or host in {h.lower() for h in load_hosts if h}:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def sut_colocation(placement: dict, nodes: list[dict], store_hosts: dict[str, str | None]) -> dict:
    """Whether the system under test shared a host with the cell's load actors: search actors on a load actor's
    host (by hostname: several Ray nodes can share one machine), or a store (``name -> host``) at a loopback
    address or a load host. ``why`` names each."""
    facts = {n["node_id"]: n for n in nodes}
    load_hosts = set()
    for node in placement.get("load") or []:
        load_hosts |= {facts.get(node, {}).get("hostname"), facts.get(node, {}).get("ip")}
    load_hosts.discard(None)
    why = [f"search actor {i} on {facts[node]['hostname']}" for i, node in enumerate(placement.get("search") or [])
           if node in facts and facts[node].get("hostname") in load_hosts]
    why += [f"{name} at {host}" for name, host in store_hosts.items() if is_local_address(host, load_hosts)]
    return {"shares_host": bool(why), "why": why}


class CellCpu:
    """A cell's ``host_cpu`` on the driver's host: ``start(fleet)`` as its load begins, ``stop(fleet)`` once it
    ends (the fleet says which load and search actors run here, by pid)."""

    def __init__(self) -> None:
        self.cpu, self._first = HostCpu(), None

    def _pids(self, fleet) -> dict[str, list[int]]:
        return {"load": local_pids(fleet.load_where.values(), self.cpu.host),
                "search": local_pids(fleet.described, self.cpu.host)}

    def start(self, fleet) -> None:
        self._first = self.cpu.sample(self._pids(fleet))

    def stop(self, fleet) -> dict:
        return self.cpu.between(self._first, self.cpu.sample(self._pids(fleet)))
