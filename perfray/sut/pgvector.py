"""pgvector, the fourth vector store: item vectors in PostgreSQL, searched exactly (no index) or through
an HNSW / IVFFlat index, over the same connection pool code as the policy store."""

from __future__ import annotations

import json
import time

import numpy as np

from perfray.data.filters import item_attr, item_genre_label, pool_filters
from perfray.sut.base import Answer, AsyncStoreSystem, StoreWrites, each_in_turn, load_fingerprint, span
from perfray.sut.postgres import META_SQL, PostgresStore, ids_of

SEARCH_SQL = "SELECT id FROM perfray_vectors ORDER BY embedding <-> %s::vector LIMIT %s"
FILTERED_SQL = ("SELECT id FROM perfray_vectors WHERE attr >= %s AND attr < %s "
                "ORDER BY embedding <-> %s::vector LIMIT %s")
GENRE_SQL = "SELECT id FROM perfray_vectors WHERE genre_label = %s ORDER BY embedding <-> %s::vector LIMIT %s"
TABLE_FORMAT = "attr-genre-1"  # the table's columns: a table of another format is loaded again
VECTOR_INDEX = "perfray_vectors_embedding"
BUILD_KEY = "vectors.build"  # perfray_meta: what building the vector index cost


def _vector_text(vector: np.ndarray) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


# workload.search.params -> the pgvector session setting that applies it
PARAM_SETTINGS = {"ef": "hnsw.ef_search", "nprobe": "ivfflat.probes"}


class PgvectorStore(PostgresStore):
    store = "pgvector"
    meta_key = "vectors"

    def __init__(self, spec, pool_max: int, search_params: dict | None = None) -> None:
        super().__init__(spec, pool_max)
        # the store's own settings, then the cell's search.params (a sweep axis) over them
        self.settings = {**spec.search_params,
                         **{PARAM_SETTINGS[name]: value for name, value in (search_params or {}).items()}}

    def session_sql(self) -> list[str]:
        return [f"SET {_setting(name)} = {int(value)}"  # e.g. hnsw.ef_search, ivfflat.probes
                for name, value in self.settings.items()]

    def load(self, catalogue, progress=None) -> dict:
        """Vectors into ``perfray_vectors`` and the configured index, in one transaction. The index's build time
        is kept beside the fingerprint, so a run that finds the store loaded still reports what building cost."""
        wanted = load_fingerprint(catalogue, *self.fingerprint_settings())
        info = {"store": self.store, "items": catalogue.n_items, "index": self.spec.index}
        if self.fingerprint() == wanted:
            if progress is not None:
                progress(catalogue.n_items)
            return {**info, "loaded": False, **self._build_info()}
        spec, dim = self.spec, catalogue.dataset.dim
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(META_SQL)
            conn.execute("DELETE FROM perfray_meta WHERE key IN (%s, %s)", (self.meta_key, BUILD_KEY))
            conn.execute("DROP TABLE IF EXISTS perfray_vectors")
            conn.execute(f"CREATE TABLE perfray_vectors (id bigint PRIMARY KEY, embedding vector({int(dim)}) NOT NULL, "
                         "attr bigint NOT NULL, genre_label int NOT NULL)")
            attr, genre = item_attr(catalogue.dataset).tolist(), item_genre_label(catalogue.dataset).tolist()
            with conn.cursor() as cur, cur.copy("COPY perfray_vectors (id, embedding, attr, genre_label) FROM STDIN") \
                    as copy:
                for i, vector in enumerate(catalogue.dataset.base):
                    copy.write_row((i, _vector_text(vector), attr[i], genre[i]))
            conn.execute("CREATE INDEX ON perfray_vectors (attr)")  # filtered search (workload.filter)
            conn.execute("CREATE INDEX ON perfray_vectors (genre_label)")  # by label (filter.field: genre)
            if spec.index != "none":
                params = ", ".join(f"{_setting(k)} = {int(v)}" for k, v in spec.index_params.items())
                started = time.perf_counter()
                conn.execute(f"CREATE INDEX {VECTOR_INDEX} ON perfray_vectors USING {spec.index} "
                             "(embedding vector_l2_ops)" + (f" WITH ({params})" if params else ""))
                build_s = time.perf_counter() - started
                conn.execute("INSERT INTO perfray_meta VALUES (%s, %s)", (BUILD_KEY, json.dumps({"build_s": build_s})))
            conn.execute("ANALYZE perfray_vectors")
            conn.execute("INSERT INTO perfray_meta VALUES (%s, %s)", (self.meta_key, wanted))
        if progress is not None:
            progress(catalogue.n_items)
        return {**info, "loaded": True, **self._build_info()}

    def fingerprint_settings(self) -> tuple:
        """What besides the catalogue the loaded table must match: the index and the table's format."""
        return self.spec.index, dict(self.spec.index_params), TABLE_FORMAT

    def forget_load(self) -> None:
        """Drop the fingerprint: the next load rebuilds the table (it is about to be written to)."""
        with self.pool.connection() as conn:
            conn.execute("DELETE FROM perfray_meta WHERE key = %s", (self.meta_key,))

    async def write_async(self, kind: str, item: int, vector: np.ndarray) -> tuple[int, int]:
        """One write (autocommitted: shown to the next search once acknowledged); the query's stamps."""
        params = (item,) if kind == "delete" else (item, _vector_text(vector))
        _, sent_ns, done_ns = await self.fetch_async(WRITE_SQL[kind], params)
        return sent_ns, done_ns

    async def nearest_async(self, vector: np.ndarray) -> tuple[int, int]:
        found, sent_ns, _ = await self.fetch_async(SEARCH_SQL, (_vector_text(vector), 1))
        return (int(found[0][0]) if found else -1), sent_ns

    def restore(self, catalogue, touched: np.ndarray) -> None:
        """Back to ``catalogue`` in one transaction: rows written past it removed, the ``touched`` items' rows as
        they were, the fingerprint back."""
        dataset = catalogue.dataset
        attr, genre = item_attr(dataset), item_genre_label(dataset)
        originals = [(int(i), _vector_text(dataset.base[i]), int(attr[i]), int(genre[i]))
                     for i in touched.tolist() if i < dataset.n]
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("DELETE FROM perfray_vectors WHERE id >= %s", (dataset.n,))
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO perfray_vectors (id, embedding, attr, genre_label) "
                                "VALUES (%s, %s::vector, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                                "embedding = EXCLUDED.embedding, attr = EXCLUDED.attr, "
                                "genre_label = EXCLUDED.genre_label", originals)
            conn.execute("INSERT INTO perfray_meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = "
                         "EXCLUDED.value", (self.meta_key, load_fingerprint(catalogue, *self.fingerprint_settings())))

    def _build_info(self) -> dict:
        """The vector index's build time (as recorded when it was built) and its size on disk, if it has one."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT value FROM perfray_meta WHERE key = %s", (BUILD_KEY,)).fetchone()
            if row is None:
                return {}
            size = conn.execute("SELECT pg_relation_size(to_regclass(%s))", (VECTOR_INDEX,)).fetchone()[0]
        return {**json.loads(row[0]), "index_bytes": size}


def _top_k(found: list[list], k: int) -> np.ndarray:
    """Each query's hit rows as one id matrix (-1 where fewer than k came back)."""
    ids = np.full((len(found), k), -1, dtype=np.int64)
    for i, rows in enumerate(found):
        ids[i, : len(rows)] = ids_of(rows)
    return ids


def _setting(name: str) -> str:
    """A setting or index parameter name, checked (it is spliced into SQL)."""
    if not all(part.isidentifier() for part in name.split(".")):
        raise ValueError(f"not a PostgreSQL setting name: {name!r}")
    return name


class PgvectorSystem(StoreWrites, AsyncStoreSystem):
    """Vector search in PostgreSQL with pgvector; recall against exact ground truth."""

    name = "pgvector"
    stores = ("pgvector",)
    supported_ops = frozenset({"knn"})
    requires = ("psycopg", "psycopg_pool")
    filterable = True  # WHERE attr >= lo AND attr < hi, or genre_label = g (btrees on both)
    search_params = frozenset(PARAM_SETTINGS)

    def label(self) -> str:
        index = self.stores_spec.pgvector.index
        return f"pgvector ({'exact scan' if index == 'none' else index})"

    def make_store(self) -> PgvectorStore:
        spec = self.stores_spec.pgvector
        return PgvectorStore(spec, spec.pool_max or self.workload.load.concurrency, self.workload.search.params)

    def prepare(self, catalogue, gpu_handles: list | None = None) -> None:
        super().prepare(catalogue, gpu_handles)
        self.filters = pool_filters(self.workload, catalogue.dataset)
        self.sql = SEARCH_SQL if self.filters is None else FILTERED_SQL if self.filters.labels is None else GENRE_SQL

    def request_params(self, vector: np.ndarray, row: int, k: int) -> tuple:
        if self.filters is None:
            return _vector_text(vector), int(k)
        if self.filters.labels is not None:
            return int(self.filters.labels[row]), _vector_text(vector), int(k)
        lo, hi = self.filters.windows[row]
        return int(lo), int(hi), _vector_text(vector), int(k)

    def execute(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        stages: dict = {}
        with span(stages, "vector_ns"):
            found = [self.store.fetch(self.sql, p) for p in self.params(queries, k, rows)]
        return Answer(ids=_top_k(found, k), stages=stages)

    async def execute_async(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        found, sent_ns, done_ns = await each_in_turn(self.store.fetch_async, self.sql, self.params(queries, k, rows))
        return Answer(ids=_top_k(found, k), stages={"vector_ns": done_ns - sent_ns}, sent_ns=sent_ns, done_ns=done_ns)


# load.writes: a written item carries no filter attribute (-1: outside every filter), as on every system.
WRITE_SQL = {
    "insert": "INSERT INTO perfray_vectors (id, embedding, attr, genre_label) VALUES (%s, %s::vector, -1, -1) "
              "RETURNING id",
    "upsert": "INSERT INTO perfray_vectors (id, embedding, attr, genre_label) VALUES (%s, %s::vector, -1, -1) "
              "ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, attr = -1, genre_label = -1 RETURNING id",
    "delete": "DELETE FROM perfray_vectors WHERE id = %s RETURNING id",
}


