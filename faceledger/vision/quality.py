"""Per-face quality: sharpness, brightness, size and pose, and the QualityFilter levels.

All measures are taken on the aligned chip the face model cuts (so they do not depend on the
photo's resolution), except ``face_size``, which is the shorter box side in the original image's
pixels. The central region is the middle three fifths of the chip on each axis (pixels 30-120 of
dlib's 150-pixel chip).

- ``sharpness`` (0-100): variance of the Laplacian of the chip's central region (eyes, nose,
  mouth), mapped by ``100 * (1 - exp(-variance / 150))``. On 150-pixel chips, a chip blurred by a
  3-pixel Gaussian scores about 20; a crisp studio portrait 90+. The QualityFilter bars were set
  on such chips.
- ``brightness`` (0-100): mean luma (ITU-R BT.601) of the central region, as a percentage of 255.
- pose: see :class:`faceledger.vision.face.Pose`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from faceledger.vision.face import Face, FaceQuality, Landmarks, Pose

_SHARPNESS_SCALE = 150.0
# The chip quality is measured on, whatever chip the face model takes: dlib's aligned chip of 150
# pixels with padding 0.25, on which the QualityFilter bars below were set. Measured on a model's
# own chip instead, sharpness would shift with its size (median on LFW: 24.5 at 150 pixels, 12.4
# on faceres' 224, 64.2 on a 112-pixel ArcFace chip) and the bars would mean something else.
QUALITY_CHIP_SIZE = 150
QUALITY_CHIP_PADDING = 0.25
# Geometry of an average frontal face in units of the inter-ocular distance, measured on LFW:
# the nose base sits this far below the eye line, and this far in front of the eye plane.
_NOSE_DROP = 0.77
_NOSE_DEPTH = 0.45


def assess_quality(face: Face, chip: np.ndarray) -> FaceQuality:
    if face.landmarks is None:
        raise ValueError("assess_quality needs the face's landmarks")
    rows, columns = chip.shape[:2]
    centre = chip[rows // 5 : rows - rows // 5, columns // 5 : columns - columns // 5].astype(np.float64)
    luma = centre @ np.array([0.299, 0.587, 0.114])
    laplacian = -4.0 * luma[1:-1, 1:-1] + luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:]
    sharpness = 100.0 * (1.0 - math.exp(-float(laplacian.var()) / _SHARPNESS_SCALE))
    brightness = float(luma.mean()) / 255.0 * 100.0
    return FaceQuality(
        sharpness=sharpness,
        brightness=brightness,
        face_size=float(min(face.box.width, face.box.height)),
        pose=estimate_pose(face.landmarks),
    )


def estimate_pose(landmarks: Landmarks) -> Pose:
    """Roll, yaw and pitch in degrees from the 5 landmarks (positive yaw: face turned to the
    viewer's right; positive pitch: chin up)."""
    (lx, ly), (rx, ry), (nx, ny) = landmarks.eye_left, landmarks.eye_right, landmarks.nose
    eye_dx, eye_dy = rx - lx, ry - ly
    inter_ocular = math.hypot(eye_dx, eye_dy)
    if inter_ocular < 1e-6:
        return Pose(roll=0.0, yaw=90.0, pitch=0.0)
    roll = math.degrees(math.atan2(eye_dy, eye_dx))
    ux, uy = eye_dx / inter_ocular, eye_dy / inter_ocular
    mx, my = (lx + rx) / 2.0, (ly + ry) / 2.0
    along = ((nx - mx) * ux + (ny - my) * uy) / inter_ocular
    across = (-(nx - mx) * uy + (ny - my) * ux) / inter_ocular
    yaw = math.degrees(math.atan2(along, _NOSE_DEPTH))
    radius = math.hypot(_NOSE_DROP, _NOSE_DEPTH)
    pitch = math.degrees(math.acos(max(-1.0, min(1.0, across / radius))) - math.atan2(_NOSE_DEPTH, _NOSE_DROP))
    return Pose(roll=roll, yaw=yaw, pitch=pitch)


class QualityFilter(str, Enum):
    """Rekognition's QualityFilter levels. AUTO is MEDIUM here (documented in docs/similarity.md)."""

    NONE = "NONE"
    AUTO = "AUTO"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


@dataclass(frozen=True)
class QualityBar:
    min_confidence: float
    min_face_size: float
    min_sharpness: float
    min_brightness: float
    max_brightness: float
    max_abs_yaw: float
    max_abs_pitch: float


QUALITY_BARS: dict[QualityFilter, QualityBar | None] = {
    QualityFilter.NONE: None,
    QualityFilter.LOW: QualityBar(60.0, 20.0, 2.0, 5.0, 98.0, 60.0, 45.0),
    QualityFilter.MEDIUM: QualityBar(70.0, 32.0, 4.0, 10.0, 95.0, 45.0, 35.0),
    QualityFilter.HIGH: QualityBar(85.0, 60.0, 12.0, 20.0, 90.0, 30.0, 25.0),
}
QUALITY_BARS[QualityFilter.AUTO] = QUALITY_BARS[QualityFilter.MEDIUM]


def quality_failures(face: Face, level: QualityFilter) -> list[str]:
    """Rekognition's UnindexedFaces reasons this face fails at ``level`` (empty: it passes)."""
    bar = QUALITY_BARS[level]
    if bar is None or face.quality is None:
        return []
    quality = face.quality
    reasons = []
    if face.confidence < bar.min_confidence:
        reasons.append("LOW_CONFIDENCE")
    if quality.face_size < bar.min_face_size:
        reasons.append("SMALL_BOUNDING_BOX")
    if quality.sharpness < bar.min_sharpness:
        reasons.append("LOW_SHARPNESS")
    if quality.brightness < bar.min_brightness:
        reasons.append("LOW_BRIGHTNESS")
    if quality.brightness > bar.max_brightness:
        reasons.append("LOW_FACE_QUALITY")
    if abs(quality.pose.yaw) > bar.max_abs_yaw or abs(quality.pose.pitch) > bar.max_abs_pitch:
        reasons.append("EXTREME_POSE")
    return reasons


def select_for_indexing(
    faces: list[Face], level: QualityFilter, max_faces: int | None
) -> tuple[list[Face], list[tuple[Face, list[str]]]]:
    """The faces IndexFaces keeps (the largest ``max_faces`` that pass ``level``; ``faces`` come
    largest first) and every other face with its Rekognition reasons."""
    accepted: list[Face] = []
    refused: list[tuple[Face, list[str]]] = []
    for face in faces:
        reasons = quality_failures(face, level)
        if not reasons and max_faces is not None and len(accepted) >= max_faces:
            reasons = ["EXCEEDS_MAX_FACES"]
        if reasons:
            refused.append((face, reasons))
        else:
            accepted.append(face)
    return accepted, refused
