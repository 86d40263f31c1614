"""What perfray's own processes take from the host, by role, and whether the system under test shares it."""

import os
import signal
import subprocess
import sys
import time

import pytest

from perfray.analysis.colocation import colocation_fields, colocation_section
from perfray.cluster.host_cpu import HostCpu, is_local_address, sut_colocation


def _burner() -> subprocess.Popen:
    """A process that burns CPU until killed, under a parent shell (as a load actor's generator process is the
    actor's child)."""
    return subprocess.Popen(["sh", "-c", f'{sys.executable} -c "while True: pass"; sleep 30'], start_new_session=True)


def test_cores_are_counted_by_role_and_what_no_role_explains_is_other():
    cpu = HostCpu()
    mine, stranger = _burner(), _burner()
    try:
        time.sleep(0.2)  # both are burning
        pids = {"load": [mine.pid], "search": []}
        first = cpu.sample(pids)
        time.sleep(1.5)
        got = cpu.between(first, cpu.sample(pids))
    finally:
        for proc in (mine, stranger):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # the load actor's child burnt what it got of a core (two burners and this test share the host's cores)
    assert 0.2 < got["load_cores"] <= 1.05
    assert got["search_cores"] == 0 and got["driver_cores"] < 0.1
    assert got["harness_cores"] == pytest.approx(got["load_cores"] + got["driver_cores"] + got["ray_cores"], abs=2e-3)
    # the stranger is nobody's: it shows in the host's busy time, and so in "other"
    assert got["other_cores"] > 0.2 and got["busy_cores"] >= got["harness_cores"] + 0.2
    assert got["busy_share"] == pytest.approx(got["busy_cores"] / got["cores"], abs=2e-3)


NODES = [{"node_id": "a", "hostname": "gpu-1", "ip": "10.0.0.1"}, {"node_id": "b", "hostname": "load-1",
                                                                      "ip": "10.0.0.2"},
         {"node_id": "c", "hostname": "gpu-1", "ip": "10.0.0.1"}]


@pytest.mark.parametrize(("host", "local"), [("127.0.0.1", True), ("127.0.0.53", True), ("::1", True),
                                             ("[::1]", True), ("localhost", True), ("0.0.0.0", True),
                                             ("10.0.0.2", True), ("load-1", True), ("10.0.0.1", False),
                                             ("db.example.com", False), (None, False)])
def test_a_store_is_local_when_loopback_or_on_a_load_host(host, local):
    assert is_local_address(host, {"load-1", "10.0.0.2"}) is local


def test_the_system_under_test_shares_a_host_with_the_load_by_hostname_or_address():
    apart = sut_colocation({"load": ["b"], "search": ["a"]}, NODES, {})
    assert apart == {"shares_host": False, "why": []}
    # a different Ray node on the same machine is the same host
    together = sut_colocation({"load": ["c"], "search": ["a", "b"]}, NODES, {})
    assert together["shares_host"] and together["why"] == ["search actor 0 on gpu-1"]
    stores = sut_colocation({"load": ["b"], "search": []}, NODES,
                            {"postgres": "127.0.0.1", "neo4j": "10.0.0.1", "http": "load-1"})
    assert stores["why"] == ["postgres at 127.0.0.1", "http at load-1"]


def test_the_report_warns_only_when_the_system_shared_the_host():
    cpu = {"host": "vm", "cores": 2, "seconds": 6.0, "busy_share": 0.6, "busy_cores": 1.2, "load_cores": 0.5,
           "driver_cores": 0.05, "ray_cores": 0.05, "search_cores": 0.0, "harness_cores": 0.6, "other_cores": 0.6}
    apart = {"cells": [{"cell": 0, "host_cpu": cpu, "sut_colocation": {"shares_host": False, "why": []}}]}
    text = "\n".join(colocation_section(apart))
    assert "| 0 | vm (2 cores) | 60% | 0.50 | 0.05 | 0.05 | 0.00 | 0.60 | no |" in text and "shared a host" not in text
    shared = {"cells": [{"cell": 0, "host_cpu": cpu, "sut_colocation": {"shares_host": True,
                                                                        "why": ["http at 127.0.0.1"]}}]}
    text = "\n".join(colocation_section(shared))
    assert "shared a host with perfray's load generation** in 1 of 1 cells (http at 127.0.0.1)" in text
    assert "more than 25% of the host" in text  # 0.6 of 2 cores
    assert colocation_fields(shared["cells"][0]) == {"harness_cores": 0.6, "host_busy_share": 0.6,
                                                     "sut_shares_host": True}
    assert colocation_section({"cells": [{"cell": 0}]}) == []
