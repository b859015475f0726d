"""What erasure means where the engine keeps deleted rows (PostgreSQL): the erased template's
ciphertext may remain (dead rows, WAL, replicas, backups), so faceledger counts it by the key that
sealed it, says so in ``check``, and a template key rotation (refused while other nodes run)
makes whatever remains unreadable. On SQLite nothing remains to count (tests/test_policies.py
searches its files' bytes)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import faceledger
from faceledger.cli.main import app
from faceledger.errors import ConflictException, InternalServerError
from faceledger.keys.templates import template_key_path
from faceledger.service.admin_operations import RESIDUE_DAYS

from conftest import image_bytes, stored_bytes

OBAMA = image_bytes("facerec_examples", "obama", "obama.jpg")
BIDEN = image_bytes("facerec_examples", "biden", "biden.jpg")


def _erase_one(data: Path) -> tuple[str, bytes, str]:
    """Index two faces, erase one; (its face id, its sealed template, the key's fingerprint)."""
    with faceledger.open(data) as service:
        service.create_collection(collection_id="c")
        face_id = service.index_faces(collection_id="c", image=OBAMA)["FaceRecords"][0]["Face"]["FaceId"]
        service.index_faces(collection_id="c", image=BIDEN)
        _, record = service.store.get_face("c", face_id)
        service.delete_faces(collection_id="c", face_ids=[face_id])
        return face_id, record.template, service.templates.codec.fingerprint


@pytest.mark.backends("postgresql")
def test_an_erasure_on_postgresql_is_counted_until_the_key_that_sealed_it_is_retired(tmp_path: Path) -> None:
    data = tmp_path / "data"
    face_id, sealed, fingerprint = _erase_one(data)
    # what the issue asks to state honestly: the ciphertext is still in PostgreSQL's files
    assert sealed in stored_bytes(data)
    with faceledger.open(data) as service:
        residue = service.check_data_directory()["ErasureResidue"]
        assert [(r["TemplateKey"], r["Faces"], r["RetiredAt"]) for r in residue] == [(fingerprint, 1, None)]
        old_key = template_key_path(data).read_bytes()
    checked = CliRunner().invoke(app, ["--data-dir", str(data), "check"])
    assert checked.exit_code == 0, checked.output  # within the month: pending, not yet a problem
    assert "1 erased face template(s)" in " ".join(checked.stdout.split())
    rotated = CliRunner().invoke(app, ["--data-dir", str(data), "keys", "rotate-template-key"])
    assert rotated.exit_code == 0, rotated.output
    with faceledger.open(data) as service:
        residue = service.check_data_directory()["ErasureResidue"]
        assert residue[0]["RetiredAt"] is not None and residue[0]["TemplateKey"] == fingerprint
        with pytest.raises(InternalServerError):  # what remains does not open under the key now
            service.templates.codec.open(face_id, sealed)
    assert all(old_key not in f.read_bytes() for f in data.rglob("*") if f.is_file())


@pytest.mark.backends("postgresql")
def test_residue_older_than_a_month_is_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    _erase_one(data)
    later = time.time() + (RESIDUE_DAYS + 1) * 86400
    monkeypatch.setattr("faceledger.service.admin_operations.time.time", lambda: later)
    checked = CliRunner().invoke(app, ["--data-dir", str(data), "check"])
    assert checked.exit_code == 8
    said = " ".join(checked.stderr.split())
    assert "1 face(s) erased since" in said and "rotate it" in said


@pytest.mark.backends("postgresql")
def test_the_template_key_is_not_rotated_under_another_node(tmp_path: Path) -> None:
    import shutil

    first, second = tmp_path / "first", tmp_path / "second"
    with faceledger.open(first) as service:
        service.create_collection(collection_id="c")
    second.mkdir(mode=0o700)
    for name in ("template.key", "ledger.key", "secrets.key", "database.url"):
        shutil.copy2(first / name, second / name)
    with faceledger.open(second) as other_node, faceledger.open(first) as service:
        other_node.list_collections()
        with pytest.raises(ConflictException, match="other faceledger process"):
            service.rotate_template_key()
    with faceledger.open(first) as service:  # alone now
        assert service.rotate_template_key()["Reencrypted"] == 0


@pytest.mark.backends("sqlite")
def test_sqlite_keeps_no_residue_to_count(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _erase_one(data)
    with faceledger.open(data) as service:
        assert service.check_data_directory()["ErasureResidue"] == []
