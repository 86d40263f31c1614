"""``perfray services`` starts real local servers a new user can point the phase configs at, and stops them."""

import shlex
import signal
import subprocess
import sys
import time

from support import REPO

from perfray.services.process import port_open


def test_services_serve_a_load_and_stop_on_ctrl_c(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "perfray", "services", "--dir", str(tmp_path / "svc")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("  --set"):
                break
        args = shlex.split(lines[-1])
        assert args == (tmp_path / "svc" / "stores.args").read_text().split(), lines
        ports = [int(a.split("=")[1]) for a in args if a.startswith("stores.postgres.port=")]
        ports += [int(a.rsplit(":", 1)[1]) for a in args if a.startswith("stores.neo4j.uri=")]
        assert len(ports) == 2 and all(port_open(p) for p in ports)
        load = subprocess.run([sys.executable, "-m", "perfray", "load", "--config", "configs/phases/3-full-stack.yaml",
                               "--set", "dataset.n=1000", "--set", "dataset.dim=8",
                               *args], capture_output=True, text=True, timeout=300, cwd=REPO)
        assert load.returncode == 0, load.stderr[-2000:]
        assert "postgres: 1,000 items loaded" in load.stderr and "neo4j: 1,000 items loaded" in load.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "services stopped" in err
    assert not any(port_open(p) for p in ports)
