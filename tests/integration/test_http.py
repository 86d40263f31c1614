"""A deployed service over HTTP, driven like the stores: a real aiohttp server on loopback answers exact
kNN on the catalogue's vectors; perfray's rows carry its answers' recall and its stalls as queueing."""

import asyncio
import os
import re
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from support import manifest, sweep_cli

from perfray.services.process import free_port, wait_for_port


@pytest.fixture
def knn_service():
    """POST {"vector", "k"} -> {"ids": exact top-k}; the dataset is the sweep's (same seed)."""
    from aiohttp import web

    from perfray.config import SyntheticDataset
    from perfray.data import load_dataset
    from perfray.data.filters import item_attr, item_genre_label

    dataset = load_dataset(SyntheticDataset(n=2000, dim=16, n_queries=50, clusters=32, seed=7))
    base, attr, genre = dataset.base, item_attr(dataset), item_genre_label(dataset)
    norms = (base * base).sum(1)
    port = free_port()
    state = {"stall_until": 0.0, "requests": 0, "repeat_first": False, "authorization": None, "filtered": 0,
             "filter_keys": set()}

    async def search(request):
        if state["authorization"] is not None and request.headers.get("Authorization") != state["authorization"]:
            return web.Response(status=401)
        body = await request.json()
        state["requests"] += 1
        while time.monotonic() < state["stall_until"]:
            await asyncio.sleep(0.005)
        q = np.asarray(body["vector"], dtype=np.float32)
        d = norms - 2 * base @ q
        if "filter" in body:  # only items whose attribute is in [lo, hi), or of one genre label
            if "genre_label" in body["filter"]:
                d = np.where(genre == body["filter"]["genre_label"], d, np.inf)
            else:
                lo, hi = body["filter"]["attr"]
                d = np.where((attr >= lo) & (attr < hi), d, np.inf)
            state["filtered"] += 1
            state["filter_keys"].update(body["filter"])
        ids = np.lexsort((np.arange(d.size), d))[: body["k"]]
        ids = ids[np.isfinite(d[ids])]
        if state["repeat_first"]:  # the nearest neighbour k times: one true id, not k
            ids = np.repeat(ids[:1], body["k"])
        return web.json_response({"ids": ids.tolist()})

    async def head(request):
        return web.Response()

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/search", search)
    app.router.add_route("HEAD", "/search", head)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    wait_for_port(port, 10, "test service")
    yield f"http://127.0.0.1:{port}/search", state
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def http_sweep(tmp_path, run_id: str, url: str, *settings: str, env=None):
    """The smoke config as one cell against ``url`` on the catalogue the test service knows; ``settings`` are
    further ``key=value`` overrides (rate, durations, targets …)."""
    args = ["--config", "configs/smoke.yaml", "--results-dir", str(tmp_path), "--run-id", run_id]
    for setting in ("system=http", f"stores.http.url={url}", "dataset.n=2000", "dataset.dim=16",
                    "dataset.n_queries=50", "microbench.enabled=false", "sweep={}", *settings):
        args += ["--set", setting]
    return sweep_cli(*args, env=env, timeout=300)


def test_http_service_rows_have_recall_and_stalls_show_as_queueing(tmp_path, knn_service):
    url, state = knn_service

    def stall():  # once load is flowing, hold every answer for 300 ms
        deadline = time.monotonic() + 120
        while state["requests"] < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        state["stall_until"] = time.monotonic() + 0.3

    threading.Thread(target=stall, daemon=True).start()
    pinned = max(os.sched_getaffinity(0))
    out = http_sweep(tmp_path, "http", url, "load.target_qps=100", "load.duration_s=3", "load.warmup_s=0.5",
                     "load.concurrency=64", "targets=[{metric: recall_mean, min: 0.999}]",
                     f"cluster.generator_cpus=[{pinned}]")
    assert out.returncode == 0, out.stderr[-3000:]
    assert [a["cpus"] for a in manifest(tmp_path / "http")["cells"][0]["actor_stats"]] == [[pinned]]
    rows = pq.read_table(tmp_path / "http" / "requests").to_pandas()
    assert (rows.status == "ok").all() and (rows.recall == 1.0).all()
    # open loop: requests due during the stall were still sent on time and waited
    assert rows.schedule_lag_ns.quantile(0.99) < 50e6
    assert rows.latency_ns.max() > 250e6 and (rows.latency_ns > 100e6).sum() >= 10
    summary = pq.read_table(tmp_path / "http" / "summary.parquet").to_pylist()[0]
    assert summary["system"] == f"HTTP {url}"


def test_a_cpu_to_pin_the_generator_to_that_the_node_lacks_is_one_line(tmp_path, knn_service):
    out = http_sweep(tmp_path, "pin", knn_service[0], "load.target_qps=50", "load.duration_s=1",
                     "cluster.generator_cpus=[4099]")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1].startswith("perfray: error: cluster.generator_cpus: cannot pin a load "
                                                          "generator to CPU 4099 on this node"), out.stderr[-3000:]


def test_cells_asking_a_load_actor_for_over_half_its_ceiling_are_flagged_and_auto_sizes_actors(tmp_path, knn_service,
                                                                                              monkeypatch):
    """This host's calibration (here, a callback-path ceiling of 300 req/s put in the cache on purpose): at 200 QPS
    one load actor is offered 67% of it (flagged in the report, named in the manifest); ``load.actors: auto``
    starts 2 and stays under half."""
    from perfray.load import calibration

    url, _ = knn_service
    monkeypatch.setenv("PERFRAY_CACHE_DIR", str(tmp_path / "cache"))
    calibration.save({"callback": {"ceiling_qps": 300.0, "cpu_us_per_request": 30.0}})
    out = http_sweep(tmp_path, "share", url, "load.target_qps=200", "load.duration_s=2", "load.warmup_s=0.5",
                     "sweep={load.actors: [1, auto]}", "targets=[{metric: error_rate, max: 0.01}]",
                     env={"PERFRAY_CACHE_DIR": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr[-3000:]
    doc = manifest(tmp_path / "share")
    assert doc["calibration"]["ceilings_qps"] == {"callback": 300.0}
    assert [c["workload"]["load"]["actors"] for c in doc["cells"]] == [1, 2]
    assert [len(c["actor_stats"]) for c in doc["cells"]] == [1, 2]
    summary = pq.read_table(tmp_path / "share" / "summary.parquet").to_pylist()
    assert [r["client_path"] for r in summary] == ["callback", "callback"]
    section = (tmp_path / "share" / "report.md").read_text().split("## Generator-limited cells", 1)[1].split("\n## ")[0]
    flagged = [line.split("|")[1].strip() for line in section.splitlines()
               if line.startswith("| ") and not line.startswith("| cell")]
    assert "0" in flagged and re.search(r"\| 0 \| .* \| 6[5-8]% of 300/s \|", section)  # ~200 of 300 req/s
    from perfray.analysis.report import generator_share

    assert generator_share(summary[1]) < 0.5  # auto: each of 2 actors under half (flagged only if it fell behind)
    assert "1" not in flagged or summary[1]["generator_lateness_p99_ms"] > 1.0


@pytest.mark.parametrize("field", ["attr", "genre"])
def test_a_filtered_cell_sends_each_querys_window_and_the_service_applying_it_has_exact_recall(tmp_path, knn_service,
                                                                                             field):
    url, state = knn_service
    out = http_sweep(tmp_path, "filtered", url, "load.target_qps=100", "load.duration_s=1", "load.warmup_s=0.2",
                     "filter.selectivity=0.002", f"filter.field={field}", "targets=[{metric: recall_min, min: 1.0}]")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = pq.read_table(tmp_path / "filtered" / "requests").to_pandas()
    assert (rows.status == "ok").all() and (rows.recall == 1.0).all() and state["filtered"] >= len(rows)
    assert state["filter_keys"] == {"attr" if field == "attr" else "genre_label"}
    summary = pq.read_table(tmp_path / "filtered" / "summary.parquet").to_pylist()[0]
    assert summary["filter_selectivity"] == 0.002 and summary["filter_field"] == field  # 4 items: recall is of those


def test_a_service_that_repeats_one_true_neighbour_scores_one_hit_not_k(tmp_path, knn_service):
    url, state = knn_service
    state["repeat_first"] = True
    out = http_sweep(tmp_path, "dups", url, "load.target_qps=50", "load.duration_s=1", "load.warmup_s=0.2",
                     "targets=[{metric: recall_mean, min: 0.999}]")
    assert out.returncode == 1, out.stderr[-3000:]  # the recall target fails, as it must
    rows = pq.read_table(tmp_path / "dups" / "requests").to_pandas()
    assert (rows.status == "ok").all() and np.allclose(rows.recall, 0.1)  # k = 10: one true id in ten


@pytest.mark.parametrize("how", ["userinfo", "token_env"])
def test_credentials_reach_the_service_and_appear_nowhere_in_the_run_or_its_output(tmp_path, knn_service, how):
    """A credential perfray really sends (the service answers 401 without it): in the URL's userinfo (HTTP
    Basic) or in the token variable (Bearer). Neither appears in any file of the run directory or in its output."""
    import base64

    url, state = knn_service
    secret, env = "s3cr3t-Pa55w0rd", {}
    if how == "userinfo":
        url = url.replace("http://", f"http://perfray:{secret}@")
        state["authorization"] = "Basic " + base64.b64encode(f"perfray:{secret}".encode()).decode()
    else:
        env = {"PERFRAY_HTTP_TOKEN": secret}
        state["authorization"] = f"Bearer {secret}"
    out = http_sweep(tmp_path, "cred", url, "load.target_qps=50", "load.duration_s=1", "load.warmup_s=0.2",
                     "targets=[{metric: failure_rate, max: 0.0}]", env=env)
    assert out.returncode == 0, out.stderr[-3000:]  # every request was answered: the credential was sent
    written = [p for p in (tmp_path / "cred").rglob("*") if p.is_file()]
    assert len(written) > 5
    for path in written:
        assert secret.encode() not in path.read_bytes(), path
    assert secret not in out.stdout + out.stderr
    assert "perfray:***@" in (tmp_path / "cred" / "manifest.json").read_text() or how == "token_env"
    # the same URL that cannot be reached: the one-line error names it, without the credential
    down = http_sweep(tmp_path, "down", f"http://perfray:{secret}@127.0.0.1:9/search", "stores.http.connect_timeout_s=1")
    assert down.returncode == 3 and secret not in down.stdout + down.stderr
    assert "http://perfray:***@127.0.0.1:9/search" in down.stderr
