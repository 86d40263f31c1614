"""The lean HTTP path (keep-alive pool on non-blocking sockets, callback-driven sender, precise pacer) against a
real responder process: row accounting, queueing as schedule lag, multi-query requests, error classes,
timeouts, never sending before a request is due, and replies stamped when their bytes arrived."""

import asyncio
import subprocess
import sys
import time

import numpy as np
import pyarrow.compute as pc
import pytest
from support import make_plan, run_plan

from perfray.config import Workload
from perfray.load.generator import QueryPool
from perfray.load.targets import SystemEndpoint
from perfray.services.http_responder import BODY
from perfray.services.process import free_port, wait_for_port
from perfray.sut.http_client import Exchange, HttpPool
from perfray.sut.session import make_system
from perfray.systems_config import StoresSpec
from perfray.timing import process_clock


@pytest.fixture
def responder():
    procs = []

    def start(*args):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "perfray.services.http_responder", "--port", str(port), *args])
        procs.append(proc)
        wait_for_port(port, 20, "http responder")
        return f"http://127.0.0.1:{port}/search"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def http_endpoint(url: str, concurrency: int):
    workload = Workload.model_validate({"system": "http", "load": {"concurrency": concurrency}})
    system = make_system("http", workload, StoresSpec(http={"url": url}))
    system.connect()
    system.prepare(None)
    return system, SystemEndpoint(system, concurrency)


def statuses(table):
    return pc.cast(table["status"], "string").to_numpy(zero_copy_only=False)


POOL = QueryPool(np.random.default_rng(0).standard_normal((32, 8)).astype(np.float32))


def test_every_request_answered_on_few_keep_alive_connections_and_never_sent_early(responder):
    system, endpoint = http_endpoint(responder(), concurrency=8)
    assert endpoint.mode == "callback"
    table, stats = run_plan(make_plan(2000, 1.0, arrival="poisson"), endpoint, POOL)
    assert table.num_rows == stats["requests"] and (statuses(table) == "ok").all()
    assert stats["pacer"] == "timerfd"
    lag = table["schedule_lag_ns"].to_numpy()
    assert lag.min() >= 0  # woken early by design, but never sent before the intended time
    service = table["service_ns"].to_numpy()
    assert (service > 0).all() and (table["latency_ns"].to_numpy() >= service).all()
    assert len(system._pool.connections) <= 8
    system.close()


def test_requests_waiting_for_a_connection_count_as_schedule_lag_not_service(responder):
    """One connection, 5 ms per reply, 300 req/s: the server can serve 200/s, so requests queue in the
    client. Their wait is lag (sent is when the bytes left); service stays the server's 5 ms."""
    system, endpoint = http_endpoint(responder("--delay-ms", "5"), concurrency=1)
    table, _ = run_plan(make_plan(300, 1.0), endpoint, POOL)
    assert (statuses(table) == "ok").all()
    service_ms = table["service_ns"].to_numpy() / 1e6
    lag_ms = table["schedule_lag_ns"].to_numpy() / 1e6
    assert 5.0 <= np.median(service_ms) < 7.0
    assert np.percentile(lag_ms, 90) > 50  # the queue grows by ~1.7 ms per request
    latency = table["latency_ns"].to_numpy()
    assert np.array_equal(latency, table["schedule_lag_ns"].to_numpy() + table["service_ns"].to_numpy())
    system.close()


def test_multi_query_requests_send_one_http_request_per_query_and_score_every_reply(responder):
    system, endpoint = http_endpoint(responder(), concurrency=4)
    ids_truth = np.tile(np.arange(128), (POOL.queries.shape[0], 1))  # the responder always answers ids 0..9
    pool = QueryPool(POOL.queries, ids_truth, np.tile(np.arange(128.0), (POOL.queries.shape[0], 1)))
    table, _ = run_plan(make_plan(200, 0.5, mix="complex", k=10), endpoint, pool)
    assert (statuses(table) == "ok").all()
    n_queries = table["n_queries"].to_numpy()
    assert n_queries.max() == 16 and table["batch_queries"].to_numpy().tolist() == n_queries.tolist()
    recall = table["recall"].to_numpy()
    k = table["k"].to_numpy()
    assert np.allclose(recall[k == 10], 1.0)  # ids 0..9 are the truth's top-10
    assert np.allclose(recall[k == 50], 10 / 50)  # 10 of the 50 asked for


def test_http_errors_refusals_and_timeouts_become_rows_with_their_class(responder):
    system, endpoint = http_endpoint(responder("--status", "503"), concurrency=4)
    table, _ = run_plan(make_plan(200, 0.3), endpoint, POOL)
    assert (statuses(table) == "error").all()
    assert set(pc.cast(table["error"], "string").to_pylist()) == {"HTTPStatus503"}

    system, endpoint = http_endpoint(responder("--delay-ms", "200"), concurrency=64)
    table, _ = run_plan(make_plan(200, 0.3, timeout_ms=30), endpoint, POOL)
    assert (statuses(table) == "timeout").all()
    latency_ms = table["latency_ns"].to_numpy() / 1e6
    waited_ms = table["service_ns"].to_numpy() / 1e6  # done - sent: a timed-out row ends exactly at the timeout
    assert np.all(latency_ms >= 30) and np.allclose(waited_ms, 30, atol=0.01)  # (late sends on a busy box: lag)

    dead = f"http://127.0.0.1:{free_port()}/search"
    workload = Workload.model_validate({"system": "http", "load": {"concurrency": 4}})
    system = make_system("http", workload, StoresSpec(http={"url": dead}))
    system.prepare(None)
    table, _ = run_plan(make_plan(100, 0.3), SystemEndpoint(system, 4), POOL)
    assert (statuses(table) == "error").all()
    assert set(pc.cast(table["error"], "string").to_pylist()) == {"ConnectionRefusedError"}


def test_the_responder_saves_its_own_lateness_on_sigusr1(tmp_path):
    """Benchmarks tell a client that mis-measured from one that kept the server from its work by the server's
    own record: one entry per delayed reply, write − due, reset at each save."""
    import signal
    import time

    out = tmp_path / "late.npy"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "perfray.services.http_responder", "--port", str(port),
                             "--delay-ms", "4", "--lateness-out", str(out)])
    try:
        wait_for_port(port, 20, "http responder")
        system, endpoint = http_endpoint(f"http://127.0.0.1:{port}/search", concurrency=8)
        table, _ = run_plan(make_plan(300, 1.0, arrival="poisson"), endpoint, POOL)
        system.close()
        ok = int((statuses(table) == "ok").sum())
        assert ok == table.num_rows and (table["service_ns"].to_numpy() >= 4_000_000).all()

        def saved():
            out.unlink(missing_ok=True)
            proc.send_signal(signal.SIGUSR1)
            for _ in range(100):
                if out.exists():
                    try:
                        return np.load(out)
                    except (ValueError, EOFError, OSError):
                        pass
                time.sleep(0.05)
            raise AssertionError("no lateness saved")

        late = saved()
        assert late.size == ok  # one per reply
        assert late.min() >= 0 and np.median(late) < 2_000_000
        assert saved().size == 0  # each save starts afresh
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_reply_is_stamped_when_it_arrived_not_when_the_busy_loop_got_to_it(responder):
    """The responder answers at once; the client's loop is then held for 200 ms (as a preempted or busy load
    generator is): the reply's done stamp is the kernel's receive time, milliseconds after the send, and a
    second reply on the same keep-alive connection is stamped the same way."""
    url = responder()

    async def exchange(pool, hold_s: float):
        replies = []
        pool.start(Exchange([pool.encode(b"{}")], lambda *reply: replies.append(reply), pool))
        time.sleep(hold_s)  # the loop is held: the reply arrives meanwhile
        held_until = pool.now_ns()
        while not replies:
            await asyncio.sleep(0.001)
        return replies[0], held_until

    async def go():
        pool = HttpPool(url, 1, {}, 5.0, process_clock())
        try:
            assert await pool.warm() == 1
            return [await exchange(pool, 0.2) for _ in range(2)]
        finally:
            pool.close()

    for (bodies, sent_ns, done_ns), held_until in asyncio.run(go()):
        assert isinstance(bodies, list) and sent_ns < done_ns < held_until
        assert done_ns - sent_ns < 50e6, (done_ns - sent_ns) / 1e6  # not the 200 ms the loop was held


@pytest.fixture
def tls_server(tmp_path):
    """A keep-alive HTTPS server on loopback (a self-signed certificate for localhost, in its own thread) that
    answers each request with the responder's reply; yields (url, the certificate's path)."""
    import datetime
    import ssl
    import threading

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from perfray.services.http_responder import RESPONSE

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    port, loop, ready = free_port(), asyncio.new_event_loop(), threading.Event()

    async def serve(reader, writer):
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            writer.write(RESPONSE)

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(asyncio.start_server(serve, "127.0.0.1", port, ssl=context))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    yield f"https://localhost:{port}/search", cert_path
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_https_requests_are_answered_on_a_verified_keep_alive_connection(tls_server, monkeypatch):
    """Over TLS (asyncio's transport reads; a reply is stamped when read): the certificate is verified against
    the trust store (here the test's own, through SSL_CERT_FILE) and requests share one keep-alive connection."""
    url, cert = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))

    async def go():
        pool = HttpPool(url, 1, {}, 5.0, process_clock())
        replies = []
        try:
            for _ in range(3):
                pool.start(Exchange([pool.encode(b"{}")], lambda *reply: replies.append(reply), pool))
                while len(replies) < _ + 1:
                    await asyncio.sleep(0.001)
            return replies, len(pool.connections)
        finally:
            pool.close()

    replies, connections = asyncio.run(go())
    assert connections == 1 and [r[0] for r in replies] == [[BODY]] * 3
    assert all(0 < sent < done for _, sent, done in replies)
    monkeypatch.delenv("SSL_CERT_FILE")

    async def untrusted():  # the default trust store does not know the test's certificate
        pool = HttpPool(url, 1, {}, 5.0, process_clock())
        replies = []
        pool.start(Exchange([pool.encode(b"{}")], lambda *reply: replies.append(reply), pool))
        while not replies:
            await asyncio.sleep(0.001)
        pool.close()
        return replies[0][0]

    assert asyncio.run(untrusted()) == "SSLCertVerificationError"
