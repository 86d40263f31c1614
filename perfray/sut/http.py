"""A deployed service over HTTP: the coordinator in front of the stores, driven the same way as the stores.

Requests run on the load actor's event loop through ``HttpPool`` (keep-alive HTTP/1.1 on asyncio.Protocol):
each query-pool row's request is encoded once, a reply is stamped when its bytes arrive, and the reply's JSON
is read (for recall) only after that stamp."""

from __future__ import annotations

import asyncio
import functools
import json

import numpy as np

try:  # ~8x faster than json on the replies scored for recall
    from orjson import loads as _json_loads
except ImportError:
    from json import loads as _json_loads

from perfray.data.filters import pool_filters
from perfray.redact import redact
from perfray.sut.base import Answer, PerRow, SystemUnderTest, env_secret, unavailable
from perfray.sut.http_client import Exchange, HttpPool
from perfray.timing import process_clock


class HttpSystem(SystemUnderTest):
    name = "http"
    stores = ("http",)
    supported_ops = frozenset({"knn", "hybrid"})
    callback_native = True  # ``send`` starts the request on the actor's loop and calls back with the reply
    filterable = True  # the request carries each query's filter window; the service applies it
    requires = ("httptools",)

    def label(self) -> str:
        return f"HTTP {redact(self.stores_spec.http.url)}"

    def connect(self) -> None:
        """Check that the service's port accepts connections (the pool opens on the actor's loop)."""
        import socket
        from urllib.parse import urlsplit

        url = urlsplit(self.stores_spec.http.url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname, port), timeout=self.stores_spec.http.connect_timeout_s).close()
        except OSError as err:
            raise unavailable("http", self.stores_spec.http.url, err) from None

    def prepare(self, catalogue, gpu_handles: list | None = None) -> None:
        super().prepare(catalogue)
        self.filters = pool_filters(self.workload, catalogue.dataset) if catalogue is not None else None
        self._pool: HttpPool | None = None
        self._requests = PerRow(self._encode)  # (pool row, k) -> encoded request

    def _client(self) -> HttpPool:
        if self._pool is not None and self._pool.loop is not asyncio.get_running_loop():
            self.close()  # opened on an earlier loop (e.g. a sync ``execute``): its connections are gone
        if self._pool is None:
            spec = self.stores_spec.http
            headers = {"Content-Type": "application/json"}
            token = env_secret(spec.token_env)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            self._pool = HttpPool(spec.url, self.workload.load.concurrency, headers, spec.connect_timeout_s,
                                  process_clock(), spec.method)
        return self._pool

    def _encode(self, vector: np.ndarray, row: int, k: int) -> bytes:
        catalogue = getattr(self, "catalogue", None)
        user = int(catalogue.user_of(np.array([row]))[0]) if catalogue is not None else row
        request = {"vector": vector.tolist(), "k": k, "user": user}
        filters = getattr(self, "filters", None)
        if filters is not None:  # the service applies it (a system that cannot: recall shows)
            request["filter"] = ({"attr": [int(x) for x in filters.windows[row]]} if filters.labels is None
                                 else {"genre_label": int(filters.labels[row])})
        body = json.dumps(request, separators=(",", ":"))
        return self._client().encode(body.encode())

    async def warm(self, queries: np.ndarray, k: int) -> int:
        """Before load: encode every pool row's request and open every connection."""
        self._requests.fill(queries, k)
        return await self._client().warm()

    def send(self, queries: np.ndarray, k: int, rows: np.ndarray, reply) -> Exchange:
        # warm() opened the pool on this loop; asking for the running loop costs a getpid() syscall per request
        pool = self._pool if self._pool is not None else self._client()
        payloads = [self._requests.get(row, k, queries[i]) for i, row in enumerate(rows.tolist())]
        ids_field = self.stores_spec.http.ids_field

        def done(bodies, sent_ns, done_ns):
            if isinstance(bodies, str):
                reply(error=bodies, sent_ns=sent_ns, done_ns=done_ns)
            elif ids_field:  # the replies' JSON is decoded when rows are drained, not here
                reply(result=(functools.partial(_ids, bodies, ids_field, k), None, 0), sent_ns=sent_ns,
                      done_ns=done_ns)
            else:
                reply(sent_ns=sent_ns, done_ns=done_ns)

        exchange = Exchange(payloads, done, pool)
        pool.start(exchange)
        return exchange

    def execute(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        async def once():
            self._client()  # a pool opened on an earlier loop is replaced here, not in send()
            future = asyncio.get_running_loop().create_future()
            self.send(queries, k, rows, lambda **r: future.done() or future.set_result(r))
            got = await future
            self.close()
            if got.get("error") is not None:
                raise RuntimeError(f"{self.label()}: {got['error']}")
            result = got.get("result")
            found = None if result is None else result[0]()
            ids = None if found is None else np.array([(row + [-1] * k)[:k] for row in found], dtype=np.int64)
            return Answer(ids=ids, sent_ns=got["sent_ns"], done_ns=got["done_ns"])

        return asyncio.run(once())

    def pool_stats(self) -> dict[str, dict[str, int]]:
        return {"http": self._pool.stats()} if getattr(self, "_pool", None) is not None else {}

    def close(self) -> None:
        pool, self._pool = getattr(self, "_pool", None), None
        if pool is not None:
            pool.close()


def _ids(bodies: list[bytes], field: str, k: int) -> list[list] | None:
    """The replies' top-k id lists (one per query; [] where a reply had none), or None when none has any."""
    rows, found = [], False
    for body in bodies:
        try:
            data = _json_loads(body)
        except ValueError:
            data = None
        got = data.get(field) if isinstance(data, dict) else None
        if isinstance(got, list):
            rows.append(got[:k])
            found = True
        else:
            rows.append([])
    return rows if found else None
