"""Plain records of what the store holds; the store reads and writes nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CollectionRecord:
    collection_id: str
    created_at: float  # seconds since the Unix epoch, UTC
    face_model_version: str
    face_count: int = 0
    user_count: int = 0


@dataclass(frozen=True)
class ImageRecord:
    """One image indexed into a collection (also when no face was indexed from it), so that a
    re-run of a folder index skips it by SHA-256. Pixels are kept only when asked (``content``)."""

    image_id: str
    collection_id: str
    image_sha256: str
    external_image_id: str | None
    width: int
    height: int
    face_count: int
    indexed_at: float
    source_path: str | None = None
    content: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class FaceRecord:
    """One indexed face. ``bounding_box`` and landmark coordinates are ratios of the image size,
    as Rekognition reports them; ``quality`` holds Sharpness/Brightness (0-100), FaceSize
    (pixels) and Pose (degrees)."""

    face_id: str
    collection_id: str
    image_id: str
    external_image_id: str | None
    image_sha256: str
    bounding_box: dict[str, float]
    confidence: float
    landmarks: dict[str, tuple[float, float]]
    quality: dict[str, Any]
    embedding: np.ndarray = field(repr=False)
    created_at: float
    user_id: str | None = None


@dataclass(frozen=True)
class UserRecord:
    collection_id: str
    user_id: str
    created_at: float
    face_count: int = 0
