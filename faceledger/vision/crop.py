"""Small face crops for human review: what a reviewer looks at to decide whether two faces are
one person (service/review_operations.py). Only review-required collections keep them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from faceledger.vision.face import BoundingBox

# the longest side of a crop in pixels: enough to tell faces apart on a screen, small enough
# (4-8 KB as JPEG) that keeping one per indexed face costs little
CROP_SIZE = 160
# the crop spans this many times the detector's box, so that hair, ears and chin are in it
CROP_MARGIN = 1.6
CROP_JPEG_QUALITY = 85


def face_crop(pixels: np.ndarray, box: BoundingBox) -> bytes:
    """A JPEG of the face in ``box`` (pixels of the RGB image ``pixels``): a square around the
    box's centre, ``CROP_MARGIN`` times its longer side, cut at the image's edges, scaled down to
    at most ``CROP_SIZE`` pixels a side."""
    height, width = pixels.shape[:2]
    side = max(box.width, box.height) * CROP_MARGIN
    centre_x, centre_y = box.left + box.width / 2, box.top + box.height / 2
    left = int(max(0, round(centre_x - side / 2)))
    top = int(max(0, round(centre_y - side / 2)))
    right = int(min(width, round(centre_x + side / 2)))
    bottom = int(min(height, round(centre_y + side / 2)))
    if right <= left or bottom <= top:  # a box wholly outside the frame: the nearest pixel
        left, top = min(max(left, 0), width - 1), min(max(top, 0), height - 1)
        right, bottom = left + 1, top + 1
    crop = Image.fromarray(np.ascontiguousarray(pixels[top:bottom, left:right]))
    crop.thumbnail((CROP_SIZE, CROP_SIZE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    out = io.BytesIO()
    crop.save(out, format="JPEG", quality=CROP_JPEG_QUALITY)
    return out.getvalue()
