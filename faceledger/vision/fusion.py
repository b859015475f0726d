"""Score-level fusion of face models: one model whose similarity is a weighted sum of cosines.

Two networks that err on different faces are together better than either (on LFW, dlib's ResNet
and faceres fused miss a third as many mates at FMR 1e-4 as the better of the two:
docs/accuracy.md). :class:`FusedFaceModel` composes such models into one
:class:`~faceledger.vision.model.FaceModel`, so a collection records it, and is indexed, searched
and calibrated with it, like any other.

Its template is the concatenation ``[sqrt(w_1) u_1, ..., sqrt(w_n) u_n]`` of each part's unit
embedding ``u_i`` scaled by the square root of its weight (weights sum to 1). That is a unit
vector, and the dot product of two of them is ``sum_i w_i cos_i``: the fused score is a cosine,
so the usual squared-distance scale (``SimilarityScale.for_cosine``) and FAISS's exact L2 search
apply unchanged. With ``flip``, the template is the re-normalised mean of the fused embeddings of
the chip and of its mirror image, exactly what the evaluations measure for a unit-vector model.

One chip for all parts: every part must cut its chip as ``dlib.get_face_chip`` does (same
landmarks, same transform, only size and padding differ), so each part's chip is the centre of
the chip cut with the widest padding, resized to the part's size. The fused model cuts that
widest chip, at a side large enough for every part's resolution; a part whose padding is the
widest gets it unchanged. A part aligned to a landmark template of its own cannot take part.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from faceledger.errors import InvalidParameterException
from faceledger.vision.calibration import ThresholdTable
from faceledger.vision.face import Face
from faceledger.vision.landmarks import align_chip
from faceledger.vision.model import CHIP_PADDING, DlibResNetModel, FaceModel
from faceledger.vision.onnx_model import OnnxFaceModel, UncalibratedModelError, unit_length
from faceledger.vision.similarity import SimilarityScale

# The fusion shipped with a threshold table (docs/accuracy.md: weight chosen on identity-disjoint
# halves of LFW, table measured on all pairs of LFW): dlib's ResNet and faceres.
DLIB_FACERES = "dlib-faceres"
DLIB_FACERES_WEIGHTS = (0.812, 0.188)
# LFW View 2's accuracy-maximising fused cosine (median of the ten folds' choices, 0.8425) reports
# 80, as dlib's published 0.6 does for its ResNet.
DLIB_FACERES_COSINE = 0.84
DLIB_FACERES_TABLE = Path(__file__).with_name("dlib_faceres_lfw_thresholds.json")  # benchmarks/fusion_table.py
# The table is LFW's, and thresholds set on LFW for a cosine score gave 1.2-2.5x their target FMR
# on another in-the-wild set (the accuracy issue's measurement, for dlib's cosine; dlib's Euclidean
# scale gave 0.4-0.7x, and its table keeps margin 1): every promise from this table assumes 2.5x
# the FMR LFW shows.
DLIB_FACERES_TRANSFER_MARGIN = 2.5
# Tables measured for exactly these fusions, by version (a table holds for one version only).
SHIPPED_TABLES: dict[str, Path] = {
    "fusion[dlib-resnet-v1*0.812,faceres-68d563b384935331.9a9f58e7*0.188]@0.84+flip": DLIB_FACERES_TABLE,
}


def fused_model(
    name: str, parts: Sequence[FaceModel], weights: Sequence[float], reference_cosine: float, **options: object
) -> FusedFaceModel:
    """The fusion of ``parts``, with the shipped threshold table where exactly it was measured."""
    model = FusedFaceModel(name, tuple(parts), tuple(weights), reference_cosine, **options)  # type: ignore[arg-type]
    table = SHIPPED_TABLES.get(model.version)
    return dataclasses.replace(model, table=table) if table is not None else model


def chip_padding(model: FaceModel) -> float:
    """The ``dlib.get_face_chip`` padding ``model`` cuts its chips with (InvalidParameter for a
    model aligned otherwise)."""
    if isinstance(model, DlibResNetModel):
        return CHIP_PADDING
    if isinstance(model, OnnxFaceModel) and model.spec.alignment == "dlib-chip":
        return model.spec.padding
    raise InvalidParameterException(
        f"Face model {model.name} does not cut dlib chips (alignment 'dlib-chip'), so it cannot be fused."
    )


@dataclass(frozen=True)
class FusedFaceModel:
    """The models ``parts`` fused with ``weights`` (positive, normalised to sum 1), reported on a
    cosine scale where ``reference_cosine`` of the fused score reports Similarity 80.

    ``table``: the threshold table measured for exactly this fusion (its version), if one ships;
    without one, searches wait for ``faceledger calibrate``. ``threads`` and ``flip`` as for the
    parts, which run with their own flip off (the fused model mirrors the chip itself).
    """

    name: str
    parts: tuple[FaceModel, ...]
    weights: tuple[float, ...]
    reference_cosine: float
    table: Path | None = None
    threads: int = 0
    flip: bool = True
    chip_size: int = field(init=False)
    _padding: float = field(init=False, repr=False)  # the widest of the parts' paddings
    _boxes: tuple[tuple[float, float], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.parts) < 2 or len(self.parts) != len(self.weights):
            raise InvalidParameterException("A fusion needs two or more models, each with a weight.")
        if not all(math.isfinite(w) and w > 0 for w in self.weights):
            raise InvalidParameterException("Fusion weights must be positive numbers.")
        if not -1 < self.reference_cosine < 1:
            raise InvalidParameterException("A fusion's reference cosine must be in (-1, 1).")
        total = sum(self.weights)
        set_field = object.__setattr__  # normalise the frozen fields
        set_field(self, "weights", tuple(w / total for w in self.weights))
        # a part is copied only when it must change (copying an ONNX model reads and checks its file)
        set_field(
            self,
            "parts",
            tuple(
                p
                if (p.flip, p.threads) == (False, self.threads)
                else dataclasses.replace(p, flip=False, threads=self.threads)
                for p in self.parts
            ),
        )
        paddings = [chip_padding(part) for part in self.parts]
        widest = max(paddings)
        set_field(self, "_padding", widest)
        span = 1.0 + 2.0 * widest
        # wide enough that no part's centre is stretched to reach its own size
        size = max(
            math.ceil(part.chip_size * span / (1.0 + 2.0 * p) - 1e-9)
            for part, p in zip(self.parts, paddings, strict=True)
        )
        set_field(self, "chip_size", size)
        # each part's square in the wide chip: (offset, side) in pixels
        set_field(self, "_boxes", tuple((size * (widest - p) / span, size * (1.0 + 2.0 * p) / span) for p in paddings))

    @property
    def version(self) -> str:
        """The parts' versions and weights, and the cosine that reports 80: two fusions share a
        version exactly when their templates and their Similarity are the same."""
        parts = ",".join(f"{part.version}*{weight!r}" for part, weight in zip(self.parts, self.weights, strict=True))
        return f"fusion[{parts}]@{self.reference_cosine!r}" + ("+flip" if self.flip else "")

    @property
    def dimension(self) -> int:
        return sum(part.dimension for part in self.parts)

    @property
    def similarity(self) -> SimilarityScale:
        return SimilarityScale.for_cosine(self.reference_cosine)

    def align(self, pixels: np.ndarray, face: Face) -> np.ndarray:
        """The widest-padded chip, ``chip_size`` square, RGB ``uint8``."""
        return align_chip(pixels, face, size=self.chip_size, padding=self._padding)

    def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Unit-length fused templates: float32 of shape (len(chips), dimension)."""
        chips = list(chips)
        if not chips:
            return np.empty((0, self.dimension), dtype=np.float32)
        if any(chip.shape != (self.chip_size, self.chip_size, 3) for chip in chips):
            raise ValueError(f"chips must be {self.chip_size}x{self.chip_size} RGB")
        if not self.flip:
            return self._fused(chips)
        mirrored = [np.ascontiguousarray(chip[:, ::-1]) for chip in chips]
        both = self._fused(chips + mirrored)
        return unit_length(both[: len(chips)] + both[len(chips) :])

    def threshold_table(self) -> ThresholdTable:
        if self.table is None:
            raise UncalibratedModelError(
                f"No threshold table ships with face model {self.version}: measure one with "
                "`faceledger calibrate` and store it for the collection."
            )
        return _load_table(self.table)

    def _fused(self, chips: list[np.ndarray]) -> np.ndarray:
        pieces = []
        for part, weight, box in zip(self.parts, self.weights, self._boxes, strict=True):
            own = [_centre(chip, box, part.chip_size) for chip in chips]
            pieces.append(math.sqrt(weight) * unit_length(part.embed(own)))
        return np.hstack(pieces).astype(np.float32, copy=False)


def _centre(chip: np.ndarray, box: tuple[float, float], size: int) -> np.ndarray:
    """The square at ``box`` (offset, side) of ``chip``, resized to ``size``."""
    offset, side = box
    if offset < 1e-6 and abs(side - size) < 1e-6 and chip.shape[0] == size:
        return chip
    region = (offset, offset, offset + side, offset + side)
    return np.asarray(Image.fromarray(chip).resize((size, size), Image.Resampling.BILINEAR, box=region))


@cache
def _load_table(path: Path) -> ThresholdTable:
    return ThresholdTable.load(path)
