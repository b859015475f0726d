"""Server mode's store: which database a data directory uses, and what a node does when it
cannot reach it. The rest of PostgreSQL's behaviour is the whole suite, run on both engines."""

from __future__ import annotations

import logging
import socket
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

import faceledger
from faceledger.cli.main import app
from faceledger.config import DATABASE_URL_ENV
from faceledger.errors import DataDirectoryError, ServiceUnavailableException
from faceledger.service.data_directory import DATABASE_RECORD
from faceledger.store import without_password

from postgres import PostgreSQLServer

# these tests choose their databases themselves: the harness's choice for new data directories
# (tests/conftest.py) is left unset
pytestmark = pytest.mark.backends("sqlite")


def _with_password(url: str, password: str) -> str:
    return url.replace("postgresql://postgres:@", f"postgresql://postgres:{password}@", 1)


def test_a_new_data_directory_records_its_database_without_the_password(
    tmp_path: Path, postgresql_server: PostgreSQLServer
) -> None:
    url = _with_password(postgresql_server.new_database(), "hunter2-not-stored")
    data = tmp_path / "data"
    with faceledger.open(data, database_url=url) as service:
        service.create_collection(collection_id="c")
        assert "PostgreSQL database" in service.store.describe() and "hunter2" not in service.store.describe()
    record = data / DATABASE_RECORD
    assert stat.S_IMODE(record.stat().st_mode) == 0o600
    assert not (data / "faceledger.sqlite3").exists()
    assert all(b"hunter2" not in f.read_bytes() for f in data.rglob("*") if f.is_file())
    # opened again without naming it, the directory finds its database
    with faceledger.open(data) as service:
        assert service.list_collections()["CollectionIds"] == ["c"]


def test_a_data_directory_refuses_another_database_and_the_environment_only_chooses_for_new_ones(
    tmp_path: Path, postgresql_server: PostgreSQLServer, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    first, second = postgresql_server.new_database(), postgresql_server.new_database()
    with faceledger.open(tmp_path / "pg", database_url=first) as service:
        service.create_collection(collection_id="in-first")
    with pytest.raises(DataDirectoryError, match="faceledger migrate --to"):
        faceledger.open(tmp_path / "pg", database_url=second)
    embedded = tmp_path / "embedded"
    with faceledger.open(embedded) as service:
        service.create_collection(collection_id="local")
    with pytest.raises(DataDirectoryError, match="the SQLite file"):
        faceledger.open(embedded, database_url=second)
    monkeypatch.setenv(DATABASE_URL_ENV, second)
    with caplog.at_level(logging.WARNING), faceledger.open(embedded) as service:
        assert service.list_collections()["CollectionIds"] == ["local"]  # still its own SQLite file
    assert "only chooses for a new data directory" in caplog.text
    with faceledger.open(tmp_path / "new") as service:  # a new directory takes the environment's
        service.create_collection(collection_id="in-second")
    assert (tmp_path / "new" / DATABASE_RECORD).read_text().strip() == without_password(second)


def test_the_cli_takes_database_and_an_unreachable_one_is_a_one_line_try_again(
    tmp_path: Path, postgresql_server: PostgreSQLServer
) -> None:
    url = postgresql_server.new_database()
    data = ["--data-dir", str(tmp_path / "data")]
    created = CliRunner().invoke(app, [*data, "--database", url, "collection", "create", "c"])
    assert created.exit_code == 0, created.output
    listed = CliRunner().invoke(app, [*data, "collection", "list"])
    assert listed.exit_code == 0 and "c" in listed.stdout
    not_a_url = CliRunner().invoke(
        app, ["--data-dir", str(tmp_path / "x"), "--database", "/tmp/file.db", "collection", "list"]
    )
    assert not_a_url.exit_code == 78 and "postgresql:// URL" in not_a_url.stderr
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    nowhere = f"postgresql://postgres:secret-of-nowhere@127.0.0.1:{port}/faceledger"
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "y"), "--database", nowhere, "collection", "list"])
    assert result.exit_code == 69, result.output
    assert "ServiceUnavailableException" in result.stderr and "try again" in result.stderr
    assert "secret-of-nowhere" not in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_a_lost_connection_is_service_unavailable_and_the_next_call_reconnects(
    tmp_path: Path, postgresql_server: PostgreSQLServer
) -> None:
    url = postgresql_server.new_database()
    with faceledger.open(tmp_path / "data", database_url=url) as service:
        service.create_collection(collection_id="c")
        # the server ends this node's connection (as a restart or a network cut would)
        mine = service.store.database.connection().execute("SELECT pg_backend_pid()").fetchone()[0]
        postgresql_server.terminate(mine)
        with pytest.raises(ServiceUnavailableException):
            service.list_collections()
        assert service.list_collections()["CollectionIds"] == ["c"]
        assert service.ledger.verify() == []
