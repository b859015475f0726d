"""An operator's ONNX embedding network as the face model: a small network built here runs the
whole pipeline on a real photo; its preprocessing, pickling, version and refusals; and the
similarity-transform alignment it cuts chips with."""

from __future__ import annotations

import math
import pickle
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from faceledger.errors import InvalidParameterException
from faceledger.vision import FaceAnalyzer, read_image_file
from faceledger.vision.alignment import ARCFACE_112, fit_similarity, scaled, template_chip, warp_chip
from faceledger.vision.face import BoundingBox, Face
from faceledger.vision.landmarks import align_chip
from faceledger.vision.onnx_model import ModelFileError, OnnxFaceModel, UncalibratedModelError
from faceledger.vision.onnx_spec import OnnxModelSpec

from conftest import data_path

DIMENSION = 32


def conv_network(path: Path, *, side: int = 112, dimension: int = DIMENSION, input_dims=None) -> Path:
    """NCHW float chips -> 3x3 convolution (8 filters, stride 2) -> ReLU -> global average pool
    -> linear map to ``dimension`` values; seeded random weights."""
    rng = np.random.default_rng(7)
    weights = [
        numpy_helper.from_array(rng.normal(size=(8, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(size=8).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.normal(size=(8, dimension)).astype(np.float32), "fc_w"),
    ]
    nodes = [
        helper.make_node("Conv", ["chips", "conv_w", "conv_b"], ["c"], kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "fc_w"], ["embedding"]),
    ]
    dims = input_dims or ["batch", 3, side, side]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("chips", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dimension])],
        weights,
    )
    return _save(graph, path)


def linear_network(path: Path, side: int, dimension: int, weights: np.ndarray) -> Path:
    """NHWC float chips -> flattened -> times ``weights``: the embedding shows the exact input."""
    nodes = [
        helper.make_node("Flatten", ["chips"], ["f"]),
        helper.make_node("MatMul", ["f", "w"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("chips", TensorProto.FLOAT, ["batch", side, side, 3])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dimension])],
        [numpy_helper.from_array(weights, "w")],
    )
    return _save(graph, path)


def _save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def arcface_spec(**changes) -> OnnxModelSpec:
    values = {"name": "tiny", "input_size": 112, "dimension": DIMENSION, "mean": [127.5] * 3, "std": [128.0] * 3}
    return OnnxModelSpec(**{**values, **changes})


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return conv_network(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="module")
def model(network: Path) -> OnnxFaceModel:
    return OnnxFaceModel(network, arcface_spec())


def test_runs_the_whole_pipeline_on_a_real_photo(model: OnnxFaceModel) -> None:
    pixels = read_image_file(data_path("facerec_examples", "obama", "obama.jpg")).pixels
    faces = FaceAnalyzer(model=model).analyze(pixels)
    assert len(faces) == 1
    face = faces[0]
    assert face.chip.shape == (112, 112, 3) and face.chip.dtype == np.uint8
    assert face.quality is not None and face.quality.sharpness > 0
    assert face.embedding.shape == (DIMENSION,) and face.embedding.dtype == np.float32
    assert np.linalg.norm(face.embedding) == pytest.approx(1.0, abs=1e-5)
    assert model.similarity.between(face.embedding, face.embedding) == 100.0
    # The chip is upright and centred: the eyes, on the template, are level and symmetric.
    eye_right, eye_left = (np.array(face.landmarks.points[i : i + 2]).mean(axis=0) for i in (0, 2))
    matrix = fit_similarity(np.array(face.landmarks.points), np.array(ARCFACE_112))
    chip_eyes = np.array([eye_left, eye_right]) @ matrix[:, :2].T + matrix[:, 2]
    assert abs(chip_eyes[0, 1] - chip_eyes[1, 1]) < 3 and abs(chip_eyes.mean(axis=0)[0] - 55.7) < 3


def test_templates_are_unit_vectors_of_the_mean_of_chip_and_mirror(model: OnnxFaceModel) -> None:
    rng = np.random.default_rng(1)
    chips = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(3)]
    plain = OnnxFaceModel(model.path, model.spec, flip=False)
    one, mirrored = plain.embed(chips), plain.embed([c[:, ::-1] for c in chips])
    expected = one + mirrored
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(model.embed(chips), expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(one, axis=1), 1.0, atol=1e-6)
    assert model.embed([]).shape == (0, DIMENSION)
    with pytest.raises(ValueError):
        model.embed([np.zeros((150, 150, 3), np.uint8)])


def test_colour_order_normalisation_and_layout_reach_the_network_as_specified(tmp_path: Path) -> None:
    side, dimension = 16, 4
    weights = np.random.default_rng(2).normal(size=(side * side * 3, dimension)).astype(np.float32)
    path = linear_network(tmp_path / "linear.onnx", side, dimension, weights)
    spec = OnnxModelSpec(
        input_size=side,
        dimension=dimension,
        colour="BGR",
        mean=(10.0, 20.0, 30.0),
        std=(2.0, 4.0, 8.0),
        layout="NHWC",
        alignment="dlib-chip",
    )
    model = OnnxFaceModel(path, spec, flip=False)
    chip = np.random.default_rng(3).integers(0, 256, (side, side, 3), dtype=np.uint8)
    network_input = (chip[..., ::-1].astype(np.float32) - [10, 20, 30]) / [2, 4, 8]
    expected = network_input.reshape(1, -1) @ weights
    np.testing.assert_allclose(model.embed([chip]), expected / np.linalg.norm(expected), rtol=1e-5, atol=1e-6)


def test_a_network_of_fixed_batch_size_embeds_any_number_of_chips(tmp_path: Path) -> None:
    fixed = OnnxFaceModel(conv_network(tmp_path / "b1.onnx", input_dims=[1, 3, 112, 112]), arcface_spec(), flip=False)
    free = OnnxFaceModel(conv_network(tmp_path / "bn.onnx"), arcface_spec(), flip=False)
    chips = [np.full((112, 112, 3), value, np.uint8) for value in (0, 90, 200)]
    np.testing.assert_allclose(fixed.embed(chips), free.embed(chips), atol=1e-6)


def test_many_chips_embed_in_runs_as_one_at_a_time(model: OnnxFaceModel) -> None:
    rng = np.random.default_rng(6)
    chips = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(19)]
    together = model.embed(chips)
    np.testing.assert_allclose(together, np.concatenate([model.embed([chip]) for chip in chips]), atol=1e-6)


def _embed_in_worker(model: OnnxFaceModel) -> np.ndarray:
    return model.embed([np.full((112, 112, 3), 120, np.uint8)])


def test_the_model_is_a_picklable_value_that_loads_its_network_in_each_process(model: OnnxFaceModel) -> None:
    copy = pickle.loads(pickle.dumps(model))
    assert copy == model and copy.version == model.version
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        in_worker = pool.submit(_embed_in_worker, model).result(timeout=120)
    np.testing.assert_allclose(in_worker, _embed_in_worker(model), atol=1e-6)


def test_the_version_names_the_file_and_the_spec(model: OnnxFaceModel, network: Path, tmp_path: Path) -> None:
    import hashlib

    digest = hashlib.sha256(network.read_bytes()).hexdigest()
    assert model.sha256 == digest
    assert model.version == f"tiny-{digest[:16]}.{model.spec.digest[:8]}+flip"
    assert OnnxFaceModel(network, model.spec, flip=False).version == model.version.removesuffix("+flip")
    assert OnnxFaceModel(network, arcface_spec(colour="BGR")).version != model.version
    copied = conv_network(tmp_path / "copy.onnx")  # the same bytes elsewhere: the same version
    assert OnnxFaceModel(copied, model.spec).version == model.version
    retrained = tmp_path / "retrained.onnx"
    loaded = onnx.load(str(network))
    loaded.graph.initializer[0].raw_data = bytes(len(loaded.graph.initializer[0].raw_data))
    retrained.write_bytes(loaded.SerializeToString())
    assert OnnxFaceModel(retrained, model.spec).version != model.version


def test_a_changed_file_is_refused_where_the_network_loads(tmp_path: Path) -> None:
    path = conv_network(tmp_path / "changing.onnx")
    model = OnnxFaceModel(path, arcface_spec())
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(ModelFileError, match="changed"):
        model.embed([np.zeros((112, 112, 3), np.uint8)])


def test_no_threshold_table_ships_with_an_operator_model(model: OnnxFaceModel) -> None:
    with pytest.raises(UncalibratedModelError, match="faceledger calibrate") as refused:
        model.threshold_table()
    assert isinstance(refused.value, InvalidParameterException)


def test_similarity_is_linear_in_the_cosine_of_unit_templates() -> None:
    default = arcface_spec().similarity
    for cosine in (-1.0, -0.3, 0.0, 0.6, 0.95, 1.0):
        squared = 2 - 2 * cosine
        assert default.from_squared_distance(squared) == pytest.approx(100 * (1 + cosine) / 2)
    own = arcface_spec(reference_cosine=0.3, reference_similarity=80).similarity
    assert own.from_squared_distance(2 - 2 * 0.3) == pytest.approx(80)
    assert own.from_squared_distance(0) == 100


# ------------------------------------------------------------------------------------------
# Refusals


def test_a_truncated_file_is_refused(network: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(network.read_bytes()[: network.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="Not a valid ONNX model"):
        OnnxFaceModel(truncated, arcface_spec())


def test_a_file_that_is_not_onnx_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="Not a valid ONNX model"):
        OnnxFaceModel(data_path("facerec_examples", "obama", "obama.jpg"), arcface_spec())
    text = tmp_path / "notes.onnx"
    text.write_text("hello")
    with pytest.raises(ModelFileError):
        OnnxFaceModel(text, arcface_spec())
    with pytest.raises(ModelFileError, match="Cannot read"):
        OnnxFaceModel(tmp_path / "missing.onnx", arcface_spec())


def test_an_output_of_another_length_than_the_spec_says_is_refused(network: Path) -> None:
    with pytest.raises(ModelFileError, match="32 values per face; the spec says 128"):
        OnnxFaceModel(network, arcface_spec(dimension=128))


def test_an_input_of_another_size_or_rank_or_layout_is_refused(network: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="needs \\[batch, 3, 96, 96\\]"):
        OnnxFaceModel(network, arcface_spec(input_size=96))
    with pytest.raises(ModelFileError, match="needs \\[batch, 112, 112, 3\\]"):
        OnnxFaceModel(network, arcface_spec(layout="NHWC"))
    flat = linear_network(tmp_path / "flat.onnx", 8, 4, np.zeros((192, 4), np.float32))
    model = onnx.load(str(flat))
    model.graph.input[0].type.tensor_type.shape.dim.pop()
    flat.write_bytes(model.SerializeToString())
    with pytest.raises(ModelFileError, match="4 dimensions"):
        OnnxFaceModel(flat, OnnxModelSpec(input_size=16, dimension=4, layout="NHWC"))


def test_a_network_onnxruntime_cannot_run_is_refused_where_it_loads(tmp_path: Path) -> None:
    node = helper.make_node("Embed", ["chips"], ["embedding"], domain="com.example")
    graph = helper.make_graph(
        [node],
        "custom",
        [helper.make_tensor_value_info("chips", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", DIMENSION])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    path = tmp_path / "custom.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelFileError, match="onnxruntime cannot load"):
        OnnxFaceModel(path, arcface_spec()).embed([np.zeros((112, 112, 3), np.uint8)])


def test_bad_specs_are_refused_with_the_field_named() -> None:
    for bad, field in [
        ({"colour": "RGBA"}, "colour"),
        ({"layout": "CHW"}, "layout"),
        ({"std": [1, 0, 1]}, "std"),
        ({"mean": [1, 2]}, "mean"),
        ({"name": "a b"}, "name"),
        ({"alignment": "mtcnn"}, "alignment"),
        ({"template": [[1, 2]]}, "template"),
        ({"reference_cosine": 1.0}, "reference_cosine"),
        ({"padding": "wide"}, "padding"),
    ]:
        with pytest.raises(InvalidParameterException, match=field):
            arcface_spec(**bad)
    with pytest.raises(InvalidParameterException, match="unknown fields size"):
        OnnxModelSpec.from_dict({"input_size": 112, "dimension": 512, "size": 3})
    with pytest.raises(InvalidParameterException, match="dimension"):
        OnnxModelSpec.from_dict({"input_size": 112})


def test_the_spec_round_trips_through_its_json_form() -> None:
    spec = OnnxModelSpec.from_dict(
        {"name": "arcface-r100", "input_size": 112, "dimension": 512, "mean": [127.5] * 3, "template": "arcface"}
    )
    assert spec.template == ARCFACE_112
    assert OnnxModelSpec.from_dict(spec.to_dict()) == spec
    assert OnnxModelSpec(input_size=224, dimension=8).template == scaled(ARCFACE_112, 2.0)
    chip = OnnxModelSpec(input_size=224, dimension=8, alignment="dlib-chip", padding=0.3)
    assert chip.template is None and OnnxModelSpec.from_dict(chip.to_dict()) == chip


# ------------------------------------------------------------------------------------------
# Alignment


def test_the_least_squares_similarity_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(4)
    source = rng.uniform(0, 200, (5, 2))
    angle, scale, shift = math.radians(17), 0.6, np.array([12.0, -30.0])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    target = scale * source @ rotation.T + shift
    matrix = fit_similarity(source, target)
    np.testing.assert_allclose(matrix, np.hstack([scale * rotation, shift[:, None]]), atol=1e-9)
    # Noisy points: still a rotation and uniform scale, never a reflection.
    noisy = fit_similarity(source, target + rng.normal(0, 2, target.shape))
    assert np.linalg.det(noisy[:, :2]) > 0
    assert noisy[0, 0] == pytest.approx(noisy[1, 1]) and noisy[0, 1] == pytest.approx(-noisy[1, 0])


def test_the_warp_counts_pixel_centres_as_opencv_does() -> None:
    image = np.zeros((60, 80, 3), np.uint8)
    image[30, 40] = 255  # row 30, column 40: the point (40, 30)
    chip = warp_chip(image, np.array([[1.0, 0.0, 5.0], [0.0, 1.0, 7.0]]), 64)
    assert chip[37, 45].tolist() == [255, 255, 255] and chip.sum() == 3 * 255
    # Half size: the point lands at (20, 15), spread over the neighbouring pixels by bilinear sampling.
    half = warp_chip(image.repeat(2, axis=0).repeat(2, axis=1), np.array([[0.5, 0, 0], [0, 0.5, 0]]), 64)
    rows, columns = np.nonzero(half[..., 0])
    assert abs(rows.mean() - 30.25) < 0.5 and abs(columns.mean() - 40.25) < 0.5


def test_a_template_chip_puts_the_landmarks_on_the_template() -> None:
    image = np.zeros((300, 300, 3), np.uint8)
    points = ((180.0, 120.0), (160.0, 121.0), (110.0, 118.0), (130.0, 119.0), (145.0, 160.0))
    for x, y in points:
        image[int(y), int(x)] = 255
    chip = template_chip(image, points, ARCFACE_112, 112)
    matrix = fit_similarity(np.array(points), np.array(ARCFACE_112))
    for x, y in np.array(points) @ matrix[:, :2].T + matrix[:, 2]:
        assert chip[round(y) - 1 : round(y) + 2, round(x) - 1 : round(x) + 2].max() > 0


def test_dlib_chip_alignment_cuts_what_dlib_cuts(tmp_path: Path) -> None:
    path = conv_network(tmp_path / "c150.onnx", side=150)
    model = OnnxFaceModel(path, OnnxModelSpec(input_size=150, dimension=DIMENSION, alignment="dlib-chip"))
    pixels = read_image_file(data_path("facerec_examples", "obama", "obama.jpg")).pixels
    face = FaceAnalyzer(model=model).analyze(pixels, embed=False)[0]
    np.testing.assert_array_equal(face.chip, align_chip(pixels, face, size=150, padding=0.25))
    no_landmarks = Face(BoundingBox(0, 0, 10, 10), 1.0, 90.0)
    with pytest.raises(ValueError):
        model.align(pixels, no_landmarks)
