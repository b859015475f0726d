"""Five-point landmarks, and the chip aligned on them as ``dlib.get_face_chip`` cuts it.

The 5-point model is used rather than the 68-point one, whose training data (iBUG 300-W) forbids
commercial use. The face model chooses the chip's size and padding (vision/model.py).
"""

from __future__ import annotations

import threading

import dlib
import numpy as np

from faceledger.vision.face import Face, Landmarks
from faceledger.vision.weights import SHAPE_PREDICTOR_5, weight_file

_per_thread = threading.local()


def _shape_predictor() -> dlib.shape_predictor:
    # one 9 MB model per thread: dlib does not promise concurrent use of one predictor is safe
    predictor = getattr(_per_thread, "shape_predictor", None)
    if predictor is None:
        predictor = _per_thread.shape_predictor = dlib.shape_predictor(str(weight_file(SHAPE_PREDICTOR_5)))
    return predictor


def _rectangle(face: Face) -> dlib.rectangle:
    box = face.box
    return dlib.rectangle(round(box.left), round(box.top), round(box.left + box.width), round(box.top + box.height))


def locate_landmarks(pixels: np.ndarray, face: Face) -> Landmarks:
    """The five landmarks of ``face`` in image pixels (see :class:`Landmarks` for their order)."""
    shape = _shape_predictor()(pixels, _rectangle(face))
    return Landmarks(points=tuple((float(p.x), float(p.y)) for p in shape.parts()))


def align_chip(pixels: np.ndarray, face: Face, *, size: int, padding: float) -> np.ndarray:
    """The face rotated upright and scaled to a ``size`` x ``size`` x 3 ``uint8`` chip, with
    ``padding`` (a fraction of the landmarks' span) of margin on each side."""
    if face.landmarks is None:
        raise ValueError("align_chip needs the face's landmarks")
    points = dlib.points([dlib.point(round(x), round(y)) for x, y in face.landmarks.points])
    shape = dlib.full_object_detection(_rectangle(face), points)
    return np.asarray(dlib.get_face_chip(pixels, shape, size=size, padding=padding))
