"""Face templates are encrypted at rest, with a key kept outside the database, and rotatable."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import faceledger
from faceledger.cli.main import app
from faceledger.errors import DataDirectoryError, InternalServerError
from faceledger.keys.templates import TEMPLATE_KEY_ENV, TemplateCipher, template_key_path
from faceledger.service.data_directory import DATABASE_RECORD

from conftest import image_bytes, stored_bytes


def _index_two(data_dir: Path) -> tuple[list[str], np.ndarray]:
    with faceledger.open(data_dir) as service:
        service.create_collection(collection_id="c")
        ids = [
            service.index_faces(collection_id="c", image=image_bytes("facerec_examples", person, name))["FaceRecords"][
                0
            ]["Face"]["FaceId"]
            for person, name in (("obama", "obama.jpg"), ("biden", "biden.jpg"))
        ]
        _, record = service.store.get_face("c", ids[0])
        return ids, service.templates.embedding(record).copy()


def test_database_files_hold_no_plaintext_template(tmp_path: Path) -> None:
    ids, vector = _index_two(tmp_path)
    raw = vector.astype(np.float32).tobytes()
    stored = stored_bytes(tmp_path)
    assert len(stored) > 10_000
    for start in range(0, len(raw) - 16, 16):  # not even 4 consecutive floats of it
        assert raw[start : start + 16] not in stored
    assert (tmp_path / "template.key").stat().st_mode & 0o077 == 0
    assert (tmp_path / "template.key").read_bytes() not in stored


def test_the_database_alone_gives_no_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _index_two(tmp_path)
    stolen = tmp_path / "stolen"
    stolen.mkdir()
    for path in tmp_path.glob("faceledger.sqlite3*"):  # the database alone: its files, or its address
        (stolen / path.name).write_bytes(path.read_bytes())
    if (tmp_path / DATABASE_RECORD).exists():
        (stolen / DATABASE_RECORD).write_bytes((tmp_path / DATABASE_RECORD).read_bytes())
    with pytest.raises(DataDirectoryError, match="sealed with a template key this data directory does not hold"):
        faceledger.open(stolen)  # refused, without making a key there
    assert not template_key_path(stolen).exists()
    monkeypatch.setenv(TEMPLATE_KEY_ENV, base64.b64encode(os.urandom(32)).decode())
    with pytest.raises(InternalServerError, match="template"):
        faceledger.open(tmp_path)


def test_rotation_reencrypts_everything_and_retires_the_old_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, vector = _index_two(tmp_path)
    old_key = template_key_path(tmp_path).read_bytes()
    before = stored_bytes(tmp_path)
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "keys", "rotate-template-key"])
    assert result.exit_code == 0 and "Re-encrypted 2" in result.stdout
    assert template_key_path(tmp_path).read_bytes() != old_key
    with faceledger.open(tmp_path) as service:
        _, record = service.store.get_face("c", ids[0])
        np.testing.assert_array_equal(service.templates.embedding(record), vector)
        found = service.search_faces_by_image(
            collection_id="c", image=image_bytes("facerec_examples", "obama", "obama2.jpg")
        )
        assert [m["Face"]["FaceId"] for m in found["FaceMatches"]] == [ids[0]]
    assert before != stored_bytes(tmp_path)
    monkeypatch.setenv(TEMPLATE_KEY_ENV, base64.b64encode(old_key).decode())
    with pytest.raises(InternalServerError):
        faceledger.open(tmp_path)


def test_rotation_interrupted_after_commit_is_completed_at_next_open(tmp_path: Path) -> None:
    ids, vector = _index_two(tmp_path)
    new_key = os.urandom(32)
    pending = template_key_path(tmp_path).with_name("template.key.next")
    with faceledger.open(tmp_path) as service:
        pending.write_bytes(new_key)  # rotate_template_key's steps, up to its last one
        new = TemplateCipher(new_key)
        old = service.templates.codec
        service.store.reseal_templates(
            lambda face_id, sealed: new.seal_bytes(face_id, old.open_bytes(face_id, sealed)), new.fingerprint
        )  # ... and the process dies here
    with faceledger.open(tmp_path) as service:
        np.testing.assert_array_equal(service.templates.embedding(service.store.get_face("c", ids[0])[1]), vector)
    assert template_key_path(tmp_path).read_bytes() == new_key and not pending.exists()


def test_rotation_interrupted_before_commit_keeps_the_old_key(tmp_path: Path) -> None:
    ids, vector = _index_two(tmp_path)
    old_key = template_key_path(tmp_path).read_bytes()
    pending = template_key_path(tmp_path).with_name("template.key.next")
    pending.write_bytes(os.urandom(32))  # the process died before re-encrypting anything
    with faceledger.open(tmp_path) as service:
        np.testing.assert_array_equal(service.templates.embedding(service.store.get_face("c", ids[0])[1]), vector)
    assert template_key_path(tmp_path).read_bytes() == old_key and not pending.exists()
