"""The server store: PostgreSQL, shared by any number of faceledger nodes (docs/scaling.md)."""

from __future__ import annotations

from faceledger.store.postgresql.connection import PostgreSQLDatabase, describe_url
from faceledger.store.sql.store import SQLStore


class PostgreSQLStore(SQLStore):
    """Everything of one data directory in one PostgreSQL database (the keys stay in the data
    directory: a copy of the database alone reveals no template and no secret)."""

    def __init__(self, url: str) -> None:
        super().__init__(PostgreSQLDatabase(url))


__all__ = ["PostgreSQLStore", "describe_url"]
