"""Neo4j, the graph store (official driver over Bolt): the catalogue graph, k-hop expansion from seed items,
and the Neo4j-only baseline (Neo4j's own vector index + the same expansion + the policy rank in Cypher)."""

from __future__ import annotations

import json
import time

import numpy as np

from perfray.data.filters import item_attr, item_genre_label, pool_filters
from perfray.sut.base import (
    Answer,
    AsyncStoreSystem,
    StoreWrites,
    TwoHandles,
    each_in_turn,
    env_secret,
    load_fingerprint,
    seed_items,
    span,
    unavailable,
)
from perfray.timing import process_clock

VECTOR_INDEX = "perfray_item_embedding"
GRAPH_FORMAT = "attr-genre-1"  # the items' properties: a graph of another format is loaded again
# Neo4j's vector index has no filter of its own: the query keeps the hits inside the window (post-filtering,
# as an application would), so fewer than k may remain; recall shows what that costs.
FILTER_WHERE = {"attr": "\nWHERE hit.attr >= $attr_lo AND hit.attr < $attr_hi",
                "genre": "\nWHERE hit.genre_label = $genre_label"}
BATCH = 2_000

# DISTINCT before ORDER BY: Neo4j 5.26 returns duplicates for `WITH DISTINCT n ORDER BY n.id` after a
# variable-length match (seen here), so de-duplicate in collect() and order the list afterwards.
EXPAND_CYPHER = """
MATCH (s:Item) WHERE s.id IN $seeds
MATCH (s)-[:SIMILAR_TO*1..{hops}]->(n:Item)
WITH collect(DISTINCT n.id) AS near
UNWIND near AS id
WITH id ORDER BY id LIMIT $limit
RETURN collect(id) AS ids
"""

# One query does what the hybrid stack does across three stores. {where}: a filter on the index's hits. The
# index is asked for $asked hits (its HNSW search's candidate list: search.params.ef, raising recall) and the
# best $candidates of them are kept, as the hybrid keeps its vector stage's top candidates.
BASELINE_CYPHER = """
CALL db.index.vector.queryNodes('{index}', $asked, $vector) YIELD node AS hit, score{where}
WITH collect(hit)[0..$candidates] AS hits
UNWIND hits[0..$seeds] AS s
OPTIONAL MATCH (s)-[:SIMILAR_TO*1..{hops}]->(n:Item)
WITH hits, collect(DISTINCT n) AS near
UNWIND (CASE WHEN near = [] THEN [null] ELSE near END) AS x
WITH hits, x ORDER BY x.id
WITH hits, collect(x)[0..$limit] AS expanded
UNWIND hits + expanded AS c
WITH DISTINCT hits, c
MATCH (c)-[:IN_GENRE]->(:Genre)<-[p:ALLOWS]-(:User {id: $user})
WITH hits, c.id AS id, c.popularity * p.weight AS score ORDER BY score DESC, id
RETURN [h IN hits | h.id] AS vector_ids, collect(id)[0..$k] AS ranked
"""

# load.writes: a new item has no graph (no genre, so no policy ranks it); a deleted one leaves the vector index; a
# written item carries no filter attribute (-1: outside every filter), as on every system.
WRITE_CYPHER = {
    "insert": "CREATE (:Item {id: $id, embedding: $embedding, popularity: 0.0, attr: -1, genre_label: -1})",
    "upsert": "MERGE (i:Item {id: $id}) SET i.embedding = $embedding, i.attr = -1, i.genre_label = -1",
    "delete": "MATCH (i:Item {id: $id}) REMOVE i.embedding",
}
NEAREST_CYPHER = f"CALL db.index.vector.queryNodes('{VECTOR_INDEX}', 1, $vector) YIELD node RETURN node.id AS id"

LOAD_STEPS = (
    ("genres", "UNWIND $rows AS r CREATE (:Genre {id: r})"),
    ("people", "UNWIND $rows AS r CREATE (:Person {id: r})"),
    ("users", "UNWIND $rows AS r CREATE (:User {id: r})"),
    ("items", "UNWIND $rows AS r MATCH (g:Genre {id: r.genre}) "
              "CREATE (i:Item {id: r.id, genre: r.genre, popularity: r.popularity, embedding: r.embedding, "
              "attr: r.attr, genre_label: r.genre_label})"
              "-[:IN_GENRE]->(g)"),
    ("similar", "UNWIND $rows AS r MATCH (a:Item {id: r[0]}), (b:Item {id: r[1]}) CREATE (a)-[:SIMILAR_TO]->(b)"),
    ("people_edges", "UNWIND $rows AS r MATCH (p:Person {id: r[1]}), (i:Item {id: r[0]}) "
                     "CREATE (p)-[:ACTED_IN]->(i)"),
    ("policies", "UNWIND $rows AS r MATCH (u:User {id: r[0]}), (g:Genre {id: r[1]}) "
                 "CREATE (u)-[:ALLOWS {weight: r[2]}]->(g)"),
)


class Neo4jStore(TwoHandles):
    """A driver (its own connection pool) on one database: the sync driver (the driver's checks and loads; client
    threads), or, in a load actor, the ``AsyncDriver`` on the actor's event loop (``open_async``)."""

    HANDLES = ("driver", "async_driver")

    def __init__(self, spec, pool_max: int) -> None:
        self.spec, self.pool_max = spec, pool_max
        self.driver = None
        self.async_driver = None

    @property
    def uri(self) -> str:
        return self.spec.uri

    def _driver_options(self) -> dict:
        user, password = env_secret(self.spec.user_env), env_secret(self.spec.password_env)
        return {"auth": (user or "neo4j", password) if password else None, "max_connection_pool_size": self.pool_max,
                "connection_timeout": self.spec.connect_timeout_s,
                "connection_acquisition_timeout": self.spec.connect_timeout_s, "max_transaction_retry_time": 0,
                "notifications_min_severity": "OFF"}

    def connect(self) -> None:
        import neo4j

        self.driver = neo4j.GraphDatabase.driver(self.spec.uri, **self._driver_options())
        try:
            self.driver.verify_connectivity()
        except Exception as err:  # the driver raises several unrelated classes for "not there"
            self.close()
            raise unavailable("neo4j", self.uri, err) from None

    async def open_async(self) -> None:
        """Serve from an ``AsyncDriver`` on the running loop; the sync driver is closed, so the server never
        holds two pools' connections for one client."""
        import neo4j

        if self.async_driver is not None:
            return
        if self.driver is not None:
            self.driver.close()
            self.driver = None
        driver = neo4j.AsyncGraphDatabase.driver(self.spec.uri, **self._driver_options())
        try:
            await driver.verify_connectivity()
        except Exception as err:
            await driver.close()
            raise unavailable("neo4j", self.uri, err) from None
        self.async_driver = driver

    def run(self, cypher: str, **params) -> list:
        """One auto-commit query, every record read."""
        records, _, _ = self.driver.execute_query(cypher, params, database_=self.spec.database)
        return records

    async def run_async(self, cypher: str, params: dict) -> tuple[list, int, int]:
        """``run`` on the async driver, with the clock's stamps around it."""
        if self.async_driver is None:
            await self.open_async()
        clock = process_clock()
        sent_ns = clock.now_ns()
        records, _, _ = await self.async_driver.execute_query(cypher, params, database_=self.spec.database)
        return records, sent_ns, clock.now_ns()

    def fingerprint(self) -> str | None:
        rows = self.run("MATCH (m:PerfrayMeta {key: 'catalogue'}) RETURN m.value AS v")
        return rows[0]["v"] if rows else None

    def load(self, catalogue, progress=None) -> dict:
        """Replace the graph with ``catalogue``; the fingerprint is written last, so a partial load is redone."""
        wanted = load_fingerprint(catalogue, GRAPH_FORMAT)
        if self.fingerprint() == wanted:
            if progress is not None:
                progress(catalogue.n_items)
            return {"store": "neo4j", "loaded": False, "items": catalogue.n_items,
                    **self._vector_index(catalogue.dataset.dim)}
        with self.driver.session(database=self.spec.database) as session:
            session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()
            session.run(f"DROP INDEX {VECTOR_INDEX} IF EXISTS").consume()
            session.run("MATCH (m:PerfrayMeta {key: 'vector_index'}) DELETE m").consume()
            for label in ("Item", "Genre", "Person", "User"):
                session.run(f"CREATE CONSTRAINT perfray_{label.lower()}_id IF NOT EXISTS "
                            f"FOR (n:{label}) REQUIRE n.id IS UNIQUE").consume()
        for name, cypher in LOAD_STEPS:
            rows = _rows(catalogue, name)
            for lo in range(0, len(rows), BATCH):
                self.run(cypher, rows=rows[lo:lo + BATCH])
                if progress is not None and name == "items":
                    progress(min(BATCH, len(rows) - lo))
        self.run("MERGE (m:PerfrayMeta {key: 'catalogue'}) SET m.value = $fp", fp=wanted)
        return {"store": "neo4j", "loaded": True, "items": catalogue.n_items,
                "similar_edges": int(catalogue.similar.size), **self._vector_index(catalogue.dataset.dim)}

    def _index_config(self, dim: int) -> dict:
        config = {"vector.dimensions": int(dim), "vector.similarity_function": "euclidean",
                  "vector.quantization.enabled": bool(self.spec.vector_quantization)}
        if self.spec.hnsw_m is not None:
            config["vector.hnsw.m"] = int(self.spec.hnsw_m)
        if self.spec.hnsw_ef_construction is not None:
            config["vector.hnsw.ef_construction"] = int(self.spec.hnsw_ef_construction)
        return config

    def _vector_index(self, dim: int) -> dict:
        """The vector index as configured: (re)built when its settings changed (the graph stays), timed from its
        creation until it is online; the build time is kept beside the settings for runs that reuse it."""
        settings = self._index_config(dim)
        config = json.dumps(settings, sort_keys=True)
        label = "HNSW" + (", int8 quantized" if settings["vector.quantization.enabled"] else "") + "".join(
            f", {name.removeprefix('vector.hnsw.')}={value}" for name, value in settings.items() if ".hnsw." in name)
        rows = self.run("MATCH (m:PerfrayMeta {key: 'vector_index'}) RETURN m.value AS v, m.build_s AS s")
        if rows and rows[0]["v"] == config:
            return {"index": label, "build_s": rows[0]["s"]}
        self.run(f"DROP INDEX {VECTOR_INDEX} IF EXISTS")
        started = time.perf_counter()
        self.run(f"CREATE VECTOR INDEX {VECTOR_INDEX} FOR (i:Item) ON (i.embedding) OPTIONS {{indexConfig: $config}}",
                 config=settings)
        self.run("CALL db.awaitIndexes(600)")
        build_s = time.perf_counter() - started
        self.run("MERGE (m:PerfrayMeta {key: 'vector_index'}) SET m.value = $v, m.build_s = $s", v=config, s=build_s)
        return {"index": label, "build_s": build_s, "index_built": True}

    async def write_async(self, kind: str, item: int, vector: np.ndarray) -> tuple[int, int]:
        """One write (auto-commit); the query's stamps. A delete takes the item out of the vector index (its
        embedding removed), so the undo can put it back with its graph as it was."""
        _, sent_ns, done_ns = await self.run_async(WRITE_CYPHER[kind], {"id": item, "embedding": vector.tolist()})
        return sent_ns, done_ns

    async def nearest_async(self, vector: np.ndarray) -> tuple[int, int]:
        records, sent_ns, _ = await self.run_async(NEAREST_CYPHER, {"vector": vector.tolist()})
        return (int(records[0]["id"]) if records else -1), sent_ns

    def forget_load(self) -> None:
        """Drop the fingerprint: the next load rebuilds the graph (it is about to be written to)."""
        self.run("MATCH (m:PerfrayMeta {key: 'catalogue'}) DELETE m")

    def restore(self, catalogue, touched: np.ndarray) -> None:
        """Back to ``catalogue``: items written past it removed, the ``touched`` ones' embeddings as they were, the
        fingerprint back."""
        dataset = catalogue.dataset
        self.run("MATCH (i:Item) WHERE i.id >= $n DETACH DELETE i", n=int(dataset.n))
        attr, genre = item_attr(dataset), item_genre_label(dataset)
        rows = [{"id": int(i), "embedding": dataset.base[i].tolist(), "attr": int(attr[i]), "genre_label": int(genre[i])}
                for i in touched.tolist() if i < dataset.n]
        for lo in range(0, len(rows), BATCH):
            self.run("UNWIND $rows AS r MATCH (i:Item {id: r.id}) SET i.embedding = r.embedding, i.attr = r.attr, "
                     "i.genre_label = r.genre_label", rows=rows[lo:lo + BATCH])
        self.run("MERGE (m:PerfrayMeta {key: 'catalogue'}) SET m.value = $fp", fp=load_fingerprint(catalogue, GRAPH_FORMAT))

    def expand(self, seeds: np.ndarray, hops: int, limit: int) -> np.ndarray:
        """Items within 1..``hops`` SIMILAR_TO edges of ``seeds``: the first ``limit`` by id."""
        return expanded(self.run(expand_cypher(hops), **expand_params(seeds, limit)))

    def baseline(self, vector: np.ndarray, user: int, spec, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(vector-index ids, ranked items) from the single Neo4j-only query."""
        return baseline_ids(self.run(baseline_cypher(spec), **baseline_params(vector, user, spec, k)))

    def stats(self) -> dict[str, int]:
        pool = getattr(self.async_driver or self.driver, "_pool", None)  # the driver has no public pool gauge
        connections = getattr(pool, "connections", None) if pool is not None else None
        if not isinstance(connections, dict):
            return {}
        total = sum(len(c) for c in connections.values())
        in_use = sum(1 for c in connections.values() for conn in c if getattr(conn, "in_use", False))
        return {"active": in_use, "idle": total - in_use}



def expand_cypher(hops: int) -> str:
    return EXPAND_CYPHER.replace("{hops}", str(int(hops)))


def expand_params(seeds: np.ndarray, limit: int) -> dict:
    return {"seeds": [int(s) for s in seeds], "limit": int(limit)}


def expanded(records: list) -> np.ndarray:
    return np.asarray(records[0]["ids"] if records else [], dtype=np.int64)


def baseline_cypher(spec, filter_field: str | None = None) -> str:
    """The Neo4j-only query, keeping the hits that pass a filter on ``filter_field`` (attr or genre) if given."""
    return BASELINE_CYPHER.replace("{index}", VECTOR_INDEX).replace("{hops}", str(int(spec.hops))).replace(
        "{where}", FILTER_WHERE[filter_field] if filter_field else "")


def baseline_params(vector: np.ndarray, user: int, spec, k: int, ef: int | None = None) -> dict:
    return {"vector": [float(x) for x in vector], "candidates": int(spec.candidates),
            "asked": max(int(spec.candidates), int(ef or 0)), "seeds": int(spec.seeds),
            "limit": int(spec.expand_limit), "user": int(user), "k": int(k)}


def baseline_ids(records: list) -> tuple[np.ndarray, np.ndarray]:
    """(vector-index ids, ranked items) of a baseline query's one record."""
    if not records:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.asarray(records[0]["vector_ids"], dtype=np.int64), np.asarray(records[0]["ranked"], dtype=np.int64)


def _rows(catalogue, step: str) -> list:
    c = catalogue
    if step == "genres":
        return list(range(c.n_genres))
    if step == "people":
        return list(range(c.n_people))
    if step == "users":
        return list(range(c.n_users))
    if step == "items":
        return [{"id": i, "genre": int(g), "popularity": float(p), "embedding": v, "attr": int(a), "genre_label": int(b)}
                for i, (g, p, v, a, b) in enumerate(zip(c.item_genre, c.item_popularity, c.dataset.base.tolist(),
                                                        item_attr(c.dataset), item_genre_label(c.dataset), strict=True))]
    if step == "similar":
        src = np.repeat(np.arange(c.n_items), c.similar.shape[1])
        return np.stack([src, c.similar.ravel()], axis=1).tolist()
    if step == "people_edges":
        src = np.repeat(np.arange(c.n_items), c.item_people.shape[1])
        pairs = np.unique(np.stack([src, c.item_people.ravel()], axis=1), axis=0)
        return pairs.tolist()
    users, genres = np.nonzero(c.policy_weight > 0)
    return [[int(u), int(g), float(c.policy_weight[u, g])] for u, g in zip(users, genres, strict=True)]


class _Neo4jBase(AsyncStoreSystem):
    stores = ("neo4j",)
    requires = ("neo4j",)

    def make_store(self) -> Neo4jStore:
        return Neo4jStore(self.stores_spec.neo4j, self.workload.load.concurrency)

    def run_all(self, queries: np.ndarray, k: int, rows: np.ndarray) -> list:
        """Each row's query on the sync driver: its records."""
        return [self.store.run(self.cypher, **p) for p in self.params(queries, k, rows)]

    async def run_all_async(self, queries: np.ndarray, k: int, rows: np.ndarray) -> tuple[list, int, int]:
        return await each_in_turn(self.store.run_async, self.cypher, self.params(queries, k, rows))


class Neo4jSystem(_Neo4jBase):
    """Graph expansion alone: ``hybrid.hops`` deep from ``hybrid.seeds`` items fixed per query."""

    name = "neo4j"
    supported_ops = frozenset({"expand"})

    def prepare(self, catalogue, gpu_handles: list | None = None) -> None:
        super().prepare(catalogue)
        self.cypher = expand_cypher(self.workload.hybrid.hops)

    def request_params(self, vector: np.ndarray, row: int, k: int) -> dict:
        h = self.workload.hybrid
        return expand_params(seed_items(self.catalogue, np.array([row]), h.seeds)[0], h.expand_limit)

    def execute(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        stages: dict = {}
        with span(stages, "graph_ns"):
            found = self.run_all(queries, k, rows)
        return Answer(items=[expanded(r) for r in found], stages=stages)

    async def execute_async(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        found, sent_ns, done_ns = await self.run_all_async(queries, k, rows)
        return Answer(items=[expanded(r) for r in found], stages={"graph_ns": done_ns - sent_ns}, sent_ns=sent_ns,
                      done_ns=done_ns)


class Neo4jBaselineSystem(StoreWrites, _Neo4jBase):
    """The Neo4j-only design: vector index, expansion and policy rank in one Cypher query per request."""

    name = "neo4j_baseline"
    supported_ops = frozenset({"hybrid"})
    filterable = True  # WHERE on the vector index's hits (post-filtering: Neo4j's index does not filter)
    search_params = frozenset({"ef"})  # how many hits its vector index is asked for (its HNSW candidate list)

    def label(self) -> str:
        return "Neo4j only (vector index + graph + policy)"

    def prepare(self, catalogue, gpu_handles: list | None = None) -> None:
        super().prepare(catalogue)
        self.filters = pool_filters(self.workload, catalogue.dataset)
        self.cypher = baseline_cypher(self.workload.hybrid, self.filters.field if self.filters is not None else None)

    def request_params(self, vector: np.ndarray, row: int, k: int) -> dict:
        user = int(self.catalogue.user_of(np.array([row]))[0])
        params = baseline_params(vector, user, self.workload.hybrid, k, self.workload.search.params.get("ef"))
        if self.filters is not None and self.filters.labels is not None:
            params["genre_label"] = int(self.filters.labels[row])
        elif self.filters is not None:
            params["attr_lo"], params["attr_hi"] = (int(x) for x in self.filters.windows[row])
        return params

    @staticmethod
    def _answer(found: list, k: int, stages: dict, **stamps) -> Answer:
        ids = np.full((len(found), k), -1, dtype=np.int64)
        items = []
        for i, records in enumerate(found):
            vector_ids, ranked = baseline_ids(records)
            ids[i, : min(k, vector_ids.size)] = vector_ids[:k]
            items.append(ranked)
        return Answer(ids=ids, items=items, stages=stages, **stamps)

    def execute(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        stages: dict = {}
        with span(stages, "vector_ns"):  # one query: every stage happens inside it
            found = self.run_all(queries, k, rows)
        return self._answer(found, k, stages)

    async def execute_async(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        found, sent_ns, done_ns = await self.run_all_async(queries, k, rows)
        return self._answer(found, k, {"vector_ns": done_ns - sent_ns}, sent_ns=sent_ns, done_ns=done_ns)
