"""What an operator says about an ONNX embedding network: :class:`OnnxModelSpec`.

Its JSON form (:meth:`OnnxModelSpec.to_dict`, :meth:`OnnxModelSpec.from_dict`) is what an operator
writes beside the ``.onnx`` file; vision/onnx_model.py runs the network as the spec says.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from faceledger.errors import InvalidParameterException
from faceledger.vision.alignment import ARCFACE_112, Points, scaled
from faceledger.vision.similarity import SimilarityScale

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class OnnxModelSpec:
    """What an embedding network expects and returns.

    ``input_size``: side in pixels of the square chip. ``dimension``: length of the embedding
    (checked against the network's output). ``name``: letters, digits, ``.``, ``_``, ``-``.
    ``colour``: channel order the network takes, ``RGB`` or ``BGR``. ``mean``, ``std``: per
    channel, in that order; the network gets ``(pixel - mean) / std`` of 0-255 values (a network
    that wants ``pixel * s`` has ``std = 1/s``). ``layout``: ``NCHW`` or ``NHWC``.
    ``alignment``: ``template`` (``template`` holds where dlib's five landmarks, in
    :class:`~faceledger.vision.face.Landmarks`' order, go in chip pixels; default ArcFace's
    template scaled from 112 pixels to ``input_size``) or ``dlib-chip`` (``dlib.get_face_chip`` at
    ``input_size`` with ``padding``, a fraction of the landmarks' span on each side).
    ``reference_cosine`` of two templates reports ``reference_similarity`` (0-100); set the
    cosine to the network's own decision threshold to make Rekognition's default threshold (80)
    keep that rule. ``output``: the network output to use when it has several.
    """

    input_size: int
    dimension: int
    name: str = "onnx"
    colour: str = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    layout: str = "NCHW"
    alignment: str = "template"
    template: Points | None = None
    padding: float = 0.25
    reference_cosine: float = 0.6
    reference_similarity: float = 80.0
    output: str | None = None

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # normalise the frozen fields (lists from JSON, defaults)
        set_field(self, "mean", _triple("mean", self.mean))
        set_field(self, "std", _triple("std", self.std))
        for name in ("padding", "reference_cosine", "reference_similarity"):
            set_field(self, name, _number(name, getattr(self, name)))
        if any(value == 0 for value in self.std):
            raise InvalidParameterException("Model spec: std must not be 0.")
        if not isinstance(self.input_size, int) or not 16 <= self.input_size <= 1024:
            raise InvalidParameterException("Model spec: input_size must be an integer from 16 to 1024.")
        if not isinstance(self.dimension, int) or not 2 <= self.dimension <= 8192:
            raise InvalidParameterException("Model spec: dimension must be an integer from 2 to 8192.")
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise InvalidParameterException("Model spec: name must be 1-64 letters, digits, '.', '_' or '-'.")
        if self.colour not in ("RGB", "BGR"):
            raise InvalidParameterException("Model spec: colour must be 'RGB' or 'BGR'.")
        if self.layout not in ("NCHW", "NHWC"):
            raise InvalidParameterException("Model spec: layout must be 'NCHW' or 'NHWC'.")
        if self.alignment not in ("template", "dlib-chip"):
            raise InvalidParameterException("Model spec: alignment must be 'template' or 'dlib-chip'.")
        if self.alignment == "template":
            points = self.template or scaled(ARCFACE_112, self.input_size / 112)
            set_field(self, "template", _points(points))
        elif self.template is not None:
            raise InvalidParameterException("Model spec: a template is only used with alignment 'template'.")
        if not 0 <= self.padding <= 2:
            raise InvalidParameterException("Model spec: padding must be from 0 to 2.")
        if not -1 < self.reference_cosine < 1 or not 0 <= self.reference_similarity < 100:
            raise InvalidParameterException(
                "Model spec: reference_cosine must be in (-1, 1) and reference_similarity in [0, 100)."
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OnnxModelSpec:
        """The spec from its JSON form (:meth:`to_dict`); ``template`` may also be ``"arcface"``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidParameterException(f"Model spec: unknown fields {', '.join(unknown)}.")
        values = dict(data)
        if values.get("template") == "arcface":
            values["template"] = None
        try:
            return cls(**values)
        except TypeError as error:  # a required field missing
            raise InvalidParameterException(f"Model spec: {error}.") from None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("mean", "std"):
            data[key] = list(data[key])
        if self.template is not None:
            data["template"] = [list(point) for point in self.template]
        return data

    @property
    def digest(self) -> str:
        """SHA-256 of everything in the spec that changes templates (all but the name)."""
        data = self.to_dict()
        del data["name"]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    @property
    def similarity(self) -> SimilarityScale:
        return SimilarityScale.for_cosine(self.reference_cosine, self.reference_similarity)


def _triple(name: str, values: Sequence[float]) -> tuple[float, float, float]:
    try:
        triple = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise InvalidParameterException(f"Model spec: {name} must be three numbers.") from None
    if len(triple) != 3 or not all(math.isfinite(v) for v in triple):
        raise InvalidParameterException(f"Model spec: {name} must be three finite numbers.")
    return triple  # type: ignore[return-value]


def _number(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidParameterException(f"Model spec: {name} must be a number.") from None
    if not math.isfinite(number):
        raise InvalidParameterException(f"Model spec: {name} must be finite.")
    return number


def _points(points: Sequence[Sequence[float]]) -> Points:
    try:
        result = tuple((float(x), float(y)) for x, y in points)
    except (TypeError, ValueError):
        raise InvalidParameterException("Model spec: template must be five [x, y] points.") from None
    if len(result) != 5 or not all(math.isfinite(v) for point in result for v in point):
        raise InvalidParameterException("Model spec: template must be five [x, y] points.")
    return result
