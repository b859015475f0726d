"""The ONNX conversion of dlib's ResNet: read from dlib's own file, checked against dlib itself.

The equivalence check runs on every face found in the shared photo sets (and their mirrored chips)
plus an even sample of LFW; `benchmarks/embed.py --verify-all` extends it to all of LFW.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from faceledger.vision import DlibResNetModel, FaceAnalyzer, read_image_file
from faceledger.vision.embed import DlibResNetEmbedder, OnnxResNetEmbedder
from faceledger.vision.resnet_onnx import (
    ARCHITECTURE,
    DlibFormatError,
    converted_model,
    read_dlib_network,
)
from faceledger.vision.weights import RESNET_EMBEDDING, SHAPE_PREDICTOR_5, weight_file

from conftest import data_path

TOLERANCE = 1e-4  # max absolute difference per embedding component


@pytest.fixture(scope="module")
def shared_chips() -> list[np.ndarray]:
    """Aligned chips of every face detected in the shared photo sets, a sample of LFW, and the
    mirror image of each (flip augmentation embeds those too)."""
    analyzer = FaceAnalyzer()
    paths = [
        *sorted(data_path("deepface_unit").rglob("*.jpg")),
        *sorted(data_path("facerec_examples").rglob("*.jp*g")),
        *sorted(data_path("detection_multi", "images").glob("*.jpg")),
        *sorted(data_path("lfw").rglob("*.jpg"))[::200],
    ]
    chips = []
    for path in paths:
        for face in analyzer.analyze(read_image_file(path).pixels, embed=False):
            chips.append(face.chip)
    assert len(chips) > 140
    return chips + [chip[:, ::-1] for chip in chips]


def test_reads_every_layer_of_dlibs_file() -> None:
    layers = read_dlib_network(weight_file(RESNET_EMBEDDING).read_bytes())
    assert len(layers) == len(ARCHITECTURE)
    convolutions = [layer for layer in layers if layer.kind == "con"]
    assert len(convolutions) == 29
    assert convolutions[0].params["weights"].shape == (32, 3, 7, 7)
    assert layers[-2].kind == "fc" and layers[-2].params["weights"].shape == (256, 128)
    assert layers[0].params["means"] == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)


def test_other_files_are_refused_with_a_typed_error() -> None:
    data = weight_file(RESNET_EMBEDDING).read_bytes()
    with pytest.raises(DlibFormatError):
        read_dlib_network(data[: len(data) // 2])
    with pytest.raises(DlibFormatError):
        read_dlib_network(weight_file(SHAPE_PREDICTOR_5).read_bytes())
    with pytest.raises(DlibFormatError):
        read_dlib_network(data + b"\0")


def test_conversion_is_cached_and_reused(tmp_path) -> None:
    source = weight_file(RESNET_EMBEDDING)
    first = converted_model(source, tmp_path)
    written = first.stat().st_mtime_ns
    assert converted_model(source, tmp_path) == first
    assert first.stat().st_mtime_ns == written
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no partial files left


def test_onnx_runtime_reproduces_dlib_on_real_faces(shared_chips: list[np.ndarray]) -> None:
    chips = shared_chips
    reference = DlibResNetEmbedder().embed(chips)
    converted = OnnxResNetEmbedder().embed(chips)
    assert converted.shape == reference.shape == (len(chips), 128)
    assert converted.dtype == np.float32
    assert np.abs(converted - reference).max() <= TOLERANCE


def test_batches_of_any_size_give_the_same_embeddings(shared_chips: list[np.ndarray]) -> None:
    chips = shared_chips[:40]
    embedder = OnnxResNetEmbedder(threads=1)
    together = embedder.embed(chips)
    one_by_one = np.concatenate([embedder.embed([chip]) for chip in chips])
    assert np.abs(together - one_by_one).max() <= 1e-5
    assert embedder.embed([]).shape == (0, 128)
    with pytest.raises(ValueError):
        embedder.embed([chips[0][:100]])


def test_concurrent_calls_each_get_their_own_embeddings(shared_chips: list[np.ndarray]) -> None:
    embedder = OnnxResNetEmbedder(threads=1)
    calls = [shared_chips[n : n + 1 + n % 3] for n in range(12)]
    alone = [embedder.embed(chips) for chips in calls]
    results: dict[int, np.ndarray] = {}
    start = threading.Barrier(len(calls))

    def call(n: int) -> None:
        start.wait()
        results[n] = embedder.embed(calls[n])

    threads = [threading.Thread(target=call, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n, expected in enumerate(alone):
        assert results[n].shape == expected.shape and np.abs(results[n] - expected).max() <= 1e-5


def test_unwritable_cache_converts_in_memory(monkeypatch: pytest.MonkeyPatch, shared_chips: list[np.ndarray]) -> None:
    from faceledger.vision import embed

    def read_only(*_args, **_kwargs):
        raise PermissionError("read-only home")

    monkeypatch.setattr(embed, "converted_model", read_only)
    embed._onnx_session.cache_clear()
    try:
        in_memory = OnnxResNetEmbedder(threads=1).embed(shared_chips[:4])
    finally:
        embed._onnx_session.cache_clear()
    assert np.abs(in_memory - DlibResNetEmbedder().embed(shared_chips[:4])).max() <= TOLERANCE


def test_the_model_runs_either_runtime_and_averages_each_chip_with_its_mirror(shared_chips: list[np.ndarray]) -> None:
    chips = shared_chips[:3]
    plain = DlibResNetModel(threads=1, flip=False).embed(chips)
    mirrored = DlibResNetModel(threads=1, flip=False).embed([np.ascontiguousarray(chip[:, ::-1]) for chip in chips])
    flipped = DlibResNetModel(threads=1).embed(chips)
    assert flipped.shape == (3, 128) and flipped.dtype == np.float32
    assert np.abs(flipped - (plain + mirrored) / 2).max() <= 1e-6
    assert np.abs(DlibResNetModel(runtime="dlib").embed(chips) - flipped).max() <= TOLERANCE
    assert DlibResNetModel().embed([]).shape == (0, 128)
