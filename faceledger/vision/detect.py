"""Face detection with dlib's HOG detector on an image rescaled to a chosen face-size floor.

The default detector is BlazeFace (vision/blazeface.py), which finds more faces in a third of the
time or less (benchmarks/detect.py); HOG stays as the alternative that needs no TFLite runtime.
On the shared group photos and on LFW, HOG found as many faces as dlib's CNN (MMOD) detector at
under a tenth of its time on a 2-core CPU. HOG's window is 80x80 pixels, so a face smaller than that
is only found after upsampling; instead of a fixed upsampling count, the image is rescaled so that
``min_face_size`` pixels become 80, capped at ``max_work_pixels`` so that a 40-megapixel photo
is not blown up to 160 megapixels. On a large photo the cap wins and the smallest face found is
``80 / scale`` pixels; :meth:`HogFaceDetector.smallest_findable_face` reports it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Protocol

import dlib
import numpy as np
from PIL import Image

from faceledger.vision.face import BoundingBox, Face


class FaceDetector(Protocol):
    """What the pipeline needs from a detector."""

    @property
    def name(self) -> str: ...

    def detect(self, pixels: np.ndarray) -> list[Face]: ...

    def smallest_findable_face(self, width: int, height: int) -> float: ...


HOG_WINDOW = 80  # pixels: the side of the face window dlib's frontal detector was trained on


_per_thread = threading.local()


def _hog_detector() -> dlib.fhog_object_detector:
    # dlib does not promise that one detector may scan from two threads at once; each thread
    # gets its own (a few hundred KB).
    detector = getattr(_per_thread, "hog", None)
    if detector is None:
        detector = _per_thread.hog = dlib.get_frontal_face_detector()
    return detector


def detector_confidence(score: float) -> float:
    """Map the HOG detector's SVM margin to 0-100 with a logistic curve.

    Monotone, so ranking is preserved; a margin of 0 (the detector's own decision boundary) maps
    to 73, +1 to 95. It is a convenience scale, **not** a probability that the box is a face.
    """
    return 100.0 / (1.0 + math.exp(-2.0 * (score + 0.5)))


@dataclass(frozen=True)
class HogFaceDetector:
    """Finds frontal and near-frontal faces (up to about +/-40 degrees of yaw).

    ``min_face_size``: smallest face side, in pixels of the input image, to look for (default 40).
    ``max_work_pixels``: pixel budget of the rescaled image the detector scans (default 4 MP,
    about 0.3 s on one core). ``score_threshold``: detector margin below which a box is dropped
    (0 is dlib's trained boundary; lower finds more faces and more false ones).
    ``fallback_threshold``: the margin of a second pass made only when the first finds nothing.
    """

    min_face_size: int = 40
    max_work_pixels: int = 4_000_000
    score_threshold: float = 0.0
    # When nothing passes score_threshold, one more look at this lower margin: on LFW it finds
    # the face in 11 of 12 images where the first pass found none (first 2,500 images). Such
    # faces carry a low confidence (below 73), so QualityFilter AUTO and up reject them.
    fallback_threshold: float | None = -0.5

    @property
    def name(self) -> str:
        """Identifies the settings (part of the evaluation cache key)."""
        return (
            f"hog-{self.min_face_size}px-{self.max_work_pixels // 1_000_000}MP-{self.score_threshold}"
            f"-fallback-{self.fallback_threshold}"
        )

    def scale_for(self, width: int, height: int) -> float:
        wanted = HOG_WINDOW / self.min_face_size
        affordable = math.sqrt(self.max_work_pixels / float(width * height))
        return min(wanted, affordable)

    def smallest_findable_face(self, width: int, height: int) -> float:
        """Side in input pixels of the smallest face this detector can find in such an image."""
        return HOG_WINDOW / self.scale_for(width, height)

    def detect(self, pixels: np.ndarray) -> list[Face]:
        """Faces in an RGB ``uint8`` image, largest first, boxes in input-image pixels."""
        height, width = pixels.shape[:2]
        scale = self.scale_for(width, height)
        work = pixels
        if abs(scale - 1.0) > 1e-3:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            work = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))
            scale_x, scale_y = size[0] / width, size[1] / height
        else:
            scale_x = scale_y = 1.0
        rects, scores, _ = _hog_detector().run(work, 0, self.score_threshold)
        if not rects and self.fallback_threshold is not None:
            rects, scores, _ = _hog_detector().run(work, 0, self.fallback_threshold)
        faces = [
            Face(
                box=BoundingBox(
                    left=rect.left() / scale_x,
                    top=rect.top() / scale_y,
                    width=rect.width() / scale_x,
                    height=rect.height() / scale_y,
                ),
                detector_score=float(score),
                confidence=detector_confidence(float(score)),
            )
            for rect, score in zip(rects, scores, strict=True)
        ]
        faces.sort(key=lambda face: face.box.area, reverse=True)
        return faces
