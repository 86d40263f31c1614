"""Local servers for tests and single-machine runs: PostgreSQL, Neo4j Community and Milvus Lite, each on a
loopback port in a directory of its own (never a system's default cluster)."""
