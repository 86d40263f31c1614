"""Systems under test (``base.SystemUnderTest``), chosen by ``workload.system``."""

from __future__ import annotations

from perfray.registry import Registry

SYSTEMS = Registry("system")
SYSTEMS.register("gpu_search", "perfray.sut.gpu_search:GpuSearchSystem")
SYSTEMS.register("milvus", "perfray.sut.milvus:MilvusSystem")
SYSTEMS.register("postgres", "perfray.sut.postgres:PostgresSystem")
SYSTEMS.register("pgvector", "perfray.sut.pgvector:PgvectorSystem")
SYSTEMS.register("neo4j", "perfray.sut.neo4j:Neo4jSystem")
SYSTEMS.register("neo4j_baseline", "perfray.sut.neo4j:Neo4jBaselineSystem")
SYSTEMS.register("hybrid", "perfray.sut.hybrid:HybridSystem")
SYSTEMS.register("http", "perfray.sut.http:HttpSystem")
SYSTEMS.register("instant", "perfray.sut.instant:InstantSystem")
