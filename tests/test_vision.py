"""The face engine on real photos: detection counts, landmarks, quality, embeddings."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from faceledger.service.similarity import similarity_between
from faceledger.vision import FaceAnalyzer, read_image_file
from faceledger.vision.blazeface import BlazeFaceDetector
from faceledger.vision.detect import HogFaceDetector

from conftest import data_path


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer()


def test_finds_all_six_faces_in_the_group_photo(analyzer: FaceAnalyzer) -> None:
    image = read_image_file(data_path("detection_multi", "images", "facenetpt_multiface.jpg"))
    faces = analyzer.analyze(image.pixels, embed=False)
    assert len(faces) == 6
    for face in faces:
        assert face.confidence > 90
        box = face.box
        for x, y in face.landmarks.points:
            assert box.left - 5 <= x <= box.left + box.width + 5
            assert box.top - 5 <= y <= box.top + box.height + 5
        assert face.chip.shape == (150, 150, 3)


@pytest.mark.parametrize(
    "name", ["facerec_two_people.jpg", "facerec_kit_with_rose.jpg", "deepface_couple.jpg"]
)
def test_finds_both_faces_of_a_couple(analyzer: FaceAnalyzer, name: str) -> None:
    image = read_image_file(data_path("detection_multi", "images", name))
    assert len(analyzer.analyze(image.pixels, embed=False)) == 2


def test_small_faces_in_a_crowd_need_the_finer_scans(analyzer: FaceAnalyzer) -> None:
    image = read_image_file(data_path("detection_multi", "images", "retinaface_wider_test.jpg"))
    at_native_scale = HogFaceDetector(min_face_size=80).detect(image.pixels)
    hog_upsampled = HogFaceDetector(min_face_size=40, max_work_pixels=10**9).detect(image.pixels)
    whole_image_only = BlazeFaceDetector(min_face_size=10**4).detect(image.pixels)
    default = analyzer.detector.detect(image.pixels)
    assert len(at_native_scale) < len(hog_upsampled) <= 13
    assert len(whole_image_only) < 12 <= len(hog_upsampled) + 2 <= len(default)


def test_no_false_faces_on_portraits(analyzer: FaceAnalyzer) -> None:
    """One face per portrait: a tile edge cutting a face, or a curtain beside it, gives no box."""
    portraits = [p for p in sorted(data_path("facerec_examples").glob("*/*.jp*g")) if p.parent.name != "_test_unlabeled"]
    assert len(portraits) == 9
    for path in portraits:
        faces = analyzer.detector.detect(read_image_file(path).pixels)
        assert len(faces) == 1, path.name
        assert faces[0].confidence > 80


def test_fallback_pass_finds_a_doubtful_face_with_a_low_confidence() -> None:
    pixels = read_image_file(data_path("lfw", "George_HW_Bush", "George_HW_Bush_0002.jpg")).pixels
    assert BlazeFaceDetector(fallback_threshold=None).detect(pixels) == []
    found = BlazeFaceDetector().detect(pixels)
    # below the 73 of the detection threshold: QualityFilter AUTO (70) and up reject it
    assert len(found) == 1 and found[0].confidence < 70
    box = found[0].box
    assert abs(box.left + box.width / 2 - 125) < 25 and abs(box.top + box.height / 2 - 125) < 25


def test_missing_blazeface_weights_are_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from faceledger.errors import InternalServerError
    from faceledger.vision import blazeface

    blazeface.model_file.cache_clear()
    monkeypatch.setattr(blazeface.importlib.util, "find_spec", lambda name: None)
    try:
        with pytest.raises(InternalServerError, match="pip install --no-deps mediapipe"):
            blazeface.model_file("face_detection_full_range_sparse.tflite")
    finally:
        blazeface.model_file.cache_clear()


def test_faces_are_sorted_largest_first(analyzer: FaceAnalyzer) -> None:
    image = read_image_file(data_path("detection_multi", "images", "deepface_selfie-many-people.jpg"))
    areas = [face.box.area for face in analyzer.detector.detect(image.pixels)]
    assert areas == sorted(areas, reverse=True)


def test_quality_is_in_range_and_blur_lowers_sharpness(analyzer: FaceAnalyzer) -> None:
    from PIL import Image, ImageFilter

    image = read_image_file(data_path("facerec_examples", "obama", "obama.jpg"))
    crisp = analyzer.analyze(image.pixels, embed=False)[0].quality
    blurred_pixels = np.asarray(Image.fromarray(image.pixels).filter(ImageFilter.GaussianBlur(6)))
    blurred = analyzer.analyze(blurred_pixels, embed=False)[0].quality
    assert 0 <= blurred.sharpness < crisp.sharpness <= 100
    assert 0 <= crisp.brightness <= 100
    assert crisp.face_size > 150
    assert abs(crisp.pose.yaw) < 25 and abs(crisp.pose.roll) < 15


def test_pose_follows_a_mirrored_face(analyzer: FaceAnalyzer) -> None:
    image = read_image_file(data_path("detection_multi", "images", "facenetpt_multiface.jpg"))
    original = analyzer.analyze(image.pixels, embed=False)
    mirrored = analyzer.analyze(np.ascontiguousarray(image.pixels[:, ::-1]), embed=False)
    width = image.width
    assert len(original) == len(mirrored) == 6
    for a in original:
        centre = a.box.left + a.box.width / 2
        b = min(mirrored, key=lambda f: abs(width - (f.box.left + f.box.width / 2) - centre) + abs(f.box.top - a.box.top))
        assert a.quality.pose.roll == pytest.approx(-b.quality.pose.roll, abs=4)
        # landmarks on faces this small (40 px between the eyes) wobble by a pixel or two
        assert a.quality.pose.yaw == pytest.approx(-b.quality.pose.yaw, abs=8)


def test_embeddings_are_128_float32_and_deterministic(analyzer: FaceAnalyzer) -> None:
    image = read_image_file(data_path("facerec_examples", "biden", "biden.jpg"))
    first = analyzer.analyze(image.pixels)[0].embedding
    second = analyzer.analyze(image.pixels)[0].embedding
    assert first.shape == (128,) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)


def test_same_person_closer_than_different_people_on_deepface_pairs(analyzer: FaceAnalyzer) -> None:
    """Accuracy >= 99% on deepface's 300 labelled pairs at the default threshold (80)."""
    root = data_path("deepface_unit")
    embeddings = {}
    for path in root.glob("person_*/*.jpg"):
        faces = analyzer.analyze(read_image_file(path).pixels, limit=1)
        assert faces, f"no face found in {path.name}"
        embeddings[path.name] = faces[0].embedding
    with (root / "master.csv").open() as handle:
        pairs = list(csv.DictReader(handle))
    assert len(pairs) == 300
    correct = sum(
        (similarity_between(embeddings[p["file_x"]], embeddings[p["file_y"]]) >= 80.0) == (p["Decision"] == "Yes")
        for p in pairs
    )
    assert correct / len(pairs) >= 0.99
