"""The record that carries everything known about one face through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class BoundingBox:
    """A face box in pixels of the (EXIF-rotated) image: ``left``/``top`` corner and size.

    May extend past the image edge when the face is cut by the frame.
    """

    left: float
    top: float
    width: float
    height: float

    def relative(self, image_width: int, image_height: int) -> dict[str, float]:
        """The box as ratios of the image size, as Rekognition reports it (0-1, may exceed)."""
        return {
            "Width": self.width / image_width,
            "Height": self.height / image_height,
            "Left": self.left / image_width,
            "Top": self.top / image_height,
        }

    @classmethod
    def from_relative(cls, box: dict[str, float], image_width: int, image_height: int) -> BoundingBox:
        """The box in pixels of an image of that size, from its :meth:`relative` form."""
        return cls(
            box["Left"] * image_width,
            box["Top"] * image_height,
            box["Width"] * image_width,
            box["Height"] * image_height,
        )

    @property
    def area(self) -> float:
        return self.width * self.height

    def overlap(self, other: BoundingBox) -> float:
        """Intersection over union of the two boxes."""
        width = min(self.left + self.width, other.left + other.width) - max(self.left, other.left)
        height = min(self.top + self.height, other.top + other.height) - max(self.top, other.top)
        if width <= 0 or height <= 0:
            return 0.0
        shared = width * height
        return shared / (self.area + other.area - shared)


@dataclass(frozen=True)
class Landmarks:
    """The five points of dlib's 5-point model, in image pixels, as (x, y).

    ``eye_left`` is the eye on the viewer's left (smaller x in an upright face), as in
    Rekognition's ``eyeLeft``; each eye point is the midpoint of that eye's two corners.
    """

    points: tuple[tuple[float, float], ...]

    @property
    def eye_left(self) -> tuple[float, float]:
        return _midpoint(self.points[2], self.points[3])

    @property
    def eye_right(self) -> tuple[float, float]:
        return _midpoint(self.points[0], self.points[1])

    @property
    def nose(self) -> tuple[float, float]:
        return self.points[4]

    def named(self) -> dict[str, tuple[float, float]]:
        return {"eyeLeft": self.eye_left, "eyeRight": self.eye_right, "nose": self.nose}


@dataclass(frozen=True)
class Pose:
    """Head pose in degrees, estimated geometrically from the five landmarks.

    ``roll``: in-plane tilt of the eye line (exact up to landmark error). ``yaw`` and ``pitch``:
    coarse estimates (about +/-10 degrees) from where the nose sits relative to the eyes; good
    enough to reject profile and steeply tilted faces, not to measure head orientation.
    """

    roll: float
    yaw: float
    pitch: float


@dataclass(frozen=True)
class FaceQuality:
    """Image quality of one face. ``sharpness`` and ``brightness`` are on 0-100 (see quality.py);
    ``face_size`` is the shorter side of the bounding box in pixels of the original image."""

    sharpness: float
    brightness: float
    face_size: float
    pose: Pose


@dataclass
class Face:
    """One face found in an image; each pipeline stage fills in its part.

    ``confidence`` (0-100) is a monotone rescaling of the detector's margin, not a probability.
    ``embedding`` is the 128-d dlib ResNet descriptor (float32); faces of one person are closer
    than 0.6 in Euclidean distance for most pairs (see docs/similarity.md).
    """

    box: BoundingBox
    detector_score: float
    confidence: float
    landmarks: Landmarks | None = None
    chip: np.ndarray | None = field(default=None, repr=False)
    quality: FaceQuality | None = None
    embedding: np.ndarray | None = field(default=None, repr=False)
    # a small JPEG of the face (vision/crop.py), made where a reviewer may need to see it
    crop: bytes | None = field(default=None, repr=False)


def _midpoint(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return ((a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0)
