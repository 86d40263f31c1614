"""A deployed service over HTTP (aiohttp): the coordinator in front of the stores, driven the same way as
the stores themselves. Requests run on the load actor's event loop (no client threads)."""

from __future__ import annotations

import asyncio

import numpy as np

from perfray.sut.base import Answer, SystemUnderTest, env_secret, unavailable
from perfray.timing import Clock


class HttpSystem(SystemUnderTest):
    name = "http"
    stores = ("http",)
    supported_ops = frozenset({"knn", "hybrid"})
    async_native = True  # ``execute_async`` on the actor's loop; SystemEndpoint uses it instead of threads
    requires = ("aiohttp",)

    def label(self) -> str:
        return f"HTTP {self.stores_spec.http.url}"

    def connect(self) -> None:
        """Check that the service's port accepts connections (sessions open lazily on the actor's loop)."""
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
        self._session = None
        self._free = None  # one slot per connection: a request waiting for one has not been sent yet
        self.clock = Clock()

    async def _client(self):
        if self._session is None:
            import aiohttp

            connector = aiohttp.TCPConnector(limit=self.workload.load.concurrency, force_close=False)
            headers = {"Content-Type": "application/json"}
            token = env_secret(self.stores_spec.http.token_env)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            self._session = aiohttp.ClientSession(connector=connector, headers=headers)
        return self._session

    async def execute_async(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        spec = self.stores_spec.http
        session = await self._client()
        if self._free is None:
            self._free = asyncio.Semaphore(self.workload.load.concurrency)
        users = self.catalogue.user_of(rows) if getattr(self, "catalogue", None) is not None else rows
        ids = np.full((queries.shape[0], k), -1, dtype=np.int64)
        found_ids = False
        async with self._free:
            sent_ns = self.clock.now_ns()
            for i, (vector, user) in enumerate(zip(queries, users, strict=True)):
                body = {"vector": vector.tolist(), "k": int(k), "user": int(user)}
                async with session.request(spec.method, spec.url, json=body) as reply:
                    reply.raise_for_status()
                    data = await reply.json()  # the whole body is read before the request counts as done
                if spec.ids_field and isinstance(data, dict) and isinstance(data.get(spec.ids_field), list):
                    got = data[spec.ids_field][:k]
                    ids[i, : len(got)] = got
                    found_ids = True
            done_ns = self.clock.now_ns()
        return Answer(ids=ids if found_ids else None, sent_ns=sent_ns, done_ns=done_ns)

    def execute(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        return asyncio.run(self.execute_async(queries, k, rows))

    def close(self) -> None:
        session, self._session = getattr(self, "_session", None), None
        if session is not None and not session.closed:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                asyncio.run(session.close())
            else:
                loop.create_task(session.close())
