"""A real Prometheus scrapes a sweep; every dashboard panel and every alert rule's query has data for the run,
and promtool accepts the rule file."""

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pyarrow.parquet as pq
import pytest
import yaml
from support import REPO

from perfray.config import load_config
from perfray.driver import SweepDriver
from perfray.results.writer import prepare_run_dir
from perfray.services.process import free_port

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="needs Debian's prometheus package (.ci/run installs it)")
HYBRID_ONLY = "[hybrid runs only]"


def get(url: str) -> dict:
    return json.loads(urllib.request.urlopen(url, timeout=10).read())


@pytest.fixture
def prometheus(tmp_path):
    metrics_port, web_port = free_port(), free_port()
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(REPO / "grafana" / "alerts.yml")],
              "scrape_configs": [{"job_name": "ray", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{web_port}",
                             "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{web_port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{base}/-/ready", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("Prometheus did not become ready within 60 s")
    yield base, metrics_port
    proc.terminate()
    proc.wait(timeout=30)


def has_data(base: str, expr: str, start: float, end: float) -> bool:
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": "1"})
    answer = get(f"{base}/api/v1/query_range?{query}")
    assert answer["status"] == "success", (expr, answer)
    return any(series["values"] for series in answer["data"]["result"])


def test_promtool_accepts_the_alert_rules():
    if PROMTOOL is None:
        pytest.fail("promtool is missing although prometheus is installed")
    out = subprocess.run([PROMTOOL, "check", "rules", str(REPO / "grafana" / "alerts.yml")], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "SUCCESS: 9 rules found" in out.stdout, out.stdout + out.stderr


def test_every_panel_and_alert_query_has_data_for_a_run(prometheus, tmp_path):
    base, metrics_port = prometheus
    config = load_config(None, ["sweep={}", "duration_s=8", "warmup_s=0.5", "microbench.enabled=false",
                                "targets=[]", f"metrics.export_port={metrics_port}", "metrics.report_interval_ms=500",
                                "op_mix=mixed", "target_qps=300", "metrics.final_scrape_s=2.5"])
    start = time.time()
    assert SweepDriver(config, prepare_run_dir(tmp_path, "prom"), "prom").run() == 0
    end = time.time()

    dashboard = json.loads((REPO / "grafana" / "performance-dashboard.json").read_text())
    assert len(dashboard["panels"]) == 8
    exempt = [p["title"] for p in dashboard["panels"] if p.get("description", "").startswith(HYBRID_ONLY)]
    assert exempt == ["Cache hit rate"]  # a GPU-search run has no cache: the hybrid test below covers it
    empty = [p["title"] for p in dashboard["panels"] if p["title"] not in exempt
             and not any(has_data(base, t["expr"].replace("$run", "prom"), start, end) for t in p["targets"])]
    assert empty == []

    rules = yaml.safe_load((REPO / "grafana" / "alerts.yml").read_text())["groups"]
    recorded = [r["record"] for g in rules for r in g["rules"] if "record" in r]
    alerts = [r for g in rules for r in g["rules"] if "alert" in r]
    assert len(alerts) == 3
    assert [name for name in recorded if not has_data(base, f'{name}{{run="prom"}}', start, end)] == []
    for alert in alerts:  # each alert compares a recorded series that has data for the run
        assert alert["expr"].split()[0] in recorded
    # The values, not only their presence: requests Prometheus counted match the rows written (within 1%).
    query = urllib.parse.urlencode({"query": 'sum(ray_perfray_requests_total{run="prom"})', "start": start,
                                    "end": end + 5, "step": "1"})
    series = get(f"{base}/api/v1/query_range?{query}")["data"]["result"]
    counted = max(float(v) for _, v in series[0]["values"])
    rows = pq.read_table(tmp_path / "prom" / "requests").num_rows
    assert abs(counted - rows) <= 0.01 * rows, (counted, rows)


def test_cache_and_pool_panels_have_data_for_a_hybrid_run(prometheus, tmp_path, store_args):
    base, metrics_port = prometheus
    stores = [value for flag, value in zip(store_args[::2], store_args[1::2], strict=True) if flag == "--set"]
    config = load_config(REPO / "configs" / "phases" / "3-full-stack.yaml", [
        *stores, "sweep={}", "hybrid.cache=true", "dataset.n=2000", "dataset.dim=16", "dataset.n_queries=20",
        "load.duration_s=6", "load.warmup_s=0.5", "load.target_qps=60", "load.actors=1", "search.n_gpus=1",
        "microbench.enabled=false", "targets=[]", "slo=[]", f"metrics.export_port={metrics_port}",
        "metrics.report_interval_ms=500"])
    start = time.time()
    assert SweepDriver(config, prepare_run_dir(tmp_path, "promhy"), "promhy").run() == 0
    end = time.time()
    dashboard = json.loads((REPO / "grafana" / "performance-dashboard.json").read_text())
    panels = {p["title"]: p for p in dashboard["panels"]}
    for title in ("Cache hit rate", "Connection pools and in-flight requests"):
        assert any(has_data(base, t["expr"].replace("$run", "promhy"), start, end) for t in panels[title]["targets"]), title
    assert has_data(base, 'ray_perfray_pool_connections{run="promhy",store="postgres",state="idle"}', start, end)
    hit_rate = 'sum(ray_perfray_cache_hits_total{run="promhy"}) / sum(ray_perfray_cache_lookups_total{run="promhy"})'
    query = urllib.parse.urlencode({"query": hit_rate, "start": start, "end": end, "step": "1"})
    series = get(f"{base}/api/v1/query_range?{query}")["data"]["result"]  # instant queries after the run see
    assert float(series[0]["values"][-1][1]) > 0.8  # staleness markers; 20 distinct queries, ~360 requests
