"""Neo4j, the graph store (official driver over Bolt): the catalogue graph, k-hop expansion from seed items,
and the Neo4j-only baseline (Neo4j's own vector index + the same expansion + the policy rank in Cypher)."""

from __future__ import annotations

import numpy as np

from perfray.sut.base import Answer, StoreSystem, env_secret, seed_items, span, unavailable

VECTOR_INDEX = "perfray_item_embedding"
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

# One query does what the hybrid stack does across three stores.
BASELINE_CYPHER = """
CALL db.index.vector.queryNodes('{index}', $candidates, $vector) YIELD node AS hit, score
WITH collect(hit) AS hits
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

LOAD_STEPS = (
    ("genres", "UNWIND $rows AS r CREATE (:Genre {id: r})"),
    ("people", "UNWIND $rows AS r CREATE (:Person {id: r})"),
    ("users", "UNWIND $rows AS r CREATE (:User {id: r})"),
    ("items", "UNWIND $rows AS r MATCH (g:Genre {id: r.genre}) "
              "CREATE (i:Item {id: r.id, genre: r.genre, popularity: r.popularity, embedding: r.embedding})"
              "-[:IN_GENRE]->(g)"),
    ("similar", "UNWIND $rows AS r MATCH (a:Item {id: r[0]}), (b:Item {id: r[1]}) CREATE (a)-[:SIMILAR_TO]->(b)"),
    ("people_edges", "UNWIND $rows AS r MATCH (p:Person {id: r[1]}), (i:Item {id: r[0]}) "
                     "CREATE (p)-[:ACTED_IN]->(i)"),
    ("policies", "UNWIND $rows AS r MATCH (u:User {id: r[0]}), (g:Genre {id: r[1]}) "
                 "CREATE (u)-[:ALLOWS {weight: r[2]}]->(g)"),
)


class Neo4jStore:
    """A driver (its own connection pool) on one database."""

    def __init__(self, spec, pool_max: int) -> None:
        self.spec, self.pool_max = spec, pool_max
        self.driver = None

    @property
    def uri(self) -> str:
        return self.spec.uri

    def connect(self) -> None:
        import neo4j

        user, password = env_secret(self.spec.user_env), env_secret(self.spec.password_env)
        auth = (user or "neo4j", password) if password else None
        self.driver = neo4j.GraphDatabase.driver(
            self.spec.uri, auth=auth, max_connection_pool_size=self.pool_max,
            connection_timeout=self.spec.connect_timeout_s, connection_acquisition_timeout=self.spec.connect_timeout_s,
            max_transaction_retry_time=0, notifications_min_severity="OFF")
        try:
            self.driver.verify_connectivity()
        except Exception as err:  # the driver raises several unrelated classes for "not there"
            self.close()
            raise unavailable("neo4j", self.uri, err) from None

    def run(self, cypher: str, **params) -> list:
        """One auto-commit query, every record read."""
        records, _, _ = self.driver.execute_query(cypher, params, database_=self.spec.database)
        return records

    def fingerprint(self) -> str | None:
        rows = self.run("MATCH (m:PerfrayMeta {key: 'catalogue'}) RETURN m.value AS v")
        return rows[0]["v"] if rows else None

    def load(self, catalogue, progress=None) -> dict:
        """Replace the graph with ``catalogue``; the fingerprint is written last, so a partial load is redone."""
        if self.fingerprint() == catalogue.fingerprint:
            if progress is not None:
                progress(catalogue.n_items)
            return {"store": "neo4j", "loaded": False, "items": catalogue.n_items}
        with self.driver.session(database=self.spec.database) as session:
            session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()
            session.run(f"DROP INDEX {VECTOR_INDEX} IF EXISTS").consume()
            for label in ("Item", "Genre", "Person", "User"):
                session.run(f"CREATE CONSTRAINT perfray_{label.lower()}_id IF NOT EXISTS "
                            f"FOR (n:{label}) REQUIRE n.id IS UNIQUE").consume()
        for name, cypher in LOAD_STEPS:
            rows = _rows(catalogue, name)
            for lo in range(0, len(rows), BATCH):
                self.run(cypher, rows=rows[lo:lo + BATCH])
                if progress is not None and name == "items":
                    progress(min(BATCH, len(rows) - lo))
        self.run(f"CREATE VECTOR INDEX {VECTOR_INDEX} IF NOT EXISTS FOR (i:Item) ON (i.embedding) "
                 "OPTIONS {indexConfig: {`vector.dimensions`: $dim, `vector.similarity_function`: 'euclidean'}}",
                 dim=catalogue.dataset.dim)
        self.run("CALL db.awaitIndexes(600)")
        self.run("MERGE (m:PerfrayMeta {key: 'catalogue'}) SET m.value = $fp", fp=catalogue.fingerprint)
        return {"store": "neo4j", "loaded": True, "items": catalogue.n_items,
                "similar_edges": int(catalogue.similar.size)}

    def expand(self, seeds: np.ndarray, hops: int, limit: int) -> np.ndarray:
        """Items within 1..``hops`` SIMILAR_TO edges of ``seeds``: the first ``limit`` by id."""
        rows = self.run(EXPAND_CYPHER.replace("{hops}", str(int(hops))), seeds=[int(s) for s in seeds],
                        limit=int(limit))
        return np.asarray(rows[0]["ids"] if rows else [], dtype=np.int64)

    def baseline(self, vector: np.ndarray, user: int, spec, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(vector-index ids, ranked items) from the single Neo4j-only query."""
        cypher = BASELINE_CYPHER.replace("{index}", VECTOR_INDEX).replace("{hops}", str(int(spec.hops)))
        rows = self.run(cypher, vector=[float(x) for x in vector], candidates=int(spec.candidates),
                        seeds=int(spec.seeds), limit=int(spec.expand_limit), user=int(user), k=int(k))
        if not rows:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        return np.asarray(rows[0]["vector_ids"], dtype=np.int64), np.asarray(rows[0]["ranked"], dtype=np.int64)

    def stats(self) -> dict[str, int]:
        pool = getattr(self.driver, "_pool", None)  # the driver has no public pool gauge
        connections = getattr(pool, "connections", None) if pool is not None else None
        if not isinstance(connections, dict):
            return {}
        total = sum(len(c) for c in connections.values())
        in_use = sum(1 for c in connections.values() for conn in c if getattr(conn, "in_use", False))
        return {"active": in_use, "idle": total - in_use}

    def close(self) -> None:
        if self.driver is not None:
            self.driver.close()
            self.driver = None


def _rows(catalogue, step: str) -> list:
    c = catalogue
    if step == "genres":
        return list(range(c.n_genres))
    if step == "people":
        return list(range(c.n_people))
    if step == "users":
        return list(range(c.n_users))
    if step == "items":
        return [{"id": i, "genre": int(g), "popularity": float(p), "embedding": v}
                for i, (g, p, v) in enumerate(zip(c.item_genre, c.item_popularity, c.dataset.base.tolist(),
                                                  strict=True))]
    if step == "similar":
        src = np.repeat(np.arange(c.n_items), c.similar.shape[1])
        return np.stack([src, c.similar.ravel()], axis=1).tolist()
    if step == "people_edges":
        src = np.repeat(np.arange(c.n_items), c.item_people.shape[1])
        pairs = np.unique(np.stack([src, c.item_people.ravel()], axis=1), axis=0)
        return pairs.tolist()
    users, genres = np.nonzero(c.policy_weight > 0)
    return [[int(u), int(g), float(c.policy_weight[u, g])] for u, g in zip(users, genres, strict=True)]


class _Neo4jBase(StoreSystem):
    stores = ("neo4j",)
    requires = ("neo4j",)

    def make_store(self) -> Neo4jStore:
        return Neo4jStore(self.stores_spec.neo4j, self.workload.load.concurrency)


class Neo4jSystem(_Neo4jBase):
    """Graph expansion alone: ``hybrid.hops`` deep from ``hybrid.seeds`` items fixed per query."""

    name = "neo4j"
    supported_ops = frozenset({"expand"})

    def execute(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        h = self.workload.hybrid
        stages: dict = {}
        with span(stages, "graph_ns"):
            items = [self.store.expand(s, h.hops, h.expand_limit) for s in seed_items(self.catalogue, rows, h.seeds)]
        return Answer(items=items, stages=stages)


class Neo4jBaselineSystem(_Neo4jBase):
    """The Neo4j-only design: vector index, expansion and policy rank in one Cypher query per request."""

    name = "neo4j_baseline"
    supported_ops = frozenset({"hybrid"})

    def label(self) -> str:
        return "Neo4j only (vector index + graph + policy)"

    def execute(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        users = self.catalogue.user_of(rows)
        ids = np.full((queries.shape[0], k), -1, dtype=np.int64)
        items = []
        stages: dict = {}
        with span(stages, "vector_ns"):  # one query: every stage happens inside it
            for i, (vector, user) in enumerate(zip(queries, users, strict=True)):
                vector_ids, ranked = self.store.baseline(vector, int(user), self.workload.hybrid, k)
                ids[i, : min(k, vector_ids.size)] = vector_ids[:k]
                items.append(ranked)
        return Answer(ids=ids, items=items, stages=stages)
