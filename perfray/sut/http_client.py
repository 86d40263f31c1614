"""A keep-alive HTTP/1.1 client for open-loop load: non-blocking sockets on the event loop (``asyncio.Protocol``
for TLS) + httptools' response parser.

Requests arrive pre-encoded (bytes); a reply is stamped with the time its bytes arrived: on a plain-TCP
connection the kernel's receive time of the read that completed it (``SO_TIMESTAMPNS`` on ``recvmsg``), so the
time a reply waited for this process to be scheduled and its loop to turn is not in its latency; over TLS (or
where the kernel gives no stamp) the moment the bytes are read, before parsing or any bookkeeping. Nothing per
request but one small ``Exchange`` object and the callback it ends with. One request at a time per connection
(no pipelining: a real client's behaviour, and what servers expect); a request due while every connection is
busy waits in FIFO order, and is stamped as sent when its bytes are written, so that wait is the client's
schedule lag, never the server's service time.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl as ssl_module
import struct
import time
from collections import deque
from urllib.parse import unquote, urlsplit

import httptools

from perfray.systems_config import check_http_url

FLUSH_SLICE = 64  # stamped replies handed on per loop turn
READ_SIZE = 65_536
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux' value (asm-generic; x86-64, arm64)
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)
# A wall-clock read bracketed by two monotonic reads this close (a few clock reads take ~0.1-0.3 µs) places the
# wall clock on the monotonic one to within half of it; a wider pair was preempted and is read again.
CLOCK_PAIR_NS, CLOCK_PAIR_TRIES = 5_000, 3


def kernel_stamp_on_perf_counter(wall_ns: int) -> int:
    """A kernel receive stamp (wall clock) on ``time.perf_counter_ns``'s timeline, never later than now. The wall
    clock's place on the monotonic one is read between two monotonic reads; a pair more than ``CLOCK_PAIR_NS``
    apart (this thread was preempted between them) is read again, and after ``CLOCK_PAIR_TRIES`` such pairs the
    read time stands in: a stamp is never moved by a preemption."""
    read = before = time.perf_counter_ns()
    for _ in range(CLOCK_PAIR_TRIES):
        wall = time.time_ns()
        after = time.perf_counter_ns()
        if after - before <= CLOCK_PAIR_NS:
            return min(wall_ns - wall + (before + after) // 2, read)
        before = after
    return read


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


class _Replies:
    """A connection's side of the parsing: bytes fed with their arrival stamp, whole replies handed to the pool."""

    def __init__(self, pool: HttpPool) -> None:
        self.pool = pool
        self.transport = None  # ``write(bytes)`` and ``close()``
        self.exchange: Exchange | None = None
        self.arrived_ns = 0
        self.parts: list[bytes] = []
        self.parser = httptools.HttpResponseParser(self)

    def feed(self, data: bytes, arrived_ns: int) -> None:
        self.arrived_ns = arrived_ns
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


class _SocketConnection(_Replies):
    """Plain TCP, read with ``recvmsg`` when the loop says the socket is readable: each read carries the kernel's
    receive time of its bytes. It is its own transport (``write``, ``close``); the pool hears of its end, as
    from a protocol, one loop turn later."""

    def __init__(self, pool: HttpPool, sock: socket.socket) -> None:
        super().__init__(pool)
        self.sock, self.transport, self.fd = sock, self, sock.fileno()
        self._unsent = b""  # bytes the kernel has not taken yet
        self._closed = False
        pool.loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(READ_SIZE, _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._end(err)
            return
        if not data:
            self._end(None)  # the server closed it
            return
        self.feed(data, self.pool.arrival_ns(ancillary))

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        if self._unsent:
            self._unsent += data
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as err:
            self._end(err)
            return
        if sent < len(data):
            self._unsent = data[sent:]
            self.pool.loop.add_writer(self.fd, self._writable)

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self._unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._end(err)
            return
        self._unsent = self._unsent[sent:]
        if not self._unsent:
            self.pool.loop.remove_writer(self.fd)

    def close(self) -> None:
        self._end(None)

    def _end(self, exc) -> None:
        if self._closed:
            return
        self._closed = True
        loop = self.pool.loop
        if not loop.is_closed():
            loop.remove_reader(self.fd)
            loop.remove_writer(self.fd)
            loop.call_soon(self.pool.lost, self, exc)
        self.sock.close()


class _Connection(_Replies, asyncio.Protocol):
    """TLS: the loop's transport reads; a reply is stamped the moment its bytes are handed over."""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.feed(data, self.pool.now_ns())  # first: the reply is here, whatever parsing costs

    def connection_lost(self, exc) -> None:
        self.pool.lost(self, exc)


class HttpPool:
    """Up to ``max_connections`` keep-alive connections to one URL, opened on demand (or by ``warm``)."""

    def __init__(self, url: str, max_connections: int, headers: dict[str, str], connect_timeout_s: float,
                 clock, method: str = "POST") -> None:
        check_http_url(url)
        parts = urlsplit(url)
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
        self._offset_ns = getattr(clock, "offset_ns", None)  # a kernel stamp lands on this clock's timeline
        self.loop = asyncio.get_running_loop()  # connections belong to the loop that opened them
        self.idle: list[_Connection] = []
        self.waiting: deque[Exchange] = deque()
        self.opened = 0  # connected or connecting
        self.connections: set[_Connection] = set()
        self._ssl = ssl_module.create_default_context() if self.tls else None
        self._connecting: set[asyncio.Task] = set()
        self._arrived: deque = deque()  # replies stamped, not yet handed on
        self._flushing = False

    def arrival_ns(self, ancillary) -> int:
        """When a read's bytes arrived: the kernel's receive stamp put on this clock's timeline
        (``kernel_stamp_on_perf_counter``), else now."""
        if self._offset_ns is None:  # a clock of another kind: no timeline to put a kernel stamp on
            return self.now_ns()
        if ancillary:
            level, kind, data = ancillary[0]
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(data)
                return kernel_stamp_on_perf_counter(sec * 1_000_000_000 + nsec) + self._offset_ns
        return time.perf_counter_ns() + self._offset_ns

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
            if self.tls:
                _, conn = await asyncio.wait_for(
                    loop.create_connection(lambda: _Connection(self), self.host, self.port, ssl=self._ssl,
                                           server_hostname=self.host), self.connect_timeout_s)
            else:
                conn = await asyncio.wait_for(self._connect_socket(), self.connect_timeout_s)
        except (OSError, TimeoutError, ssl_module.SSLError) as err:
            self.opened -= 1
            if self.opened == 0:  # nothing will ever serve the waiting requests: they fail now
                now = self.now_ns()
                while self.waiting:
                    self._finish(self.waiting.popleft(), type(err).__name__, now)
            return
        self.connections.add(conn)
        self._release(conn)

    async def _connect_socket(self) -> _SocketConnection:
        """A non-blocking TCP connection to the first of the host's addresses that answers, asking the kernel to
        stamp what it receives."""
        error: OSError = OSError(f"no address for {self.host}")
        for family, kind, proto, _, address in await self.loop.getaddrinfo(self.host, self.port,
                                                                            type=socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                except OSError:  # no kernel stamps here: replies are stamped when read
                    pass
                await self.loop.sock_connect(sock, address)
            except OSError as err:
                sock.close()
                error = err
                continue
            except BaseException:  # cancelled (the connect timeout): no socket left behind
                sock.close()
                raise
            return _SocketConnection(self, sock)
        raise error

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
