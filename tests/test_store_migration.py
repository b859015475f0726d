"""``faceledger migrate --to``: an embedded (SQLite) data directory moved into a real PostgreSQL,
everything kept (templates still sealed, the ledger's chain), verified, resumable, refused where
it would lose or mix data."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import faceledger
from faceledger.cli.main import app
from faceledger.config import SQLITE_FILE
from faceledger.errors import ConflictException
from faceledger.service import store_migration
from faceledger.service.data_directory import DATABASE_RECORD
from faceledger.store import without_password

from conftest import image_bytes
from postgres import PostgreSQLServer

# the source is an embedded directory; the target, a database of the tests' PostgreSQL
pytestmark = pytest.mark.backends("sqlite")

PHOTOS = [("obama", "obama.jpg"), ("obama", "obama2.jpg"), ("biden", "biden.jpg"), ("biden", "biden2.jpg")]
PROBE = image_bytes("facerec_examples", "_test_unlabeled", "obama1.jpg")


def _fill(data: Path) -> dict:
    """A data directory using most of what a store holds; what it should still answer after."""
    with faceledger.open(data) as service:
        service.create_collection(collection_id="c", tags={"team": "archive"})
        faces = [
            service.index_faces(
                collection_id="c", image=image_bytes("facerec_examples", *photo), external_image_id=photo[0]
            )["FaceRecords"][0]["Face"]["FaceId"]
            for photo in PHOTOS
        ]
        service.create_user(collection_id="c", user_id="barack")
        service.associate_faces(collection_id="c", user_id="barack", face_ids=faces[:2])
        service.record_consent(
            collection_id="c", external_image_id="obama", basis="explicit consent", reference="form 1"
        )
        service.update_collection_policy(collection_id="c", review_required=True, retention_days=365)
        searched = service.search_faces_by_image(collection_id="c", image=PROBE)
        key, secret = service.access.create_key("searcher", ["c"])
        service.ledger.sign_head()
        return {
            "faces": sorted(faces),
            "matches": [(m["Face"]["FaceId"], m["Similarity"]) for m in searched["FaceMatches"]],
            "case": searched["FaceledgerReview"]["CaseId"],
            "key": (key.access_key_id, secret),
            "entries": len(list(service.ledger.entries())),
        }


def _migrate(data: Path, url: str, *options: str):
    return CliRunner().invoke(app, ["--data-dir", str(data), "migrate", "--to", url, *options])


def test_an_embedded_directory_moves_to_postgresql_with_everything_it_held(
    tmp_path: Path, postgresql_server: PostgreSQLServer
) -> None:
    data, url = tmp_path / "data", postgresql_server.new_database()
    before = _fill(data)
    moved = _migrate(data, url)
    assert moved.exit_code == 0, moved.output
    said = " ".join(moved.stdout.split())
    assert "Copied and verified (row counts, ledger chain and head); this data directory now uses" in said
    assert (data / DATABASE_RECORD).read_text().strip() == without_password(url)
    assert not list(data.glob(SQLITE_FILE + "*"))  # nothing of the store is left behind in SQLite
    with faceledger.open(data) as service:  # the directory now finds its store in PostgreSQL
        assert "PostgreSQL" in service.store.describe()
        listed = service.list_faces(collection_id="c")["Faces"]
        assert sorted(f["FaceId"] for f in listed) == before["faces"]
        searched = service.search_faces_by_image(collection_id="c", image=PROBE)
        assert [(m["Face"]["FaceId"], m["Similarity"]) for m in searched["FaceMatches"]] == before["matches"]
        assert service.list_users(collection_id="c")["Users"][0]["UserId"] == "barack"
        assert service.list_tags_for_resource(
            resource_arn=service.describe_collection(collection_id="c")["CollectionARN"]
        )["Tags"] == {"team": "archive"}
        policy = service.get_collection_policy(collection_id="c")
        assert policy["ReviewRequired"] and policy["RetentionDays"] == 365
        assert [c["Status"] for c in service.list_consents(collection_id="c")["Consents"]] == ["ACTIVE"]
        assert service.get_review_case(case_id=before["case"])["CaseId"] == before["case"]
        assert service.access.verify(*before["key"]).access_key_id == before["key"][0]
        entries = list(service.ledger.entries())
        assert entries[before["entries"]].operation == "MigrateStore"  # every entry before it, and it
        assert service.ledger.verify() == []
        # new rows continue after the copied ones
        added = service.index_faces(
            collection_id="c", image=image_bytes("facerec_examples", "kit_harington", "john1.jpeg")
        )
        assert added["FaceRecords"]
    verified = CliRunner().invoke(app, ["--data-dir", str(data), "audit", "verify"])
    assert verified.exit_code == 0, verified.output


def test_an_interrupted_migration_changes_nothing_and_resumes(
    tmp_path: Path, postgresql_server: PostgreSQLServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, url = tmp_path / "data", postgresql_server.new_database()
    before = _fill(data)
    real_copy = store_migration.copy_store
    monkeypatch.setattr("faceledger.store.sql.copy.COPY_BATCH", 2)

    def interrupted(source, target, progress=None):
        def on_batch(table: str, rows: int) -> None:
            if table == "faces" and rows >= 2:
                raise KeyboardInterrupt

        real_copy(source, target, on_batch)

    monkeypatch.setattr(store_migration, "copy_store", interrupted)
    cut = _migrate(data, url)
    assert cut.exit_code == 130, cut.output
    assert not (data / DATABASE_RECORD).exists() and (data / SQLITE_FILE).exists()
    with faceledger.open(data) as service:  # still the embedded store, whole
        assert len(service.list_faces(collection_id="c")["Faces"]) == len(before["faces"])
    monkeypatch.setattr(store_migration, "copy_store", real_copy)
    resumed = _migrate(data, url, "--keep-sqlite")
    assert resumed.exit_code == 0, resumed.output
    kept = data / (SQLITE_FILE + store_migration.KEPT_SQLITE_SUFFIX)
    assert kept.exists() and stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert "erasures made from now on do not reach it" in " ".join(resumed.stdout.split())
    with faceledger.open(data) as service:
        assert sorted(f["FaceId"] for f in service.list_faces(collection_id="c")["Faces"]) == before["faces"]
        # both attempts are in the ledger, which verifies
        operations = [e.operation for e in service.ledger.entries()]
        assert operations[before["entries"] :][:3] == ["MigrateStore", "ListFaces", "MigrateStore"]
        assert service.ledger.verify() == []


def test_a_migration_is_refused_where_it_would_lose_or_mix_data(
    tmp_path: Path, postgresql_server: PostgreSQLServer
) -> None:
    data = tmp_path / "data"
    _fill(data)
    other = tmp_path / "other"  # another store, already in PostgreSQL
    occupied = postgresql_server.new_database()
    with faceledger.open(other, database_url=occupied) as service:
        service.create_collection(collection_id="theirs")
    into_occupied = _migrate(data, occupied)
    assert into_occupied.exit_code == 5 and "holds another store" in " ".join(into_occupied.stderr.split())
    not_postgresql = _migrate(data, str(tmp_path / "copy.sqlite3"))
    assert not_postgresql.exit_code == 2 and "postgresql://" in not_postgresql.stderr
    into_itself = _migrate(other, occupied)
    assert into_itself.exit_code == 2 and "already" in into_itself.stderr
    target = postgresql_server.new_database()
    with faceledger.open(data) as running:  # as a server would hold it
        busy = _migrate(data, target)
        assert busy.exit_code == 5 and "stop it first" in " ".join(busy.stderr.split())
        assert running.list_collections()["CollectionIds"] == ["c"]
    assert not (data / DATABASE_RECORD).exists()
    started = time.monotonic()
    assert _migrate(data, target).exit_code == 0 and time.monotonic() - started < 60


def test_a_moved_service_refuses_further_operations(tmp_path: Path, postgresql_server: PostgreSQLServer) -> None:
    data = tmp_path / "data"
    with faceledger.open(data) as service:
        service.create_collection(collection_id="c")
        service.migrate_store(to=postgresql_server.new_database())
        with pytest.raises(ConflictException, match="open the directory again"):
            service.list_collections()


def test_a_resumed_migration_is_refused_once_the_store_changed_and_ids_are_never_reused(
    tmp_path: Path, postgresql_server: PostgreSQLServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, url = tmp_path / "data", postgresql_server.new_database()
    before = _fill(data)
    with faceledger.open(data) as service:  # the newest face goes: its index id is never given again
        newest_seq, newest = service.store.list_faces("c")[-1]
        service.delete_faces(collection_id="c", face_ids=[newest.face_id])
    real_copy = store_migration.copy_store

    def interrupted(source, target, progress=None):
        def on_batch(table: str, rows: int) -> None:
            if table == "faces":
                raise KeyboardInterrupt

        real_copy(source, target, on_batch)

    monkeypatch.setattr(store_migration, "copy_store", interrupted)
    assert _migrate(data, url).exit_code == 130
    monkeypatch.setattr(store_migration, "copy_store", real_copy)
    with faceledger.open(data) as service:  # meanwhile an erasure: rows already copied are stale
        service.delete_faces(collection_id="c", face_ids=[before["faces"][0]])
    stale = _migrate(data, url)
    assert stale.exit_code == 5 and "changed since the interrupted migration" in " ".join(stale.stderr.split())
    assert not (data / DATABASE_RECORD).exists()
    fresh = postgresql_server.new_database()
    with faceledger.open(tmp_path / "node", database_url=fresh):  # a node opened it: its own keys
        pass
    opened = _migrate(data, fresh)
    assert opened.exit_code == 5 and "opened with other keys" in " ".join(opened.stderr.split())
    assert _migrate(data, postgresql_server.new_database()).exit_code == 0
    with faceledger.open(data) as service:
        added = service.index_faces(
            collection_id="c", image=image_bytes("facerec_examples", "kit_harington", "john1.jpeg")
        )
        seq, _ = service.store.get_face("c", added["FaceRecords"][0]["Face"]["FaceId"])
        assert seq > newest_seq
