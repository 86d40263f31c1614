"""Milvus (pymilvus): Milvus Lite embedded by default (a ``….db`` file), or any server by URI with a token
from the environment. Index type and parameters come from config."""

from __future__ import annotations

import numpy as np

from perfray.sut.base import Answer, StoreSystem, env_secret, span, unavailable

INSERT_BATCH = 5_000


class MilvusStore:
    """One MilvusClient on one collection of item vectors (id = catalogue item id)."""

    def __init__(self, spec) -> None:
        self.spec = spec
        self.client = None

    @property
    def uri(self) -> str:
        return self.spec.uri

    def connect(self) -> None:
        from pymilvus import MilvusClient

        token = env_secret(self.spec.token_env)
        try:
            self.client = MilvusClient(uri=self.uri, **({"token": token} if token else {}), timeout=10)
            self.client.list_collections()
        except Exception as err:  # pymilvus raises its own and grpc's classes for "not there"
            self.client = None
            raise unavailable("milvus", self.spec.uri, err) from None

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
        if self.fingerprint() == catalogue.fingerprint:
            if progress is not None:
                progress(catalogue.n_items)
            self.client.load_collection(c)
            return {"store": "milvus", "loaded": False, "items": catalogue.n_items}
        for name in [*self._markers(), c]:
            if self.client.has_collection(name):
                self.client.drop_collection(name)
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=catalogue.dataset.dim)
        self.client.create_collection(c, schema=schema)
        base = catalogue.dataset.base
        for lo in range(0, catalogue.n_items, INSERT_BATCH):
            hi = min(lo + INSERT_BATCH, catalogue.n_items)
            self.client.insert(c, [{"id": i, "embedding": base[i]} for i in range(lo, hi)])
            if progress is not None:
                progress(hi - lo)
        index = self.client.prepare_index_params()
        index.add_index("embedding", index_type=spec.index_type, metric_type="L2", params=dict(spec.index_params))
        self.client.create_index(c, index)
        self.client.load_collection(c)
        self._mark(catalogue.fingerprint)
        return {"store": "milvus", "loaded": True, "items": catalogue.n_items, "index_type": spec.index_type}

    def _mark(self, fingerprint: str) -> None:
        from pymilvus import DataType

        meta = self._marker_prefix + fingerprint
        schema = self.client.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
        self.client.create_collection(meta, schema=schema)

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Top-k ids per query (every hit read)."""
        hits = self.client.search(self.spec.collection, data=[q.tolist() for q in queries], limit=int(k),
                                  output_fields=["id"], search_params={"metric_type": "L2",
                                                                       "params": dict(self.spec.search_params)})
        ids = np.full((queries.shape[0], k), -1, dtype=np.int64)
        for i, row in enumerate(hits):
            found = [h["id"] for h in row]
            ids[i, : len(found)] = found
        return ids

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class MilvusSystem(StoreSystem):
    """Vector search in Milvus; recall against exact ground truth."""

    name = "milvus"
    stores = ("milvus",)
    supported_ops = frozenset({"knn"})
    requires = ("pymilvus",)

    def label(self) -> str:
        return "Milvus Lite (embedded)" if self.stores_spec.milvus.embedded else "Milvus server"

    def make_store(self) -> MilvusStore:
        return MilvusStore(self.stores_spec.milvus)

    def execute(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Answer:
        stages: dict = {}
        with span(stages, "vector_ns"):
            ids = self.store.search(queries, k)
        return Answer(ids=ids, stages=stages)
