"""A real PostgreSQL for the tests: pgserver's PostgreSQL 16, started once per test session in a
temporary folder and stopped at its end; each caller gets a database of its own."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

_counter = itertools.count()


class PostgreSQLServer:
    def __init__(self, folder: Path) -> None:
        import pgserver  # the test extra installs it; without it the PostgreSQL tests fail, never skip
        import psycopg

        self._server = pgserver.get_server(folder, cleanup_mode="stop")
        self._admin = psycopg.connect(self._server.get_uri(), autocommit=True)

    def new_database(self) -> str:
        """The URL of a new, empty database."""
        name = f"t{os.getpid()}_{next(_counter)}"
        self._admin.execute(f"CREATE DATABASE {name}")
        return self._server.get_uri(name)

    def copy_database(self, url: str) -> str:
        """The URL of a new database holding what the database at ``url`` holds (nobody may be
        connected to it meanwhile)."""
        from psycopg.conninfo import conninfo_to_dict

        name = f"t{os.getpid()}_{next(_counter)}"
        self._admin.execute(f"CREATE DATABASE {name} TEMPLATE {conninfo_to_dict(url)['dbname']}")
        return self._server.get_uri(name)

    def terminate(self, backend_pid: int) -> None:
        """End one connection from the server's side."""
        self._admin.execute("SELECT pg_terminate_backend(%s)", (backend_pid,))

    def restart(self) -> None:
        """Stop the server (ending every connection) and start it again, as an operator's restart
        does; it listens where it listened before."""
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=self._server.pgdata, user=self._server.system_user, timeout=60)
        self._admin.close()
        import psycopg

        self._admin = psycopg.connect(self._server.get_uri(), autocommit=True)

    def close(self) -> None:
        self._admin.close()
        self._server.cleanup()
