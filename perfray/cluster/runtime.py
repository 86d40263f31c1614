"""Connect to Ray: embedded local Ray by default, a cluster under ``ray job submit`` or with an address.

Without real GPUs, an embedded Ray declares logical GPUs (``num_gpus``) so a 1…N GPU sweep still runs on a
laptop; every figure from such a run is labelled simulated.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

from perfray.errors import UnavailableError

START_TRIES = 3  # embedded ray.init attempts when its node times out during start-up
START_PAUSE_S = 2.0  # before the next one, times the attempt number
# What ray.init raises when the embedded node's start-up timed out: the raylet never registered with the GCS, or
# the GCS never wrote its port file ("Timed out waiting for file .../gcs_server_port_...").
START_TIMEOUTS = ("timed out during startup", "Timed out waiting for file")
# An embedded Ray's processes that serve people watching, not requests: the dashboard (and its module processes),
# the dashboard agent that turns actors' metrics into Prometheus text, the log monitor and the autoscaler monitor.
# They run at this nice value, so a system under test that shares the box never waits behind them: the dashboard
# agent works in bursts of several ms at each metrics report, and a 3 ms local server's requests waited up to
# 3.4 ms behind it (perf sched, 5,000 req/s; benchmarks/results/http_sweep-2026-11-30.txt). Ray's GCS, raylet and
# workers keep their priority (the raylet's children, search actors among them, inherit it).
OBSERVER_NICE = 10
OBSERVER_MARKS = ("/dashboard/dashboard.py", "ray::DashboardAgent", "/dashboard/agent.py", "/_private/log_monitor.py",
                  "/autoscaler/_private/monitor.py")


@dataclass
class RayInfo:
    embedded: bool
    address: str | None
    logical_gpus: bool
    real_gpus_on_driver: int
    resources: dict
    dashboard_url: str | None
    metrics_port: int | None = None
    observers: dict | None = None  # embedded: {"nice", "pids"} of the processes quiet_observers lowered


def count_local_gpus() -> int:
    """NVIDIA GPUs on this host, via nvidia-smi (0 if there is none or no driver)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def probe(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a host:port where nothing listens (ray.init would wait minutes)."""
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise UnavailableError(f"no Ray cluster answers at {address} ({err.strerror or err}); "
                               "start one with 'ray start --head' or unset cluster.address") from None


def joins_cluster(cluster) -> bool:
    """Whether ``connect`` will join a running cluster (an address given) rather than start embedded Ray."""
    return bool(cluster.address or os.environ.get("RAY_ADDRESS"))


def connect(cluster, gpus_needed: int, cpus_needed: float, metrics=None) -> RayInfo:
    """Start or join Ray and make sure ``gpus_needed`` (real or logical) GPUs exist."""
    import ray

    address = cluster.address or os.environ.get("RAY_ADDRESS")
    real = count_local_gpus()
    context = None
    if address:
        probe(address)
        try:
            context = ray.init(address=address, log_to_driver=False)
        except Exception as err:
            raise UnavailableError(f"cannot join the Ray cluster at {address}: {err}".splitlines()[0]) from None
        embedded, logical = False, False
    else:
        logical = cluster.logical_gpus == "always" or (cluster.logical_gpus == "auto" and real < gpus_needed)
        if cluster.logical_gpus == "never" and real < gpus_needed:
            raise UnavailableError(
                f"the sweep needs {gpus_needed} GPUs and this machine has {real}; "
                "set cluster.logical_gpus: auto to simulate them")
        num_gpus = gpus_needed if logical else real
        metric_options = {}
        if metrics is not None and metrics.enabled:
            metric_options["_system_config"] = {"metrics_report_interval_ms": metrics.report_interval_ms}
            if metrics.export_port:
                metric_options["_metrics_export_port"] = metrics.export_port
        options = dict(metric_options, address="local", num_gpus=num_gpus,
                       num_cpus=max(os.cpu_count() or 1, int(cpus_needed + 0.999)), log_to_driver=False,
                       include_dashboard=None)
        context = _start_embedded(ray, options)
        embedded = True
    observers = {"nice": OBSERVER_NICE, "pids": quiet_observers()} if embedded else None
    restore_interrupt_handlers()
    resources = ray.cluster_resources()
    have = int(resources.get("GPU", 0))
    if have < gpus_needed:
        ray.shutdown()
        raise UnavailableError(
            f"the Ray cluster has {have} GPUs and the sweep needs {gpus_needed}; lower search.n_gpus, add GPU "
            f"nodes, or for a simulated run start the head with 'ray start --head --num-gpus {gpus_needed}'")
    dashboard = getattr(context, "dashboard_url", None) if context is not None else None
    return RayInfo(embedded, address, logical, real, dict(resources), dashboard or None, _metrics_port(), observers)


def _start_embedded(ray, options: dict, tries: int = START_TRIES):
    """``ray.init`` of an embedded Ray, tried again when its node does not come up in time (``START_TIMEOUTS``:
    its raylet never registered, or its GCS never wrote its port file; both seen on busy 2-vCPU VMs, the first
    twice in a row once); still not up after ``tries``: one line, exit 3."""
    for attempt in range(1, tries + 1):
        try:
            return ray.init(**options)
        except Exception as err:
            if not any(sign in str(err) for sign in START_TIMEOUTS):
                raise
            ray.shutdown()
            _stop_half_started()
            if attempt == tries:
                raise UnavailableError(f"the embedded Ray did not start ({tries} tries: its node did not come up in "
                                       "time); the machine may be overloaded, try again") from None
            time.sleep(START_PAUSE_S * attempt)
    return None


def quiet_observers(nice: int = OBSERVER_NICE) -> list[int]:
    """Lower to ``nice`` every thread of this process's embedded Ray's observer processes (``OBSERVER_MARKS`` in
    their command line) and of their children; returns their pids. Lowering one's own processes needs no
    privilege; where there is no /proc (not Linux), nothing is changed."""
    children = _children_by_parent()
    ours = _descendants(os.getpid(), children)  # the Ray this process started
    quiet = set()
    for pid in (pid for pid in ours if any(mark in _command(pid) for mark in OBSERVER_MARKS)):
        quiet.update((pid, *_descendants(pid, children)))
    for pid in sorted(quiet):
        for tid in _tasks(pid):
            try:
                os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
            except OSError:  # ended meanwhile
                pass
    return sorted(quiet)


def _stop_half_started() -> None:
    """Kill what a failed embedded start left running (ray.shutdown knows no node that never finished starting):
    this process's GCS and raylet, whose children go with them."""
    for pid in _descendants(os.getpid(), _children_by_parent()):
        if any(daemon in _command(pid) for daemon in ("/gcs/gcs_server", "/raylet/raylet")):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def _descendants(pid: int, children: dict[int, list[int]]) -> list[int]:
    found, todo = [], list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, ()))
    return found


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in _listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            parent = int(stat[stat.rfind(")") + 2:].split()[1])
            children.setdefault(parent, []).append(int(entry))
    return children


def _command(pid: int) -> str:
    """The program a process runs: its command line up to the first option (``python -u .../log_monitor.py``, a
    process title such as ``ray::DashboardAgent``); the raylet's options name the agents' scripts, not itself."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return ""
    program = []
    for arg in argv:
        if arg.startswith("--"):
            break
        program.append(arg)
    return " ".join(program)


def _tasks(pid: int) -> list[int]:
    return [int(t) for t in _listdir(f"/proc/{pid}/task")]


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def alive_nodes() -> int:
    """Nodes of the connected Ray cluster that are alive."""
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


def _metrics_port() -> int | None:
    """Where this node's Ray metrics agent serves Prometheus text (private API; None if it moved)."""
    try:
        import ray

        return int(ray._private.worker.global_worker.node.metrics_export_port)
    except Exception:
        return None


def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def restore_interrupt_handlers() -> None:
    """ray.init() installs its own SIGTERM handler in the driver; put back ours (SIGINT/SIGTERM raise
    KeyboardInterrupt, so the driver writes what it has and exits 130)."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _raise_interrupt)


def shutdown(info: RayInfo | None) -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
