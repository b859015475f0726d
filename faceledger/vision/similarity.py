"""What the 0-100 ``Similarity`` means: a face model's map from embedding distance to a score.

A model compares faces by the Euclidean distance ``d`` between their embeddings. Its
:class:`SimilarityScale` names one reference distance ``d0``, the model's own decision threshold,
and the similarity ``s0`` that distance reports; the score is

    Similarity = clamp(100 - (100 - s0) * (d / d0) ** 2, 0, 100)

For dlib's ResNet (vision/model.py) ``d0 = 0.6``, the threshold dlib published with those weights
(99.38% on LFW verification), and ``s0 = 80``, the default FaceMatchThreshold and
SimilarityThreshold of Rekognition; so a client that keeps Rekognition's defaults gets dlib's own
decision rule. Then ``d = 0`` (identical vectors) is 100, ``d = 0.6`` is 80, ``d >= 1.34`` is 0.

The map is linear in squared distance (the quantity FAISS computes) and strictly decreasing in
``d`` until it reaches 0, so thresholds and rankings on Similarity are thresholds and rankings on
distance. Similarity is **not** a probability that two faces are the same person: what a threshold
means in errors is the model's measured calibration (vision/calibration.py; ``faceledger
thresholds`` prints it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SimilarityScale:
    """``reference_distance`` (embedding units) reports ``reference_similarity`` (0-100)."""

    reference_distance: float
    reference_similarity: float

    @classmethod
    def for_cosine(cls, reference_cosine: float, reference_similarity: float = 80.0) -> SimilarityScale:
        """The scale of a model whose templates are unit vectors, on which the cosine
        ``reference_cosine`` reports ``reference_similarity`` (squared distance = 2 - 2 cosine, so
        Similarity is linear in the cosine)."""
        return cls(math.sqrt(2.0 - 2.0 * reference_cosine), reference_similarity)

    @property
    def slope(self) -> float:
        """Similarity lost per unit of squared distance."""
        return (100.0 - self.reference_similarity) / self.reference_distance**2

    def unclamped(self, squared_distance: np.ndarray) -> np.ndarray:
        """The score before the clamp to [0, 100], elementwise (evaluations rank far strangers
        with it)."""
        return 100.0 - self.slope * squared_distance

    def from_squared_distance(self, squared_distance: float) -> float:
        return float(min(100.0, max(0.0, 100.0 - self.slope * squared_distance)))

    def from_distance(self, distance: float) -> float:
        return self.from_squared_distance(distance * distance)

    def max_squared_distance(self, similarity_threshold: float) -> float:
        """The largest squared distance whose similarity is still >= ``similarity_threshold``."""
        return (100.0 - similarity_threshold) / self.slope

    def between(self, a: np.ndarray, b: np.ndarray) -> float:
        """Similarity of two embeddings."""
        diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
        return self.from_squared_distance(float(diff @ diff))
