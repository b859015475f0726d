"""The face model: everything that depends on which embedding network faceledger runs.

A :class:`FaceModel` takes a detected face whose landmarks are known to its template, and says
what templates mean:

- ``align`` cuts the face out as the network expects it, a ``chip_size`` x ``chip_size`` RGB chip;
- ``embed`` turns chips into templates of ``dimension`` floats (any test-time augmentation is the
  model's own);
- ``similarity`` maps the distance between two templates to 0-100 (vision/similarity.py);
- ``threshold_table`` says what each similarity threshold means in errors, as measured for this
  model (vision/calibration.py); the default search threshold comes from it;
- ``version`` is what FaceModelVersion reports and what a collection records: templates of
  different versions cannot be compared.

Detection and landmarks come before the model and do not depend on it; quality is measured on the
chip at whatever size the model cuts it. Replacing the model therefore touches nothing else.

A model is a picklable value that holds settings only: worker processes (folder indexing,
evaluation) receive the model itself and load its weights there, lazily, once per process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import ClassVar, Literal, Protocol

import numpy as np

from faceledger.vision.calibration import ThresholdTable
from faceledger.vision.embed import EMBEDDING_DIM, DlibResNetEmbedder, Embedder, OnnxResNetEmbedder
from faceledger.vision.face import Face
from faceledger.vision.landmarks import align_chip
from faceledger.vision.resnet_onnx import CHIP_SIZE
from faceledger.vision.similarity import SimilarityScale


class FaceModel(Protocol):
    """What the pipeline, the service and the evaluations need from a face model."""

    @property
    def name(self) -> str:
        """The network and its weights, e.g. ``dlib-resnet-v1``."""

    @property
    def version(self) -> str:
        """The name and any test-time augmentation, e.g. ``dlib-resnet-v1+flip``: templates
        are comparable exactly when their versions are equal."""

    @property
    def chip_size(self) -> int:
        """Side in pixels of the square chips ``align`` cuts and ``embed`` takes."""

    @property
    def dimension(self) -> int:
        """Length of a template."""

    @property
    def similarity(self) -> SimilarityScale: ...

    def align(self, pixels: np.ndarray, face: Face) -> np.ndarray:
        """The chip of ``face`` (its landmarks must be set) in the RGB ``uint8`` image
        ``pixels``: ``uint8`` of shape (chip_size, chip_size, 3)."""

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Templates of ``chips``: float32 of shape (len(chips), dimension)."""

    def threshold_table(self) -> ThresholdTable:
        """The calibration shipped with the model."""


# dlib's get_face_chip margin around the landmarks: the alignment the ResNet was trained on.
CHIP_PADDING = 0.25
# 0.6 is the distance threshold dlib published with the ResNet's weights (99.38% on LFW); it
# reports 80, Rekognition's default threshold, so Rekognition's defaults keep dlib's decision rule.
RESNET_V1_SCALE = SimilarityScale(reference_distance=0.6, reference_similarity=80.0)
# All pairs of LFW's 13,233 images, flip augmentation on (docs/accuracy.md).
LFW_THRESHOLDS = Path(__file__).with_name("dlib_resnet_v1_lfw_thresholds.json")


@cache
def _lfw_table() -> ThresholdTable:
    return ThresholdTable.load(LFW_THRESHOLDS)


@dataclass(frozen=True)
class DlibResNetModel:
    """dlib's face-recognition ResNet v1 (99.38% on LFW as published by dlib), on chips cut from
    dlib's 5 landmarks exactly as ``dlib.get_face_chip`` cuts them (150 pixels, padding 0.25).

    ``runtime``: ``onnx`` (default) runs dlib's weights converted to ONNX under onnxruntime, about
    25x faster on two cores; ``dlib`` runs dlib itself, the reference the conversion is tested
    against. Both give the same templates within 1e-4, so they share one version.
    ``threads``: onnxruntime's intra-op threads (0 = one per physical core); use 1 in each of
    several processes that embed at once.
    ``flip``: test-time augmentation: a face's template is the mean of the embeddings of its chip
    and of the mirrored chip. On LFW it cuts false non-matches at FMR 1e-4 by 18%
    (docs/accuracy.md) for twice the embedding time. The shipped threshold table was measured with
    it on; without it that table is an approximation.
    """

    runtime: Literal["onnx", "dlib"] = "onnx"
    threads: int = 0
    flip: bool = True

    name: ClassVar[str] = "dlib-resnet-v1"
    chip_size: ClassVar[int] = CHIP_SIZE
    dimension: ClassVar[int] = EMBEDDING_DIM
    similarity: ClassVar[SimilarityScale] = RESNET_V1_SCALE

    def __post_init__(self) -> None:
        if self.runtime not in ("onnx", "dlib"):
            raise ValueError(f"runtime must be 'onnx' or 'dlib', not {self.runtime!r}")

    @property
    def version(self) -> str:
        return self.name + ("+flip" if self.flip else "")

    def align(self, pixels: np.ndarray, face: Face) -> np.ndarray:
        """The face rotated upright and scaled to a 150x150x3 ``uint8`` chip."""
        return align_chip(pixels, face, size=self.chip_size, padding=CHIP_PADDING)

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Templates of 150x150 RGB ``uint8`` chips: float32 of shape (len(chips), 128)."""
        network = self._network()
        if not self.flip:
            return network.embed(chips)
        chips = list(chips)
        mirrored = [np.ascontiguousarray(chip[:, ::-1]) for chip in chips]
        both = network.embed(chips + mirrored)
        return ((both[: len(chips)] + both[len(chips) :]) / 2.0).astype(np.float32, copy=False)

    def threshold_table(self) -> ThresholdTable:
        return _lfw_table()

    def _network(self) -> Embedder:
        # Cheap objects: the weights are loaded once per process behind them.
        return OnnxResNetEmbedder(self.threads) if self.runtime == "onnx" else DlibResNetEmbedder()
