"""Stores that are down at the start, or die and come back during a run: one-line exit 3 in the first case;
error rows with the error class, a finished run and a visible recovery in the second."""

import json
import threading
import time

import pyarrow.parquet as pq
import pytest
from support import manifest, sweep_cli

from perfray.services.process import free_port

TINY = ["--set", "dataset.n=2000", "--set", "dataset.dim=16", "--set", "dataset.n_queries=50",
        "--set", "load.actors=1", "--set", "load.concurrency=4", "--set", "microbench.enabled=false",
        "--set", "search.n_gpus=1", "--set", "targets=[]", "--set", "slo=[]"]


def test_a_store_down_at_start_exits_3_naming_it_and_writes_nothing(tmp_path, store_args):
    dead = free_port()
    out = sweep_cli("--config", "configs/phases/3-full-stack.yaml", "--results-dir", str(tmp_path / "res"),
                    "--run-id", "down", *TINY, *store_args, "--set", f"stores.postgres.port={dead}",
                    "--set", "stores.postgres.connect_timeout_s=1", timeout=120)
    assert out.returncode == 3, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("perfray: error:")]
    assert len(lines) == 1 and f"postgres at postgresql://postgres@127.0.0.1:{dead}/perfray" in lines[0]
    assert not (tmp_path / "res" / "down").exists()


def _when_cell_runs(run_dir, then, timeout_s=180):
    """Call ``then()`` in a thread once the run's first cell is running (read from its manifest)."""
    def watch():
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                doc = json.loads((run_dir / "manifest.json").read_text())
                if doc["cells"][0]["status"] == "running":
                    then()
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _check_outage(run, killed_at_s, max_first_s):
    doc = manifest(run)
    assert doc["status"] == "complete"
    rows = pq.read_table(run / "requests").to_pandas()
    summary = pq.read_table(run / "summary.parquet").to_pylist()[0]
    failed = rows[rows.status.isin(["error", "timeout"])]
    assert len(failed) > 0 and summary["error_rate"] + summary["timeout_rate"] > 0
    classes = failed.error.dropna().astype(str)
    assert len(classes) > 0 and classes.map(lambda name: name[:1].isupper()).all()  # e.g. OperationalError
    # every scheduled request is a row, and requests due after the outage were answered again
    assert rows.seq.nunique() == len(rows) == summary["requests"] + (rows.phase == "warmup").sum()
    last_failure = failed.intended_ns.max()
    after = rows[rows.intended_ns > last_failure + 500_000_000]
    assert len(after) > 10 and (after.status == "ok").all()
    assert killed_at_s - 1.0 < summary["first_error_s"] < max_first_s
    assert summary["first_error_s"] <= summary["last_error_s"]
    assert "errors (first–last, s)" in (run / "report.md").read_text()
    return summary


@pytest.fixture
def own_postgres(tmp_path):
    from perfray.services.postgres import LocalPostgres

    server = LocalPostgres(tmp_path / "pg").start()
    yield server
    server.stop()


def test_postgres_killed_mid_run_becomes_error_rows_and_recovers(tmp_path, own_postgres):
    run = tmp_path / "res" / "pgkill"
    s = own_postgres

    def outage():
        time.sleep(1.7 + 3.0)  # start lead + warm-up + 3 s of the measured phase
        s.kill()
        time.sleep(2.0)
        s.start()

    watcher = _when_cell_runs(run, outage)
    out = sweep_cli("--config", "configs/phases/3-full-stack.yaml", "--results-dir", str(tmp_path / "res"),
                    "--run-id", "pgkill", *TINY, "--set", "system=postgres", "--set", "hybrid.cache=false",
                    "--set", "load.target_qps=40", "--set", "load.warmup_s=1", "--set", "load.duration_s=12",
                    "--set", "load.timeout_ms=1000", "--set", f"stores.postgres.port={s.port}",
                    "--set", f"stores.postgres.user={s.conn_user}", "--set", "stores.postgres.connect_timeout_s=1",
                    timeout=300)
    watcher.join(5)
    assert out.returncode == 0, out.stderr[-3000:]
    _check_outage(run, killed_at_s=4.0, max_first_s=6.5)


def test_neo4j_killed_mid_run_becomes_error_rows_and_recovers(tmp_path):
    from perfray.services.neo4j import LocalNeo4j

    server = LocalNeo4j(tmp_path / "neo4j").start()
    run = tmp_path / "res" / "neokill"

    def outage():
        time.sleep(1.7 + 3.0)
        server.kill()
        server.start()  # Bolt answers again after a few seconds

    watcher = _when_cell_runs(run, outage)
    try:
        out = sweep_cli("--config", "configs/phases/2-hybrid-vector-graph.yaml", "--results-dir",
                        str(tmp_path / "res"), "--run-id", "neokill", *TINY, "--set", "system=neo4j",
                        # 30 s: a restarted Neo4j (a JVM) took > 15 s to answer Bolt again on a busy CI box
                        "--set", "load.target_qps=40", "--set", "load.warmup_s=1", "--set", "load.duration_s=30",
                        "--set", "load.timeout_ms=1000", "--set", "hybrid.hops=1", "--set", f"stores.neo4j.uri={server.uri}",
                        "--set", "stores.neo4j.connect_timeout_s=1", timeout=300)
        watcher.join(30)
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr[-3000:]
    _check_outage(run, killed_at_s=4.0, max_first_s=6.5)
