"""PostgreSQL, the policy store (psycopg 3; psycopg_pool for checks, loads and client threads): items with scores, per-user genre policies, and
the query that ranks a user's candidate items under their policies."""

from __future__ import annotations

import numpy as np

from perfray.sut.base import (
    Answer,
    AsyncStoreSystem,
    TwoHandles,
    each_in_turn,
    env_secret,
    seed_items,
    span,
    unavailable,
)
from perfray.sut.pg_connections import AsyncConnections
from perfray.timing import process_clock

_now_ns = process_clock().now_ns

RANK_SQL = """
SELECT i.id FROM perfray_items i
JOIN perfray_policies p ON p.user_id = %(user)s AND p.genre = i.genre
WHERE i.id = ANY(%(ids)s) AND p.weight > 0
ORDER BY i.popularity * p.weight DESC, i.id
LIMIT %(k)s
"""

META_SQL = "CREATE TABLE IF NOT EXISTS perfray_meta (key text PRIMARY KEY, value text NOT NULL)"

SCHEMA_SQL = """
DELETE FROM perfray_meta WHERE key = 'catalogue';
DROP TABLE IF EXISTS perfray_items, perfray_policies;
CREATE TABLE perfray_items (id bigint PRIMARY KEY, genre int NOT NULL, popularity real NOT NULL);
CREATE TABLE perfray_policies (user_id int NOT NULL, genre int NOT NULL, weight real NOT NULL,
                               PRIMARY KEY (user_id, genre));
"""


class PostgresStore(TwoHandles):
    """A connection pool on the policy database: a sync pool (the driver's checks and loads; client threads),
    or, in a load actor, a lean pool of ``AsyncConnection``s on the actor's event loop (``open_async``)."""

    HANDLES = ("pool", "async_pool")

    store = "postgres"  # the name errors and gauges use
    meta_key = "catalogue"  # what this store's fingerprint row is called in perfray_meta

    def __init__(self, spec, pool_max: int) -> None:
        self.spec, self.pool_max = spec, pool_max
        self.pool = None
        self.async_pool = None

    @property
    def uri(self) -> str:
        return self.spec.uri

    def _pool_options(self) -> dict:
        s = self.spec
        kwargs = {"host": s.host, "port": s.port, "dbname": s.dbname, "connect_timeout": max(1, round(s.connect_timeout_s)),
                  "autocommit": True}
        if s.user:
            kwargs["user"] = s.user
        password = env_secret(s.password_env)
        if password:
            kwargs["password"] = password
        return {"kwargs": kwargs, "min_size": min(s.pool_min, self.pool_max), "max_size": self.pool_max,
                "timeout": s.connect_timeout_s, "reconnect_timeout": 3600, "open": False, "name": f"perfray-{self.store}"}

    def connect(self) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool, PoolTimeout

        s = self.spec
        options = self._pool_options()
        try:  # one connection first: a server that is not there fails here with its own reason, in one line
            psycopg.connect(**options["kwargs"]).close()
        except psycopg.Error as err:
            raise unavailable(self.store, self.uri, err) from None
        self.pool = ConnectionPool(**options, configure=self.configure)
        try:
            self.pool.open(wait=True, timeout=s.connect_timeout_s)
            with self.pool.connection() as conn:
                conn.execute("SELECT 1").fetchall()
        except (PoolTimeout, psycopg.Error) as err:
            self.close()
            raise unavailable(self.store, self.uri, err) from None

    def session_sql(self) -> list[str]:
        """Session settings for every new pooled connection (none here)."""
        return []

    def configure(self, conn) -> None:
        for sql in self.session_sql():
            conn.execute(sql)

    async def _configure_async(self, conn) -> None:
        for sql in self.session_sql():
            await conn.execute(sql)

    async def open_async(self) -> None:
        """Serve from a lean pool of ``AsyncConnection``s on the running loop (``pg_connections``); the sync
        pool (used to check and load) is closed, so the server never holds two pools' connections for one
        client."""
        import psycopg
        from psycopg_pool import PoolTimeout

        if self.async_pool is not None:
            return
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        options = self._pool_options()

        async def connect():
            conn = await psycopg.AsyncConnection.connect(**options["kwargs"])
            await self._configure_async(conn)
            return conn

        conns = AsyncConnections(connect, size=self.pool_max, min_size=options["min_size"],
                                 wait_s=options["timeout"], name=options["name"])
        try:
            await conns.open(timeout_s=self.spec.connect_timeout_s)
        except (PoolTimeout, psycopg.Error, OSError) as err:
            await conns.close()
            raise unavailable(self.store, self.uri, err) from None
        self.async_pool = conns

    async def fetch_async(self, sql: str, params) -> tuple[list, int, int]:
        """Rows of one prepared query, read to the end, with the clock's stamps around the query itself (a wait
        for a free connection is the client's queueing, not the server's time)."""
        if self.async_pool is None:
            await self.open_async()
        conns = self.async_pool
        conn = await conns.take()
        try:
            sent_ns = _now_ns()
            cursor = await conn.execute(sql, params, prepare=True)
            rows = await cursor.fetchall()
            done_ns = _now_ns()
        finally:
            conns.give(conn)
        return rows, sent_ns, done_ns

    def fetch(self, sql: str, params) -> list:
        """Rows of one prepared query, read to the end (the sync pool)."""
        with self.pool.connection() as conn:
            return conn.execute(sql, params, prepare=True).fetchall()

    def fingerprint(self) -> str | None:
        with self.pool.connection() as conn:
            exists = conn.execute("SELECT to_regclass('perfray_meta')").fetchone()[0]
            if exists is None:
                return None
            row = conn.execute("SELECT value FROM perfray_meta WHERE key = %s", (self.meta_key,)).fetchone()
            return row[0] if row else None

    def load(self, catalogue, progress=None) -> dict:
        """Write items and policies in one transaction (a failed load leaves the old catalogue whole)."""
        if self.fingerprint() == catalogue.fingerprint:
            if progress is not None:
                progress(catalogue.n_items)
            return {"store": "postgres", "loaded": False, "items": catalogue.n_items}
        users, genres = np.nonzero(np.ones_like(catalogue.policy_weight, dtype=bool))
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(META_SQL)
            conn.execute(SCHEMA_SQL)
            with conn.cursor() as cur:
                with cur.copy("COPY perfray_items (id, genre, popularity) FROM STDIN") as copy:
                    for row in zip(range(catalogue.n_items), catalogue.item_genre.tolist(),
                                   catalogue.item_popularity.tolist(), strict=True):
                        copy.write_row(row)
                with cur.copy("COPY perfray_policies (user_id, genre, weight) FROM STDIN") as copy:
                    for row in zip(users.tolist(), genres.tolist(),
                                   catalogue.policy_weight[users, genres].tolist(), strict=True):
                        copy.write_row(row)
                cur.execute("INSERT INTO perfray_meta VALUES ('catalogue', %s)", (catalogue.fingerprint,))
            conn.execute("ANALYZE perfray_items")
            conn.execute("ANALYZE perfray_policies")
        if progress is not None:
            progress(catalogue.n_items)
        return {"store": "postgres", "loaded": True, "items": catalogue.n_items, "policies": int(users.size)}

    def rank(self, user: int, candidates: np.ndarray, k: int) -> np.ndarray:
        """The user's top-k of ``candidates`` under their policies (the cursor is read to the end)."""
        return ids_of(self.fetch(RANK_SQL, rank_params(user, candidates, k)))

    def stats(self) -> dict[str, int]:
        if self.async_pool is not None:
            return self.async_pool.stats()
        pool = self.pool
        if pool is None:
            return {}
        s = pool.get_stats()
        size, idle = s.get("pool_size", 0), s.get("pool_available", 0)
        return {"active": size - idle, "idle": idle, "waiting": s.get("requests_waiting", 0)}



def rank_params(user: int, candidates: np.ndarray, k: int) -> dict:
    return {"user": int(user), "ids": [int(c) for c in candidates], "k": int(k)}


def ids_of(rows: list) -> np.ndarray:
    """The first column of ``rows`` (an id per row)."""
    return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))


class PostgresSystem(AsyncStoreSystem):
    """Policy ranking alone: each request ranks ``hybrid.candidates`` catalogue items for the query's user."""

    name = "postgres"
    stores = ("postgres",)
    supported_ops = frozenset({"rank"})
    requires = ("psycopg", "psycopg_pool")

    def make_store(self) -> PostgresStore:
        return PostgresStore(self.stores_spec.postgres, self.stores_spec.postgres.pool_max or self.workload.load.concurrency)

    def request_params(self, vector: np.ndarray, row: int, k: int) -> dict:
        rows = np.array([row])
        user = int(self.catalogue.user_of(rows)[0])
        return rank_params(user, seed_items(self.catalogue, rows, self.workload.hybrid.candidates)[0], k)

    def execute(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        stages: dict = {}
        with span(stages, "policy_ns"):
            items = [ids_of(self.store.fetch(RANK_SQL, p)) for p in self.params(queries, k, rows)]
        return Answer(items=items, stages=stages)

    async def execute_async(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        found, sent_ns, done_ns = await each_in_turn(self.store.fetch_async, RANK_SQL, self.params(queries, k, rows))
        return Answer(items=[ids_of(f) for f in found], stages={"policy_ns": done_ns - sent_ns}, sent_ns=sent_ns,
                      done_ns=done_ns)
