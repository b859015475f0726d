"""The data directory: the owner's alone (0700, files 0600), held open by every process that
uses it, so that the template key cannot be rotated under a running server; `faceledger check`
finds what is wrong with it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import faceledger
from faceledger.keys.templates import TemplateCipher
from faceledger.service.data_directory import DATABASE_RECORD

from api_server import free_loopback_port
from conftest import database_beneath, image_bytes


def _faceledger(*args: str, data: Path) -> subprocess.CompletedProcess:
    script = shutil.which("faceledger") or pytest.fail("the faceledger console script is not on PATH")
    return subprocess.run([script, "--data-dir", str(data), *args], capture_output=True, text=True, timeout=120)


def _index_one(data: Path) -> str:
    with faceledger.open(data) as service:
        service.create_collection(collection_id="c")
        record = service.index_faces(collection_id="c", image=image_bytes("facerec_examples", "obama", "obama.jpg"))
    return record["FaceRecords"][0]["Face"]["FaceId"]


def test_the_template_key_is_not_rotated_under_a_running_server(tmp_path: Path) -> None:
    """It was: the server kept sealing new faces with the old key, and after its restart the
    collection answered 500 'does not decrypt' with the old key gone."""
    _index_one(tmp_path)
    port = free_loopback_port()
    script = shutil.which("faceledger")
    server = subprocess.Popen(
        [script, "--data-dir", str(tmp_path), "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "serving" not in (server.stdout.readline() or "") and time.monotonic() < deadline:
            pass
        refused = _faceledger("keys", "rotate-template-key", data=tmp_path)
        assert refused.returncode == 5, refused.stdout + refused.stderr
        assert "open in another process" in refused.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    with faceledger.open(tmp_path) as service:
        entry = list(service.ledger.entries())[-1]
        assert (entry.operation, entry.outcome, entry.error) == ("RotateTemplateKey", "error", "ConflictException")
    rotated = _faceledger("keys", "rotate-template-key", data=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    checked = _faceledger("check", "--json", data=tmp_path)
    assert checked.returncode == 0 and json.loads(checked.stdout)["Problems"] == []


def test_check_finds_templates_that_no_longer_decrypt(tmp_path: Path) -> None:
    face_id = _index_one(tmp_path)
    with faceledger.open(tmp_path) as service:  # what a server sealing with a lost key left behind
        _, record = service.store.get_face("c", face_id)
        stray = TemplateCipher(os.urandom(32)).seal(face_id, service.templates.embedding(record))
        service.store.database.connection().execute(
            "UPDATE faces SET embedding = ? WHERE face_id = ?", (stray, face_id)
        )
    checked = _faceledger("check", data=tmp_path)
    assert checked.returncode == 8
    assert "1 face template(s) in collection 'c' do not decrypt" in checked.stderr + checked.stdout


def test_the_data_directory_and_its_files_are_the_owners_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _index_one(data)
    with faceledger.open(data) as service:
        service.search_faces_by_image(collection_id="c", image=image_bytes("facerec_examples", "obama", "obama2.jpg"))
    assert data.stat().st_mode & 0o777 == 0o700
    loose = [p for p in data.rglob("*") if p.is_file() and p.stat().st_mode & 0o077]
    assert loose == []
    exported = tmp_path / "ledger.jsonl"
    assert _faceledger("audit", "export", "--out", str(exported), data=data).returncode == 0
    assert exported.stat().st_mode & 0o077 == 0
    # the store's file: the SQLite database, or the record of which PostgreSQL database it is
    store_file = next(name for name in ("faceledger.sqlite3", DATABASE_RECORD) if (data / name).exists())
    os.chmod(data / store_file, 0o644)
    checked = _faceledger("check", data=data)
    assert checked.returncode == 8 and store_file in checked.stderr + checked.stdout


@pytest.mark.backends("sqlite")  # SQLite's read-only check at open; PostgreSQL has no such file mode
def test_opening_does_not_wait_for_or_refuse_a_database_another_process_is_writing(tmp_path: Path) -> None:
    """The store checks at open that it may write (a read-only database is refused); a database
    in another writer's transaction is writable, and opening neither waits for it nor refuses."""
    import sqlite3
    import time

    import faceledger

    with faceledger.open(tmp_path) as service:
        service.create_collection(collection_id="c")
    writer = sqlite3.connect(tmp_path / "faceledger.sqlite3", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # as a server in the middle of a write would
    try:
        started = time.monotonic()
        service = faceledger.open(tmp_path)  # every operation writes its ledger entry: none is run here
        assert time.monotonic() - started < 10
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    with service:
        assert service.list_collections()["CollectionIds"] == ["c"]


def test_processes_opening_a_new_data_directory_at_once_migrate_it_once(tmp_path: Path, new_store) -> None:
    """Each migration re-reads the schema version under the write lock: four processes opening
    one new database together all open it (one of them used to fail with 'table already exists')."""
    import sys

    script = "import sys, faceledger; faceledger.open(sys.argv[1]).close()"
    for round_ in range(3):
        folder = tmp_path / f"d{round_}"
        new_store()
        started = [
            subprocess.Popen([sys.executable, "-c", script, str(folder)], stderr=subprocess.PIPE) for _ in range(4)
        ]
        results = [(p.wait(timeout=120), p.stderr.read().decode()) for p in started]
        assert all(code == 0 for code, _ in results), [err[-300:] for code, err in results if code]


def _open_sqlite_at(path: str, start: float) -> str | None:
    from faceledger.store.sqlite.connection import SQLiteDatabase

    while time.time() < start:  # all at one instant, where the race is
        pass
    try:
        SQLiteDatabase(path).close()
    except Exception as error:  # noqa: BLE001 - the test reports whichever error it was
        return repr(error)
    return None


@pytest.mark.backends("sqlite")
def test_processes_turning_a_new_sqlite_file_to_wal_at_once_all_open_it(tmp_path: Path) -> None:
    """PRAGMA journal_mode = WAL on a new file reads its header and then upgrades to a write;
    SQLite refuses one of two such upgrades at once, without waiting ('database is locked'), and
    CI saw an open of a new data directory fail so."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(6) as pool:
        for round_ in range(40):
            path = tmp_path / f"{round_}.sqlite3"
            path.touch()
            start = time.time() + 0.05
            errors = [error for error in pool.starmap(_open_sqlite_at, [(str(path), start)] * 6) if error]
            assert errors == [], round_


def test_a_database_busy_past_the_timeout_is_a_one_line_try_again(
    tmp_path: Path, monkeypatch, store_backend: str
) -> None:
    from typer.testing import CliRunner

    import faceledger
    import faceledger.store.postgresql.connection as postgresql
    import faceledger.store.sqlite.connection as sqlite
    from faceledger.cli.main import app

    with faceledger.open(tmp_path) as service:
        service.create_collection(collection_id="c")
    # instead of waiting 30 s
    monkeypatch.setattr(sqlite, "BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(postgresql, "LOCK_TIMEOUT_MS", 200)
    with database_beneath(tmp_path) as writer:
        # another process in the middle of a write holds the writer lock
        if store_backend == "sqlite":
            writer.execute("BEGIN IMMEDIATE")
        else:
            writer.execute("BEGIN")
            writer.execute(f"SELECT pg_advisory_xact_lock({postgresql.WRITER_LOCK})")
        try:
            result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "collection", "list"])
        finally:
            writer.execute("ROLLBACK")
    assert result.exit_code == 75 and "ThrottlingException" in result.stderr and "try again" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
