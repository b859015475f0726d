"""Bulk indexing with worker processes gives what one process gives, in file order, and an
interruption keeps only whole images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import faceledger
from faceledger.service import Outcome, find_image_files, index_files

from conftest import data_path, interrupt_index_faces_on_call


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos (one to six faces each), a corrupt JPEG and a text file named .png."""
    root = tmp_path_factory.mktemp("photos")
    shutil.copytree(data_path("facerec_examples"), root / "facerec")
    for name in ("facenetpt_multiface.jpg", "deepface_couple.jpg"):
        shutil.copy(data_path("detection_multi", "images", name), root / name)
    (root / "broken.jpg").write_bytes(data_path("facerec_examples", "obama", "obama.jpg").read_bytes()[:600])
    (root / "fake.png").write_text("not an image")
    return root


def index_all(data_dir: Path, root: Path, workers: int) -> tuple[list, dict[tuple, np.ndarray]]:
    """Outcomes, and each stored embedding keyed by (image file, face box)."""
    with faceledger.open(data_dir) as service:
        service.create_collection(collection_id="c")
        results = list(index_files(service, "c", root, find_image_files(root), workers=workers))
        faces = [face for _, face in service.store.list_faces("c", limit=4096)]
    return results, {
        (f.external_image_id, tuple(sorted(f.bounding_box.items()))): service.templates.embedding(f) for f in faces
    }


def test_workers_give_the_same_outcomes_and_faces_in_file_order(tmp_path: Path, folder: Path) -> None:
    alone, alone_faces = index_all(tmp_path / "one", folder, workers=1)
    parallel, parallel_faces = index_all(tmp_path / "two", folder, workers=2)
    summary = [(r.path, r.outcome, r.faces_indexed, r.faces_unindexed) for r in alone]
    assert [(r.path, r.outcome, r.faces_indexed, r.faces_unindexed) for r in parallel] == summary
    assert [r.path for r in parallel] == find_image_files(folder)
    outcomes = {r.path.name: r.outcome for r in parallel}
    assert outcomes["broken.jpg"] is Outcome.UNREADABLE and outcomes["fake.png"] is Outcome.UNREADABLE
    assert outcomes["facenetpt_multiface.jpg"] is Outcome.INDEXED
    assert sum(r.faces_indexed for r in parallel) >= 20
    assert parallel_faces.keys() == alone_faces.keys()
    assert len(alone_faces) == sum(r.faces_indexed for r in alone)
    for key, embedding in alone_faces.items():  # batched across images or not, the same templates
        assert np.abs(parallel_faces[key] - embedding).max() < 1e-5


def test_interrupted_parallel_run_keeps_whole_images_and_resumes(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = find_image_files(folder)
    with faceledger.open(tmp_path / "data") as service:
        service.create_collection(collection_id="c")
        interrupt_index_faces_on_call(monkeypatch, 5)
        done = []
        with pytest.raises(KeyboardInterrupt):
            for result in index_files(service, "c", folder, files, workers=2):
                done.append(result)
        monkeypatch.undo()
        kept = service.describe_collection(collection_id="c")["FaceCount"]
        assert kept == sum(r.faces_indexed for r in done)

        rest = list(index_files(service, "c", folder, files, workers=2))
        assert sum(r.outcome is Outcome.SKIPPED for r in rest) == sum(
            r.outcome in (Outcome.INDEXED, Outcome.NO_FACE) for r in done
        )
        expected, _ = index_all(tmp_path / "fresh", folder, workers=1)
        total = service.describe_collection(collection_id="c")["FaceCount"]
        assert total == sum(r.faces_indexed for r in expected)  # every face exactly once


@pytest.mark.parametrize("workers", [1, 2])
def test_files_over_the_limits_are_reported_not_indexed(tmp_path: Path, folder: Path, workers: int) -> None:
    from faceledger.config import ImageLimits

    limits = ImageLimits(max_bytes=900_000, max_pixels=2_500_000)
    with faceledger.open(tmp_path / "data", image_limits=limits) as service:
        service.create_collection(collection_id="c")
        results = {r.path.name: r for r in index_files(service, "c", folder, find_image_files(folder), workers=workers)}
        stored = {face.external_image_id for _, face in service.store.list_faces("c", limit=4096)}
    too_big = results["deepface_couple.jpg"]  # 944,694 bytes: refused before it is read
    assert too_big.outcome is Outcome.UNREADABLE and "over the limit" in (too_big.error or "")
    too_many_pixels = results["obama_and_biden.jpg"]  # 2000x1428: refused by the decoder's header check
    assert too_many_pixels.outcome is Outcome.UNREADABLE and too_many_pixels.error
    assert results["biden.jpg"].outcome is Outcome.INDEXED
    assert not any("deepface_couple" in name or "obama_and_biden" in name for name in stored)
