"""Shared fixtures. Real face data comes from ``$FACELEDGER_TEST_DATA`` (default: the
``../shared/data`` folder beside the project). Outside CI a missing data set skips the tests that
need it; in CI (``CI=true``) it is a failure.

Every test that can make a data directory (it uses ``tmp_path`` or ``tmp_path_factory``, itself or
through its fixtures) runs twice: once with its stores in SQLite files, once in PostgreSQL (a real
server, tests/postgres.py). In the PostgreSQL run each test, each module and the session get a
database of their own through FACELEDGER_DATABASE_URL, which chooses where a *new* data directory
keeps its store (a data directory keeps the store it was made with), so data directories made by
module and session fixtures keep theirs across tests, and subprocesses (the CLI, ``serve``) inherit
the choice. ``@pytest.mark.backends("sqlite")`` limits a test to what it is about.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import faceledger
from faceledger.config import DATABASE_URL_ENV
from faceledger.service import FaceService
from faceledger.service.data_directory import DATABASE_RECORD, DataDirectory
from faceledger.store import open_store, without_password
from faceledger.store.sql.database import Connection

from postgres import PostgreSQLServer

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = Path(os.environ.get("FACELEDGER_TEST_DATA", PROJECT_ROOT.parent / "shared" / "data"))
BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not {"tmp_path", "tmp_path_factory"} & set(metafunc.fixturenames):
        return
    marker = metafunc.definition.get_closest_marker("backends")
    backends = marker.args if marker else BACKENDS
    metafunc.parametrize("store_backend", backends, indirect=True, scope="session")


@pytest.fixture(scope="session")
def store_backend(request: pytest.FixtureRequest) -> str:
    """Where new data directories keep their stores: 'sqlite' or 'postgresql'."""
    return getattr(request, "param", "sqlite")


def _new_data_directories_in_own_database(request: pytest.FixtureRequest, backend: str) -> Iterator[None]:
    if backend != "postgresql":
        yield
        return
    server = request.getfixturevalue("postgresql_server")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DATABASE_URL_ENV, server.new_database())
        yield


@pytest.fixture
def new_store(
    request: pytest.FixtureRequest, store_backend: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], None]:
    """Call before making a second data directory in one test: it gets a store of its own (on
    PostgreSQL, a new database; SQLite stores are files in their directories anyway)."""

    def renew() -> None:
        if store_backend == "postgresql":
            monkeypatch.setenv(DATABASE_URL_ENV, request.getfixturevalue("postgresql_server").new_database())

    return renew


@pytest.fixture
def copy_data_directory(request: pytest.FixtureRequest) -> Callable[[Path, Path], Path]:
    """A copy of a closed data directory, store included (an SQLite file is copied with the
    directory; a PostgreSQL database is copied into a new one, which the copy records)."""

    def copy(source: Path, target: Path) -> Path:
        shutil.copytree(source, target)
        record = target / DATABASE_RECORD
        if record.exists():
            server = request.getfixturevalue("postgresql_server")
            record.write_text(without_password(server.copy_database(record.read_text().strip())) + "\n")
        return target

    return copy


@pytest.fixture(scope="session", autouse=True)
def _session_database(request: pytest.FixtureRequest, store_backend: str) -> Iterator[None]:
    yield from _new_data_directories_in_own_database(request, store_backend)


@pytest.fixture(scope="module", autouse=True)
def _module_database(request: pytest.FixtureRequest, store_backend: str) -> Iterator[None]:
    yield from _new_data_directories_in_own_database(request, store_backend)


@pytest.fixture(autouse=True)
def _test_database(request: pytest.FixtureRequest, store_backend: str) -> Iterator[None]:
    yield from _new_data_directories_in_own_database(request, store_backend)


def data_path(*parts: str) -> Path:
    """A path inside the shared data set; fails in CI and skips elsewhere when it is missing."""
    path = DATA_ROOT.joinpath(*parts)
    if not path.exists():
        message = f"test data missing: {path} (set FACELEDGER_TEST_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@contextmanager
def database_beneath(data_dir: Path) -> Iterator[Connection]:
    """The data directory's database as an attacker holding it sees it (or a test looking at
    what it holds): a connection in autocommit mode with ``?`` placeholders, whichever engine."""
    directory = DataDirectory(data_dir)
    store = open_store(directory.store_location(None, os.environ.get(DATABASE_URL_ENV)))
    try:
        yield store.database.connection()
    finally:
        store.close()
        directory.close()


def stored_bytes(data_dir: Path) -> bytes:
    """Every byte the data directory's store has on disk: its SQLite file and write-ahead log,
    or its PostgreSQL database's folder and the server's WAL (after a checkpoint)."""
    directory = DataDirectory(data_dir)
    location = directory.store_location(None, os.environ.get(DATABASE_URL_ENV))
    directory.close()
    if isinstance(location, Path):
        files = sorted(data_dir.glob(location.name + "*"))
    else:
        import psycopg

        with psycopg.connect(location, autocommit=True) as db:
            db.execute("CHECKPOINT")
            folder = Path(db.execute("SHOW data_directory").fetchone()[0])
            oid = db.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
        files = [f for f in [*(folder / "base" / str(oid)).iterdir(), *(folder / "pg_wal").iterdir()] if f.is_file()]
    return b"".join(f.read_bytes() for f in files)


def image_bytes(*parts: str) -> bytes:
    return data_path(*parts).read_bytes()


def interrupt_index_faces_on_call(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Make ``FaceService.index_image`` (IndexFaces for bulk indexing) raise KeyboardInterrupt
    (Ctrl-C) on its ``call``-th call;
    ``monkeypatch.undo()`` restores it."""
    real_index_image = FaceService.index_image
    calls = {"n": 0}

    def interrupted(self, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real_index_image(self, **kwargs)

    monkeypatch.setattr(FaceService, "index_image", interrupted)


@pytest.fixture(scope="session")
def postgresql_server(tmp_path_factory: pytest.TempPathFactory) -> PostgreSQLServer:
    server = PostgreSQLServer(tmp_path_factory.mktemp("postgresql"))
    yield server
    server.close()


@pytest.fixture
def service(tmp_path: Path) -> FaceService:
    with faceledger.open(tmp_path / "data") as opened:
        yield opened


FACEREC_PEOPLE = ("alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie")


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory: pytest.TempPathFactory, store_backend: str) -> Path:
    """A data directory with collection 'family' holding the facerec_examples gallery, one
    image per file, ExternalImageId = person's name. Built once; tests must not change it."""
    data_dir = tmp_path_factory.mktemp("family")
    with faceledger.open(data_dir) as opened:
        opened.create_collection(collection_id="family")
        for person in FACEREC_PEOPLE:
            for path in sorted(data_path("facerec_examples", person).iterdir()):
                opened.index_faces(collection_id="family", image=path.read_bytes(), external_image_id=person)
    return data_dir


@pytest.fixture
def family(family_dir: Path) -> FaceService:
    with faceledger.open(family_dir) as opened:
        yield opened
