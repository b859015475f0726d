"""Shared fixtures. Real face data comes from ``$FACELEDGER_TEST_DATA`` (default: the
``../shared/data`` folder beside the project). Outside CI a missing data set skips the tests that
need it; in CI (``CI=true``) it is a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import faceledger
from faceledger.service import FaceService

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = Path(os.environ.get("FACELEDGER_TEST_DATA", PROJECT_ROOT.parent / "shared" / "data"))


def data_path(*parts: str) -> Path:
    """A path inside the shared data set; fails in CI and skips elsewhere when it is missing."""
    path = DATA_ROOT.joinpath(*parts)
    if not path.exists():
        message = f"test data missing: {path} (set FACELEDGER_TEST_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


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


@pytest.fixture
def service(tmp_path: Path) -> FaceService:
    with faceledger.open(tmp_path / "data") as opened:
        yield opened


FACEREC_PEOPLE = ("alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie")


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
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
