import socket
import urllib.request

import numpy as np
from support import ServiceTimeTarget, make_plan, run_plan

from perfray.metrics.definitions import LATENCY_MS_BOUNDARIES, METRICS
from perfray.metrics.recorder import MetricsRecorder
from perfray.metrics.sinks import PrometheusSink
from perfray.services.process import free_port


def test_definitions_have_fixed_tags_and_dense_latency_buckets():
    assert sum(1 for b in LATENCY_MS_BOUNDARIES if 1 <= b <= 20) >= 20 and 8.7 in LATENCY_MS_BOUNDARIES
    assert all(d.tag_keys and d.tag_keys[0] == "run" for d in METRICS.values())


def test_recorder_counts_rows_and_serves_them_over_http():
    table, _ = run_plan(make_plan(400, 0.5, max_in_flight=3), ServiceTimeTarget(12.0))
    port = free_port()
    sink = PrometheusSink(port)
    rec = MetricsRecorder(sink, "run-a", 0)
    rec.cell_started(2, 400.0)
    for batch in table.to_batches():
        rec.rows(batch, 2, in_flight=0)
    status = np.asarray(table.column("status").to_pylist())
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    ok_line = [line for line in body.splitlines()
               if line.startswith("ray_perfray_requests_total{") and 'status="ok"' in line]
    assert float(ok_line[0].rsplit(" ", 1)[1]) == (status == "ok").sum()
    dropped = [line for line in body.splitlines() if 'status="dropped"' in line and line.startswith("ray_perfray_requests")]
    assert float(dropped[0].rsplit(" ", 1)[1]) == (status == "dropped").sum() > 0
    count = [line for line in body.splitlines() if line.startswith("ray_perfray_latency_ms_count")]
    assert float(count[0].rsplit(" ", 1)[1]) == (status == "ok").sum()
    assert 'ray_perfray_latency_ms_bucket{cell="2",le="8.7"' in body.replace('op="knn_k10_q1",phase="sustained",run="run-a",', "")
    assert 'ray_perfray_target_qps{actor="0",cell="2",run="run-a"} 400.0' in body


def test_a_taken_port_warns_once_and_the_run_goes_on(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        sink = PrometheusSink(s.getsockname()[1])
    assert sink.port is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "live metrics are off, the run goes on" in err[0]
    sink.inc("perfray_requests", 1, {"run": "r", "cell": "0", "phase": "p", "op": "o", "status": "ok"})
