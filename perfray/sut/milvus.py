"""Milvus (pymilvus): Milvus Lite embedded by default (a ``….db`` file), or any server by URI with a token
from the environment. Index type and parameters come from config."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from perfray.data.filters import item_attr, item_genre_label, pool_filters, windows_of
from perfray.sut.base import (
    Answer,
    AsyncStoreSystem,
    StoreWrites,
    TwoHandles,
    env_secret,
    load_fingerprint,
    span,
    unavailable,
)
from perfray.timing import process_clock

INSERT_BATCH = 5_000
COLLECTION_FORMAT = "attr-genre-1"  # the collection's fields: a collection of another format is loaded again


class MilvusStore(TwoHandles):
    """One MilvusClient on one collection of item vectors (id = catalogue item id); in a load actor served by a
    server, an ``AsyncMilvusClient`` on the actor's event loop instead (``open_async``)."""

    HANDLES = ("client", "async_client")

    def __init__(self, spec, search_params: dict | None = None) -> None:
        self.spec = spec
        # the store's own search params, then the cell's search.params (ef, nprobe: Milvus' own names) over them
        self.search_params = {**spec.search_params, **(search_params or {})}
        self.client = None
        self.async_client = None
        self._genre_of: dict[int, int] | None = None  # filter.field genre: a window's start -> its genre label

    def use_filters(self, filters) -> None:
        """Filter by genre label (``genre_label == g``) when ``filters`` (``QueryFilters``) are genre filters;
        searches still name each request's window, which is that genre's ``attr`` range."""
        self._genre_of = None if filters is None or filters.labels is None else {
            int(lo): int(label) for (lo, _), label in zip(filters.windows, filters.labels, strict=True)}

    @property
    def uri(self) -> str:
        return self.spec.uri

    def _client_options(self) -> dict:
        token = env_secret(self.spec.token_env)
        return {"uri": self.uri, **({"token": token} if token else {}), "timeout": 10}

    def connect(self) -> None:
        from pymilvus import MilvusClient

        try:
            self.client = MilvusClient(**self._client_options())
            self.client.list_collections()
        except Exception as err:  # pymilvus raises its own and grpc's classes for "not there"
            self.client = None
            raise unavailable("milvus", self.spec.uri, err) from None

    async def open_async(self) -> None:
        """Serve searches from an ``AsyncMilvusClient`` on the running loop (the sync client is closed)."""
        from pymilvus import AsyncMilvusClient

        if self.async_client is not None:
            return
        if self.client is not None:
            self.client.close()
            self.client = None
        client = AsyncMilvusClient(**self._client_options())
        try:
            await client.load_collection(self.spec.collection)
        except Exception as err:
            await client.close()
            raise unavailable("milvus", self.spec.uri, err) from None
        self.async_client = client

    @property
    def _marker_prefix(self) -> str:
        return f"{self.spec.collection}_catalogue_"

    def _markers(self) -> list[str]:
        return [c for c in self.client.list_collections() if c.startswith(self._marker_prefix)]

    def fingerprint(self) -> str | None:
        """The loaded catalogue's fingerprint: the name of an empty marker collection (Milvus Lite keeps no
        collection descriptions or properties)."""
        markers = self._markers()
        if len(markers) != 1 or not self.client.has_collection(self.spec.collection):
            return None
        return markers[0].removeprefix(self._marker_prefix)

    def load(self, catalogue, progress=None) -> dict:
        """(Re)create the collection. The fingerprint marker is written last, so a half-loaded collection is
        recreated next time."""
        from pymilvus import DataType

        c, spec = self.spec.collection, self.spec
        wanted = load_fingerprint(catalogue, *self.fingerprint_settings())
        if self.fingerprint() == wanted:
            self.client.load_collection(c)
            # the marker says the catalogue was loaded, the count says it is still whole (an embedded Milvus
            # Lite stopped without its close can come back without writes it had acknowledged)
            if self.count() == catalogue.n_items:
                if progress is not None:
                    progress(catalogue.n_items)
                return {"store": "milvus", "loaded": False, "items": catalogue.n_items}
        for name in [*self._markers(), c]:
            if self.client.has_collection(name):
                self.client.drop_collection(name)
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=catalogue.dataset.dim)
        schema.add_field("attr", DataType.INT64)  # filtered search (workload.filter)
        schema.add_field("genre_label", DataType.INT64)  # by label (filter.field: genre)
        self.client.create_collection(c, schema=schema)
        base = catalogue.dataset.base
        attr, genre = item_attr(catalogue.dataset).tolist(), item_genre_label(catalogue.dataset).tolist()
        for lo in range(0, catalogue.n_items, INSERT_BATCH):
            hi = min(lo + INSERT_BATCH, catalogue.n_items)
            self.client.insert(c, [{"id": i, "embedding": base[i], "attr": attr[i], "genre_label": genre[i]}
                                   for i in range(lo, hi)])
            if progress is not None:
                progress(hi - lo)
        started = time.perf_counter()
        index = self.client.prepare_index_params()
        index.add_index("embedding", index_type=spec.index_type, metric_type="L2", params=dict(spec.index_params))
        self.client.create_index(c, index)
        self.client.load_collection(c)
        build_s = time.perf_counter() - started  # the index built and the collection loaded for search
        self._mark(wanted)
        return {"store": "milvus", "loaded": True, "items": catalogue.n_items, "index_type": spec.index_type,
                "index": spec.index_type, "build_s": build_s}

    def fingerprint_settings(self) -> tuple:
        """What besides the catalogue the loaded collection must match: the index and the collection's format."""
        return self.spec.index_type, dict(self.spec.index_params), COLLECTION_FORMAT

    async def write_async(self, kind: str, item: int, vector: np.ndarray) -> tuple[int, int]:
        """One insert, upsert or delete on the async client; the clock's stamps around the call."""
        if self.async_client is None:
            await self.open_async()
        clock, c = process_clock(), self.spec.collection
        sent_ns = clock.now_ns()
        if kind == "delete":
            await self.async_client.delete(c, ids=[item])
        else:  # written items carry no filter attribute (load.writes excludes a filter)
            await getattr(self.async_client, kind)(c, [{"id": item, "embedding": vector.tolist(), "attr": -1,
                                                         "genre_label": -1}])
        return sent_ns, clock.now_ns()

    async def nearest_async(self, vector: np.ndarray) -> tuple[int, int]:
        ids, sent_ns, _ = await self.search_async([vector.tolist()], 1)
        return int(ids[0, 0]), sent_ns

    def forget_load(self) -> None:
        """Drop the fingerprint marker: the next load rebuilds the collection (it is about to be written to)."""
        for name in self._markers():
            self.client.drop_collection(name)

    def restore(self, catalogue, touched: np.ndarray) -> None:
        """Back to ``catalogue``: items past it deleted, the ``touched`` ones written as they were, the marker
        back."""
        dataset, c = catalogue.dataset, self.spec.collection
        self.client.delete(c, filter=f"id >= {int(dataset.n)}")
        attr, genre = item_attr(dataset), item_genre_label(dataset)
        originals = [{"id": int(i), "embedding": dataset.base[i], "attr": int(attr[i]), "genre_label": int(genre[i])}
                     for i in touched.tolist() if i < dataset.n]
        for lo in range(0, len(originals), INSERT_BATCH):
            self.client.upsert(c, originals[lo:lo + INSERT_BATCH])
        self.client.flush(c)  # sealed into the store's files, not left to its write-ahead log
        self._mark(load_fingerprint(catalogue, *self.fingerprint_settings()))

    def count(self) -> int:
        """Entities in the collection (a loaded one), as the store counts them once every write it acknowledged
        is visible (a server's default consistency may lag)."""
        got = self.client.query(self.spec.collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
        return int(got[0]["count(*)"])

    def _mark(self, fingerprint: str) -> None:
        from pymilvus import DataType

        meta = self._marker_prefix + fingerprint
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
        self.client.create_collection(meta, schema=schema)

    def _search_args(self, vectors, k: int, window=None) -> dict:
        data = vectors.tolist() if isinstance(vectors, np.ndarray) else vectors
        args = {"collection_name": self.spec.collection, "data": data, "limit": int(k), "output_fields": ["id"],
                "search_params": {"metric_type": "L2", "params": dict(self.search_params)}}
        if window is not None:  # one filter expression per call: a filtered request searches row by row
            args["filter"] = (f"attr >= {int(window[0])} and attr < {int(window[1])}" if self._genre_of is None
                              else f"genre_label == {self._genre_of[int(window[0])]}")
        return args

    def search(self, vectors, k: int, windows=None) -> np.ndarray:
        """Top-k ids per query vector (an array, or lists), in one call (every hit read); with ``windows``, each
        vector among the items inside its own filter window (a call per vector)."""
        if windows is None:
            return _top_k(self.client.search(**self._search_args(vectors, k)), len(vectors), k)
        return np.concatenate([_top_k(self.client.search(**self._search_args(vectors[i:i + 1], k, w)), 1, k)
                               for i, w in enumerate(windows)])

    async def search_async(self, vectors: list[list[float]], k: int, windows=None) -> tuple[np.ndarray, int, int]:
        """``search`` on the async client, with the clock's stamps around the call(s)."""
        if self.async_client is None:
            await self.open_async()
        clock = process_clock()
        sent_ns = clock.now_ns()
        if windows is None:
            ids = _top_k(await self.async_client.search(**self._search_args(vectors, k)), len(vectors), k)
        else:
            calls = [self.async_client.search(**self._search_args(vectors[i:i + 1], k, w)) for i, w in enumerate(windows)]
            ids = np.concatenate([_top_k(hits, 1, k) for hits in await asyncio.gather(*calls)])
        done_ns = clock.now_ns()
        return ids, sent_ns, done_ns



def _top_k(hits, n: int, k: int) -> np.ndarray:
    ids = np.full((n, k), -1, dtype=np.int64)
    for i, row in enumerate(hits):
        found = [h["id"] for h in row]
        ids[i, : len(found)] = found
    return ids


class MilvusSystem(StoreWrites, AsyncStoreSystem):
    """Vector search in Milvus; recall against exact ground truth. On a load actor's loop through pymilvus'
    async client when Milvus is a server (a Lite file opened in-process has no async client)."""

    name = "milvus"
    stores = ("milvus",)
    supported_ops = frozenset({"knn"})
    requires = ("pymilvus",)
    filterable = True  # a filter expression on attr (a range) or genre_label (equality)
    search_params = frozenset({"ef", "nprobe"})

    def label(self) -> str:
        return "Milvus Lite (embedded)" if self.stores_spec.milvus.embedded else "Milvus server"

    def make_store(self) -> MilvusStore:
        return MilvusStore(self.stores_spec.milvus, self.workload.search.params)

    @property
    def async_native(self) -> bool:  # type: ignore[override]
        return not self.stores_spec.milvus.embedded

    def prepare(self, catalogue, gpu_handles: list | None = None) -> None:
        super().prepare(catalogue, gpu_handles)
        filters = pool_filters(self.workload, catalogue.dataset)
        self.windows = filters.windows if filters is not None else None
        self.store.use_filters(filters)

    def request_params(self, vector: np.ndarray, row: int, k: int) -> list[float]:
        return vector.tolist()

    def execute(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        stages: dict = {}
        with span(stages, "vector_ns"):
            ids = self.store.search(self.params(queries, k, rows), k, windows_of(self.windows, rows))
        return Answer(ids=ids, stages=stages)

    async def execute_async(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        ids, sent_ns, done_ns = await self.store.search_async(self.params(queries, k, rows), k,
                                                              windows_of(self.windows, rows))
        return Answer(ids=ids, stages={"vector_ns": done_ns - sent_ns}, sent_ns=sent_ns, done_ns=done_ns)
