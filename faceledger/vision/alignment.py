"""Chips cut by a similarity transform that puts a face's five landmarks on a template.

A template lists where dlib's five landmarks (in :class:`~faceledger.vision.face.Landmarks`'
order: the two corners of the eye on the viewer's right, then of the eye on the viewer's left,
then the base of the nose) should fall in a square chip. The rotation, uniform scale and shift that
carry the face's landmarks closest to the template in the least-squares sense (Umeyama's closed
form) cut the chip, with bilinear interpolation and black outside the image, as OpenCV's
``warpAffine`` does (the convention the ArcFace family of networks was trained with).

ArcFace's standard 112x112 template places eye centres, the nose tip and the mouth corners, which
dlib's 5-point model does not locate; :data:`ARCFACE_112` is that template restated for dlib's
five points (where those points fall, on average, in chips ArcFace's template cuts; derived by
benchmarks/arcface_template.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

Points = tuple[tuple[float, float], ...]

# ArcFace's template (insightface's ``arcface_dst``) in its own five points, 112x112 pixels: the
# eye on the viewer's left, the eye on the viewer's right, the nose tip, then the mouth corners
# (viewer's left, viewer's right).
ARCFACE_112_REFERENCE: Points = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)

# The same chip in dlib's five points: their median position over 3,646 LFW faces, each placed
# by BlazeFace's eye centres, nose tip and mouth centre fitted to ArcFace's points (the mouth
# centre to the midpoint of its corners); benchmarks/arcface_template.py. Chips cut by it put
# ArcFace's eye points within 2 pixels of the template on average, the nose tip within 5.
ARCFACE_112: Points = (
    (79.4, 51.0),
    (66.0, 51.7),
    (32.0, 51.7),
    (45.4, 51.9),
    (55.8, 77.7),
)


def fit_similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 matrix ``[s*R | t]`` of the rotation ``R``, scale ``s`` and shift ``t`` that
    minimises the squared distances from ``s*R*source + t`` to ``target`` (Umeyama, 1991).

    ``source`` and ``target``: (N, 2) points, N >= 2, not all equal.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or len(source) < 2:
        raise ValueError("fit_similarity needs two equal (N, 2) point arrays with N >= 2")
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    source_variance = (source_centred**2).sum() / len(source)
    if source_variance == 0:
        raise ValueError("fit_similarity needs source points that are not all equal")
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    # A reflection would fit better only for mirrored landmarks; a similarity never mirrors.
    sign = np.diag([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rotation = u @ sign @ vt
    scale = float(np.trace(np.diag(singular) @ sign)) / source_variance
    shift = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, shift[:, None]])


def warp_chip(pixels: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` x 3 ``uint8`` chip whose pixel (x, y) is the image point that
    ``matrix`` (image pixels to chip pixels, 2x3) carries there; bilinear, black outside.

    Coordinates count pixel centres from 0, as OpenCV's do; PIL counts pixel edges, hence the
    half-pixel shifts.
    """
    forward = np.vstack([np.asarray(matrix, dtype=np.float64), [0.0, 0.0, 1.0]])
    to_edges = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    from_edges = np.array([[1.0, 0.0, -0.5], [0.0, 1.0, -0.5], [0.0, 0.0, 1.0]])
    # PIL asks, for each chip point, which image point to sample: the inverse map.
    inverse = np.linalg.inv(to_edges @ forward @ from_edges)
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    chip = image.transform((size, size), Image.Transform.AFFINE, tuple(inverse[:2].ravel()), Image.Resampling.BILINEAR)
    return np.asarray(chip.convert("RGB"))


def template_chip(
    pixels: np.ndarray, landmarks: Sequence[tuple[float, float]], template: Points, size: int
) -> np.ndarray:
    """The chip of an RGB ``uint8`` image in which ``landmarks`` (image pixels) best land on
    ``template`` (chip pixels of a ``size`` x ``size`` chip)."""
    return warp_chip(pixels, fit_similarity(np.asarray(landmarks), np.asarray(template)), size)


def scaled(template: Points, factor: float) -> Points:
    """``template`` for a chip ``factor`` times as large (pixel centres scale about the corner
    of the first pixel, as resizing the chip would move them)."""
    return tuple(((x + 0.5) * factor - 0.5, (y + 0.5) * factor - 0.5) for x, y in template)
