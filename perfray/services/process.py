"""What the local servers share: free loopback ports, waiting for a port, stopping a process tree."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time

from perfray.errors import UnavailableError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout_s: float, what: str, proc: subprocess.Popen | None = None,
                  log: str | None = None) -> None:
    """Until ``port`` accepts connections; a server that exits first, or never opens, raises one line."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if proc is not None and proc.poll() is not None:
            raise UnavailableError(f"{what} exited with code {proc.returncode} before opening port {port}"
                                   + (f"; see {log}" if log else ""))
        time.sleep(0.1)
    raise UnavailableError(f"{what} did not open port {port} within {timeout_s:g} s" + (f"; see {log}" if log else ""))


def unprivileged_user() -> str | None:
    """Servers that refuse root (PostgreSQL) run as this user when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise UnavailableError("running as root and no unprivileged user (postgres or nobody) to run servers as")


def as_user(user: str | None) -> dict:
    """Popen keywords that run the child as ``user`` (nothing when None)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def chown_tree(path: str, user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def stop(proc: subprocess.Popen, timeout_s: float = 20, sig: int = signal.SIGTERM) -> None:
    """Signal the process group (SIGTERM by default), then SIGKILL if it does not exit."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def kill(proc: subprocess.Popen | None) -> None:
    """SIGKILL the whole process group, as a crash would."""
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
