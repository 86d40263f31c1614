"""The load actors' PostgreSQL connections (perfray.sut.pg_connections) against a real server: lent in turn,
bounded, never lost, and a broken one replaced."""

import asyncio

import psycopg
import pytest
from psycopg_pool import PoolClosed, PoolTimeout

from perfray.sut.pg_connections import AsyncConnections


def _pool(server, size=2, min_size=1, wait_s=2.0):
    async def connect():
        return await psycopg.AsyncConnection.connect(**server.settings(), autocommit=True)

    return AsyncConnections(connect, size=size, min_size=min_size, wait_s=wait_s, name="test-pool")


async def _backend_pid(conn) -> int:
    return (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0]


def test_connections_are_bounded_and_lent_first_come_first_served(postgres_server):
    async def run():
        pool = _pool(postgres_server, size=2, min_size=1)
        await pool.open(timeout_s=5)
        assert pool.stats() == {"active": 0, "idle": 1, "waiting": 0}
        a = await pool.take()
        b = await pool.take()  # the second is opened on demand
        assert {await _backend_pid(a), await _backend_pid(b)} != {await _backend_pid(a)}
        order = []

        async def wait_for_one(tag):
            conn = await pool.take()
            order.append((tag, conn))

        first = asyncio.create_task(wait_for_one("first"))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(wait_for_one("second"))
        await asyncio.sleep(0.05)
        assert pool.stats() == {"active": 2, "idle": 0, "waiting": 2}  # no third connection: size is 2
        pool.give(b)
        await asyncio.sleep(0)
        assert [tag for tag, _ in order] == ["first"] and order[0][1] is b
        pool.give(a)
        await asyncio.gather(first, second)
        assert [(tag, conn) for tag, conn in order] == [("first", b), ("second", a)]
        pool.give(a)
        pool.give(b)
        assert pool.stats() == {"active": 0, "idle": 2, "waiting": 0}
        await pool.close()
        assert pool.stats() == {"active": 0, "idle": 0, "waiting": 0}  # idle connections closed
        with pytest.raises(PoolClosed):
            await pool.take()

    asyncio.run(run())


def test_a_request_waits_at_most_wait_s_and_a_cancelled_one_loses_no_connection(postgres_server):
    async def run():
        pool = _pool(postgres_server, size=1, min_size=1, wait_s=0.2)
        await pool.open(timeout_s=5)
        held = await pool.take()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PoolTimeout, match="test-pool"):
            await pool.take()
        assert 0.15 < loop.time() - started < 1.0
        assert pool.stats()["waiting"] == 0
        # a request cancelled while the connection is on its way to it hands the connection on
        waiter = asyncio.create_task(pool.take())
        await asyncio.sleep(0.01)
        pool.give(held)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert pool.stats() == {"active": 0, "idle": 1, "waiting": 0}
        conn = await pool.take()
        assert conn is held
        pool.give(conn)
        await pool.close()

    asyncio.run(run())


def test_a_broken_connection_is_never_lent_again_and_is_replaced(postgres_server):
    async def run():
        pool = _pool(postgres_server, size=2, min_size=2)
        await pool.open(timeout_s=5)
        victim = await pool.take()
        pid = await _backend_pid(victim)
        async with await psycopg.AsyncConnection.connect(**postgres_server.settings(), autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(psycopg.OperationalError):
            await victim.execute("SELECT 1")
        assert victim.broken
        pool.give(victim)
        for _ in range(100):  # replaced in the background
            if pool.stats()["idle"] == 2:
                break
            await asyncio.sleep(0.02)
        lent = [await pool.take(), await pool.take()]
        assert victim not in lent and all(not c.broken for c in lent)
        assert pid not in [await _backend_pid(c) for c in lent]
        # one left inside a transaction is not lent on either: the next request would run inside it
        in_transaction = lent.pop()
        await in_transaction.execute("BEGIN")
        pool.give(in_transaction)
        pool.give(lent[0])
        assert in_transaction not in [await pool.take(), await pool.take()]
        await pool.close()
        assert victim.closed

    asyncio.run(run())
