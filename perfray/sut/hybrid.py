"""The hybrid pipeline: vector top-k (GPU search actors or Milvus) → graph expansion (Neo4j) → policy rank
(PostgreSQL), with an optional result cache. Each request reports how long each stage took."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from perfray.data.filters import item_attr, pool_filters, windows_of
from perfray.sut.base import Answer, SystemUnderTest, span
from perfray.sut.batching import MicroBatcher
from perfray.sut.gpu_search import GpuActorsVector
from perfray.sut.milvus import MilvusStore
from perfray.sut.neo4j import Neo4jStore
from perfray.sut.postgres import PostgresStore


class ResultCache:
    """LRU of final answers keyed by (query row, user, k): what a recommendation service would cache."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.lookups = 0

    def get(self, key):
        with self._lock:
            self.lookups += 1
            value = self._data.get(key)
            if value is not None:
                self.hits += 1
                self._data.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.entries:
                self._data.popitem(last=False)


class HybridSystem(SystemUnderTest):
    name = "hybrid"
    supported_ops = frozenset({"hybrid"})
    filterable = True  # on the vector stage (Milvus' filter expression, or the search actors' mask)

    requires = ("neo4j", "psycopg_pool")

    def __init__(self, workload, stores) -> None:
        super().__init__(workload, stores)
        self.spec = workload.hybrid
        self.cache = ResultCache(self.spec.cache_entries) if self.spec.cache else None

    @property
    def stores(self) -> tuple[str, ...]:  # type: ignore[override]
        return (("milvus",) if self.spec.vector == "milvus" else ()) + ("neo4j",) + (
            ("postgres",) if self.spec.policy else ())

    @property
    def needs_gpu_actors(self) -> bool:  # type: ignore[override]
        return self.spec.vector == "gpu_search"

    def label(self) -> str:
        vector = "Milvus Lite (embedded)" if self.spec.vector == "milvus" and self.stores_spec.milvus.embedded else (
            "Milvus" if self.spec.vector == "milvus" else "GPU search")
        policy = " → PostgreSQL" if self.spec.policy else ""
        return f"hybrid: {vector} → Neo4j{policy}" + (" + cache" if self.cache else "")

    def connect(self) -> None:
        concurrency = self.workload.load.concurrency
        self.postgres = PostgresStore(self.stores_spec.postgres, self.stores_spec.postgres.pool_max or concurrency) \
            if self.spec.policy else None
        self.neo4j = Neo4jStore(self.stores_spec.neo4j, concurrency)
        self.milvus = (MilvusStore(self.stores_spec.milvus, self.workload.search.params)
                       if self.spec.vector == "milvus" else None)
        for store in (self.milvus, self.neo4j, self.postgres):
            if store is not None:
                store.connect()

    def load(self, catalogue, progress=None) -> dict:
        out = {}
        for store in (self.milvus, self.neo4j, self.postgres):
            if store is not None:
                info = store.load(catalogue, progress)
                out[info["store"]] = info
        return out

    def prepare(self, catalogue, gpu_handles: list | None = None) -> None:
        super().prepare(catalogue)
        filters = pool_filters(self.workload, catalogue.dataset)
        self.windows = filters.windows if filters is not None else None
        if self.milvus is not None:
            self.milvus.use_filters(filters)
        self.vector = self.milvus if self.milvus is not None else GpuActorsVector(
            gpu_handles, catalogue.dataset.base, self.workload.search.topology,
            item_attr(catalogue.dataset) if self.windows is not None else None)
        if self.spec.vector_batch_window_ms > 0:
            self.vector = MicroBatcher(self.vector.search, self.spec.vector_batch_window_ms / 1e3,
                                       self.spec.vector_batch_max)

    def execute(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        users = self.catalogue.user_of(rows)
        keys = [(int(r), int(u), int(k)) for r, u in zip(rows, users, strict=True)]
        if self.cache is not None:
            cached = [self.cache.get(key) for key in keys]
            if all(c is not None for c in cached):
                return Answer(ids=np.stack([c[0] for c in cached]), items=[c[1] for c in cached],
                              stages={"cache_hit": True})
        s, stages = self.spec, {}
        with span(stages, "vector_ns"):
            candidates = self.vector.search(queries, max(s.candidates, k), windows_of(self.windows, rows))
        with span(stages, "graph_ns"):
            expanded = [self.neo4j.expand(row[: s.seeds][row[: s.seeds] >= 0], s.hops, s.expand_limit)
                        for row in candidates]
        if self.postgres is None:
            items = [np.concatenate([c[c >= 0], np.setdiff1d(e, c)]) for c, e in zip(candidates, expanded, strict=True)]
        else:
            with span(stages, "policy_ns"):
                items = [self.postgres.rank(int(u), np.union1d(c[c >= 0], e), k)
                         for u, c, e in zip(users, candidates, expanded, strict=True)]
        ids = candidates[:, :k]
        if self.cache is not None:
            stages["cache_hit"] = False
            for key, row, item in zip(keys, ids, items, strict=True):
                self.cache.put(key, (row, item))
        return Answer(ids=ids, items=items, stages=stages)

    def pool_stats(self) -> dict[str, dict[str, int]]:
        stats = {"neo4j": self.neo4j.stats()}
        if self.postgres is not None:
            stats["postgres"] = self.postgres.stats()
        return stats

    def cache_stats(self) -> dict[str, int] | None:
        return None if self.cache is None else {"hits": self.cache.hits, "lookups": self.cache.lookups}

    def close(self) -> None:
        if isinstance(getattr(self, "vector", None), MicroBatcher):
            self.vector.close()
        for name in ("milvus", "neo4j", "postgres"):
            store = getattr(self, name, None)
            if store is not None:
                store.close()
