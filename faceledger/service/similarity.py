"""What the 0-100 ``Similarity`` means, and how it maps to embedding distance.

The embedding compares faces by Euclidean distance ``d`` between 128-d vectors. faceledger reports

    Similarity = clamp(100 - 20 * (d / 0.6) ** 2, 0, 100)

so that:

- ``d = 0`` (identical vectors) is 100;
- ``d = 0.6`` -- the threshold dlib published with these weights, at which they score 99.38% on
  LFW verification -- is **80**, the default FaceMatchThreshold/SimilarityThreshold of
  Rekognition, so a client that keeps Rekognition's defaults gets dlib's own decision rule;
- ``d >= 1.34`` is 0.

The map is linear in squared distance (the quantity FAISS computes) and strictly decreasing in
``d`` up to 1.34, so thresholds and rankings on Similarity are thresholds and rankings on
distance. Similarity is **not** a probability that two faces are the same person; the false-match
rate at each threshold is measured separately (``faceledger thresholds`` once calibration ships).
"""

from __future__ import annotations

import numpy as np

REFERENCE_DISTANCE = 0.6
REFERENCE_SIMILARITY = 80.0
_SLOPE = (100.0 - REFERENCE_SIMILARITY) / REFERENCE_DISTANCE**2  # similarity lost per unit of d^2


def similarity_from_squared_distance(squared_distance: float) -> float:
    return float(min(100.0, max(0.0, 100.0 - _SLOPE * squared_distance)))


def similarity_from_distance(distance: float) -> float:
    return similarity_from_squared_distance(distance * distance)


def max_squared_distance(similarity_threshold: float) -> float:
    """The largest squared distance whose similarity is still >= ``similarity_threshold``."""
    return (100.0 - similarity_threshold) / _SLOPE


def similarity_between(a: np.ndarray, b: np.ndarray) -> float:
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return similarity_from_squared_distance(float(diff @ diff))
