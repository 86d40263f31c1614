"""perfray: honest performance measurement of GPU vector search and hybrid retrieval stacks."""

__version__ = "0.1.0"
SCHEMA_VERSION = 5
