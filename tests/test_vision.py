"""The face engine on real photos: detection counts, landmarks, quality, embeddings, and the
face-model interface (another model runs in the same pipeline)."""

from __future__ import annotations

import csv
import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from faceledger.vision import BoundingBox, DlibResNetModel, Face, FaceAnalyzer, Landmarks, read_image_file
from faceledger.vision.blazeface import BlazeFaceDetector
from faceledger.vision.calibration import ThresholdRow, ThresholdTable, safe_search_threshold
from faceledger.vision.crop import face_crop
from faceledger.vision.detect import HogFaceDetector
from faceledger.vision.quality import assess_quality
from faceledger.vision.similarity import SimilarityScale
from faceledger.vision.tracking import FaceTracker

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


@pytest.mark.parametrize("name", ["facerec_two_people.jpg", "facerec_kit_with_rose.jpg", "deepface_couple.jpg"])
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
    portraits = [
        p for p in sorted(data_path("facerec_examples").glob("*/*.jp*g")) if p.parent.name != "_test_unlabeled"
    ]
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
        b = min(
            mirrored, key=lambda f: abs(width - (f.box.left + f.box.width / 2) - centre) + abs(f.box.top - a.box.top)
        )
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
    similarity = analyzer.model.similarity
    correct = sum(
        (similarity.between(embeddings[p["file_x"]], embeddings[p["file_y"]]) >= 80.0) == (p["Decision"] == "Yes")
        for p in pairs
    )
    assert correct / len(pairs) >= 0.99


def test_the_dlib_model_aligns_embeds_and_says_what_its_scores_mean(analyzer: FaceAnalyzer) -> None:
    model = DlibResNetModel()
    pixels = read_image_file(data_path("facerec_examples", "biden", "biden.jpg")).pixels
    face = analyzer.analyze(pixels)[0]
    chip = model.align(pixels, face)
    assert chip.shape == (model.chip_size, model.chip_size, 3) == (150, 150, 3) and chip.dtype == np.uint8
    np.testing.assert_array_equal(chip, face.chip)
    templates = model.embed([chip, chip[:, ::-1]])
    assert templates.shape == (2, model.dimension) == (2, 128) and templates.dtype == np.float32
    np.testing.assert_array_equal(templates[0], face.embedding)
    assert np.abs(templates[0] - templates[1]).max() < 1e-5  # flip-averaged: a mirror has the same template
    assert (model.name, model.version) == ("dlib-resnet-v1", "dlib-resnet-v1+flip")
    assert analyzer.model_version == model.version
    assert DlibResNetModel(flip=False).version == "dlib-resnet-v1"

    scale = model.similarity
    assert scale.from_distance(0.6) == pytest.approx(80.0) and scale.from_distance(0.0) == 100.0
    assert scale.from_distance(1.35) == 0.0 and scale.max_squared_distance(80.0) == pytest.approx(0.36)
    assert scale.between(templates[0], templates[0]) == 100.0
    assert safe_search_threshold(model.threshold_table()) == 88.5
    # worker processes receive the model itself
    assert pickle.loads(pickle.dumps(DlibResNetModel(threads=1))) == DlibResNetModel(threads=1)
    with pytest.raises(ValueError):
        DlibResNetModel(runtime="cuda")  # type: ignore[arg-type]


@dataclass(frozen=True)
class BoxHistogramModel:
    """A stand-in face model with nothing of dlib's: its chip is the detector's box resized to 64
    pixels, its 'embedding' the mean colour of a 4x4 grid of the central region, 48 floats."""

    name = "box-histogram"
    version = "box-histogram-v0"
    chip_size = 64
    dimension = 48
    similarity = SimilarityScale(reference_distance=20.0, reference_similarity=70.0)

    def align(self, pixels: np.ndarray, face: Face) -> np.ndarray:
        box = face.box
        crop = Image.fromarray(pixels).crop((box.left, box.top, box.left + box.width, box.top + box.height))
        return np.asarray(crop.resize((self.chip_size, self.chip_size)))

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        cells = [chip[8:56, 8:56].reshape(4, 12, 4, 12, 3).mean(axis=(1, 3)).ravel() for chip in chips]
        return np.asarray(cells, dtype=np.float32).reshape(len(chips), self.dimension)

    def threshold_table(self) -> ThresholdTable:
        row = ThresholdRow(70.0, 1e-5, 0.0, 5e-5, 1, 0.1, 0.09, 0.11, 100)
        return ThresholdTable("made up", 1000, 100_000, (row,))


def test_another_face_model_runs_the_whole_pipeline_and_touches_nothing_else() -> None:
    """detect -> landmarks -> align -> quality -> embed with a model of another chip size and
    dimension: nothing in the pipeline assumes dlib's 150-pixel chip or 128 floats."""
    model = BoxHistogramModel()
    analyzer = FaceAnalyzer(model=model)
    pixels = read_image_file(data_path("detection_multi", "images", "facenetpt_multiface.jpg")).pixels
    faces = analyzer.analyze(pixels)
    assert len(faces) == 6 and analyzer.model_version == "box-histogram-v0"
    for face in faces:
        assert face.landmarks is not None and face.chip.shape == (64, 64, 3)
        assert 0 <= face.quality.sharpness <= 100 and 0 < face.quality.brightness < 100
        assert face.embedding.shape == (48,) and face.embedding.dtype == np.float32
    assert model.similarity.between(faces[0].embedding, faces[0].embedding) == 100.0
    assert safe_search_threshold(model.threshold_table()) == 70.0


@pytest.mark.parametrize("size", [64, 112, 150])
def test_quality_reads_the_central_three_fifths_of_any_chip(size: int) -> None:
    """A chip white in its central region (pixels 30-120 of 150) and black around it."""
    points = ((70.0, 60.0), (60.0, 60.0), (30.0, 60.0), (40.0, 60.0), (50.0, 80.0))
    face = Face(box=BoundingBox(20, 40, 60, 60), detector_score=1.0, confidence=99.0, landmarks=Landmarks(points))
    chip = np.zeros((size, size, 3), np.uint8)
    margin = size // 5
    chip[margin : size - margin, margin : size - margin] = 255
    quality = assess_quality(face, chip)
    assert quality.brightness == pytest.approx(100.0) and quality.sharpness == 0.0
    assert quality.face_size == 60.0


def test_quality_does_not_depend_on_the_face_model() -> None:
    """QualityFilter's bars were set on dlib's 150-pixel chip: another model's chip (here 64
    pixels of the box) must not change what a face's quality is."""
    pixels = read_image_file(data_path("detection_multi", "images", "facenetpt_multiface.jpg")).pixels
    dlib_faces = FaceAnalyzer().analyze(pixels, embed=False)
    other_faces = FaceAnalyzer(model=BoxHistogramModel()).analyze(pixels, embed=False)
    assert [f.quality for f in other_faces] == [f.quality for f in dlib_faces]
    assert other_faces[0].chip.shape == (64, 64, 3)


def test_a_face_crop_is_a_small_jpeg_around_the_box_even_at_the_frame_edge() -> None:
    image = read_image_file(data_path("facerec_examples", "obama", "obama.jpg"))
    (face,) = FaceAnalyzer().analyze_image(image).faces
    with Image.open(io.BytesIO(face.crop)) as crop:  # made with the analysis, for review
        assert crop.format == "JPEG" and max(crop.size) == 160 and abs(crop.size[0] - crop.size[1]) <= 1
    for box in (BoundingBox(-50, -50, 120, 120), BoundingBox(image.width + 10, 5, 40, 40)):  # cut, or outside
        with Image.open(io.BytesIO(face_crop(image.pixels, box))) as crop:
            assert crop.format == "JPEG" and 1 <= max(crop.size) <= 160


def test_a_face_keeps_its_track_while_it_moves_and_a_new_one_after_a_gap() -> None:
    def face(left: float, top: float) -> Face:
        return Face(BoundingBox(left, top, 100, 100), 1.0, 99.0)

    tracker = FaceTracker(min_overlap=0.3, max_gap_ms=1000)
    first = tracker.update(0, [face(0, 0), face(500, 0)])
    moved = tracker.update(200, [face(520, 10), face(15, 5)])  # both moved a little, listed the other way
    assert [t.index for t, _ in first] == [0, 1] and [t.index for t, _ in moved] == [1, 0]
    assert [t.index for t, _ in tracker.update(400, [face(300, 300)])] == [2]  # nobody was there: someone new
    assert [t.index for t, _ in tracker.update(2000, [face(15, 5)])] == [3]  # gone over a second: a new person
    assert tracker.people == 4
