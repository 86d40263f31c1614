"""A keep-alive HTTP/1.1 client for open-loop load: ``asyncio.Protocol`` + httptools' response parser.

Requests arrive pre-encoded (bytes); a reply is stamped when its bytes arrive, before parsing or any
bookkeeping; nothing per request but one small ``Exchange`` object and the callback it ends with. One
request at a time per connection (no pipelining: a real client's behaviour, and what servers expect); a
request due while every connection is busy waits in FIFO order, and is stamped as sent when its bytes are
written, so that wait is the client's schedule lag, never the server's service time.
"""

from __future__ import annotations

import asyncio
import base64
import ssl as ssl_module
from collections import deque
from urllib.parse import unquote, urlsplit

import httptools

FLUSH_SLICE = 64  # stamped replies handed on per loop turn


class Exchange:
    """One perfray request: its HTTP requests (one per query vector), sent back to back on one connection;
    ``reply(bodies | error, sent_ns, done_ns)`` is called once. ``cancel()`` gives up on it."""

    __slots__ = ("payloads", "next", "bodies", "sent_ns", "done", "pool", "conn", "finished")

    def __init__(self, payloads: list[bytes], done, pool: HttpPool) -> None:
        self.payloads, self.done, self.pool = payloads, done, pool
        self.next = 0
        self.bodies: list[bytes] = []
        self.sent_ns = 0
        self.conn = None
        self.finished = False

    def cancel(self) -> None:
        self.pool.cancel(self)


class _Connection(asyncio.Protocol):
    def __init__(self, pool: HttpPool) -> None:
        self.pool = pool
        self.transport = None
        self.exchange: Exchange | None = None
        self.arrived_ns = 0
        self.parts: list[bytes] = []
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.arrived_ns = self.pool.now_ns()  # first: the reply is here, whatever parsing costs
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self.pool.failed(self, type(err).__name__)
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        body = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.parts = []
        self.pool.arrived(self, self.parser.get_status_code(), body, self.parser.should_keep_alive(), self.arrived_ns)

    def connection_lost(self, exc) -> None:
        self.pool.lost(self, exc)


class HttpPool:
    """Up to ``max_connections`` keep-alive connections to one URL, opened on demand (or by ``warm``)."""

    def __init__(self, url: str, max_connections: int, headers: dict[str, str], connect_timeout_s: float,
                 clock, method: str = "POST") -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"stores.http.url: expected http(s)://host[:port]/path, got {url!r}")
        self.host, self.tls = parts.hostname, parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2]  # never a userinfo part on the wire as a Host header
        if parts.username is not None and not any(k.lower() == "authorization" for k in headers):
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers = {**headers, "Authorization": "Basic " + base64.b64encode(credentials).decode()}
        head = [f"{method} {path} HTTP/1.1", f"Host: {authority}", *(f"{k}: {v}" for k, v in headers.items())]
        self._prefix = ("\r\n".join(head) + "\r\nContent-Length: ").encode("latin-1")
        self.max_connections, self.connect_timeout_s = max_connections, connect_timeout_s
        self.now_ns = clock.now_ns
        self.loop = asyncio.get_running_loop()  # connections belong to the loop that opened them
        self.idle: list[_Connection] = []
        self.waiting: deque[Exchange] = deque()
        self.opened = 0  # connected or connecting
        self.connections: set[_Connection] = set()
        self._ssl = ssl_module.create_default_context() if self.tls else None
        self._connecting: set[asyncio.Task] = set()
        self._arrived: deque = deque()  # replies stamped, not yet handed on
        self._flushing = False

    def encode(self, body: bytes) -> bytes:
        """The whole request for ``body``: done once per distinct body, never per request."""
        return self._prefix + str(len(body)).encode() + b"\r\n\r\n" + body

    # ----------------------------------------------------------------------------------- requests
    def start(self, exchange: Exchange) -> None:
        if self.idle:
            self._begin(self.idle.pop(), exchange)
            return
        self.waiting.append(exchange)
        if self.opened < self.max_connections:
            self._open()

    def _begin(self, conn: _Connection, exchange: Exchange) -> None:
        conn.exchange, exchange.conn = exchange, conn
        exchange.sent_ns = self.now_ns()
        conn.transport.write(exchange.payloads[0])

    def arrived(self, conn: _Connection, status: int, body: bytes, keep_alive: bool, arrived_ns: int) -> None:
        """A whole reply is here (stamped): hand it on after every other ready socket has been read and
        stamped too, so a burst of replies (a stall ending) is stamped at its arrival, not one by one."""
        self._arrived.append((conn, status, body, keep_alive, arrived_ns))
        if not self._flushing:
            self._flushing = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        arrived = self._arrived
        for _ in range(min(len(arrived), FLUSH_SLICE)):
            self.answered(*arrived.popleft())
        if arrived:  # the rest after the loop's next turn: the pacer's sends are not held up by a burst
            self.loop.call_soon(self._flush)
        else:
            self._flushing = False

    def answered(self, conn: _Connection, status: int, body: bytes, keep_alive: bool, arrived_ns: int) -> None:
        exchange = conn.exchange
        if exchange is None:  # a reply to a request given up on: nothing waits for it
            conn.transport.close()
            return
        if status >= 400:
            self._finish(exchange, f"HTTPStatus{status}", arrived_ns)
        else:
            exchange.bodies.append(body)
            exchange.next += 1
            if exchange.next < len(exchange.payloads):
                conn.transport.write(exchange.payloads[exchange.next])
                return
            self._finish(exchange, None, arrived_ns)
        conn.exchange = None
        if keep_alive:
            self._release(conn)
        else:
            conn.transport.close()

    def failed(self, conn: _Connection, error: str) -> None:
        if conn.exchange is not None:
            exchange, conn.exchange = conn.exchange, None
            self._finish(exchange, error, self.now_ns())

    def _finish(self, exchange: Exchange, error: str | None, done_ns: int) -> None:
        if exchange.finished:
            return
        exchange.finished, exchange.conn = True, None
        exchange.done(error or exchange.bodies, exchange.sent_ns or None, done_ns)

    def _release(self, conn: _Connection) -> None:
        while self.waiting:
            exchange = self.waiting.popleft()
            if not exchange.finished:
                self._begin(conn, exchange)
                return
        self.idle.append(conn)

    def cancel(self, exchange: Exchange) -> None:
        """Give up on ``exchange``: a connection still waiting for its reply is closed, as clients do."""
        conn = exchange.conn
        exchange.finished = True
        if conn is not None:
            conn.exchange = None
            conn.transport.close()

    # -------------------------------------------------------------------------------- connections
    def lost(self, conn: _Connection, exc) -> None:
        self.opened -= 1
        self.connections.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        self.failed(conn, type(exc).__name__ if exc is not None else "ConnectionResetError")
        if self.waiting and self.opened < self.max_connections:
            self._open()

    def _open(self) -> asyncio.Task:
        self.opened += 1
        task = asyncio.get_running_loop().create_task(self._connect())
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        return task

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port, ssl=self._ssl,
                                       server_hostname=self.host if self.tls else None),
                self.connect_timeout_s)
        except (OSError, TimeoutError, ssl_module.SSLError) as err:
            self.opened -= 1
            if self.opened == 0:  # nothing will ever serve the waiting requests: they fail now
                now = self.now_ns()
                while self.waiting:
                    self._finish(self.waiting.popleft(), type(err).__name__, now)
            return
        self.connections.add(conn)
        self._release(conn)

    async def warm(self, n: int | None = None) -> int:
        """Open connections up to ``n`` (default: the maximum) before load starts; returns how many are open."""
        want = min(n or self.max_connections, self.max_connections)
        tasks = [self._open() for _ in range(want - self.opened)]
        if tasks:
            await asyncio.gather(*tasks)
        return len(self.connections)

    def stats(self) -> dict[str, int]:
        return {"active": len(self.connections) - len(self.idle), "idle": len(self.idle)}

    def close(self) -> None:
        if self.loop.is_closed():  # its transports went with it
            return
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        for task in list(self._connecting):
            task.cancel()
