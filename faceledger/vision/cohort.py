"""Cohort score normalisation (adaptive symmetric normalisation, AS-norm).

A raw cosine says how alike two templates are; how surprising that is depends on the faces. Some
templates lie close to many strangers (a common face type, a blurred photo) and score high with
everyone. AS-norm measures each side against a *cohort*: faces of people who are neither searched
for nor in the gallery. With ``mu_x`` and ``sd_x`` the mean and standard deviation of template x's
``COHORT_TOP`` highest cosines against the cohort, a pair (a, b) with cosine s scores

    z = 0.5 * ((s - mu_a) / sd_a + (s - mu_b) / sd_b)

how many of its own strangers' spreads the pair stands above them, from each side. On LFW, held
out (benchmarks/open_set_lfw.py), it lowers the fusion's FNIR at FPIR 0.01 from 24.3/21.8% to
16.1/13.3% on two identity-disjoint halves.

Similarity on this scale is ``COHORT_SIMILARITY_AT_ZERO + COHORT_SIMILARITY_PER_Z * z`` (clamped to
0-100): z 0 (the pair is as alike as each side's closest strangers) reports 60, z 5 reports 80 and
z 10 or more 100. Like every Similarity it is no probability: what a threshold means in errors is
its measured table, one measured *with a cohort* (a table of raw Similarity does not price it).

Templates are compared by cosine (each made unit length first); the vector index's squared
distance gives it directly for unit-vector models (fused models, faceres, operators' ONNX models).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import faiss
import numpy as np

from faceledger.vision.calibration import ThresholdTable
from faceledger.vision.onnx_model import unit_length

COHORT_TOP = 50  # K: chosen on LFW held out (any images, 3,200 faces: best on both halves' quarters)
# The fewest faces a cohort may have. The statistics of a cohort's top K move with its size: at the
# thresholds of a table measured with 3,200 faces, 800 gave 2.9x its FMR, 1,600 1.7x, 6,400 0.6x
# (benchmarks/asnorm_table.py), so a table states the cohort size it holds for (cohort_faces), and
# a smaller cohort needs a table measured with it (faceledger calibrate).
MIN_COHORT_FACES = 800
COHORT_SIMILARITY_AT_ZERO = 60.0
COHORT_SIMILARITY_PER_Z = 4.0
SCORING = f"as-norm(top {COHORT_TOP})"  # the scoring a threshold table measured with a cohort names
# A search rescores this many of the raw index's nearest faces (or the caller's MaxFaces, if more):
# AS-norm reorders faces, but one far down the raw order is rarely above a threshold after it
# (benchmarks/asnorm_table.py: rescoring only the raw top 50 lost no search on LFW).
COHORT_CANDIDATES = 200
# The table measured for the shipped fusion scored with a cohort (benchmarks/asnorm_table.py).
DLIB_FACERES_COHORT_TABLE = Path(__file__).with_name("dlib_faceres_asnorm_lfw_thresholds.json")
SHIPPED_COHORT_TABLES: dict[str, Path] = {
    "fusion[dlib-resnet-v1*0.812,faceres-68d563b384935331.9a9f58e7*0.188]@0.84+flip": DLIB_FACERES_COHORT_TABLE,
}


@cache  # read on every search of a collection with a cohort
def shipped_cohort_table(model_version: str) -> ThresholdTable | None:
    """The AS-norm table measured for exactly this model version, if one ships."""
    path = SHIPPED_COHORT_TABLES.get(model_version)
    return ThresholdTable.load(path) if path is not None and path.exists() else None


def similarity_of_z(z: np.ndarray) -> np.ndarray:
    """Unclamped Similarity of AS-norm scores (evaluations rank far strangers with it)."""
    return COHORT_SIMILARITY_AT_ZERO + COHORT_SIMILARITY_PER_Z * z


def clamped_similarity(z: float) -> float:
    return float(min(100.0, max(0.0, similarity_of_z(z))))


class CohortNorm:
    """A cohort's unit templates, and the statistics and scores AS-norm takes from them."""

    def __init__(self, cohort: np.ndarray, top: int = COHORT_TOP) -> None:
        cohort = np.asarray(cohort, dtype=np.float32)
        if cohort.ndim != 2 or len(cohort) <= top:
            raise ValueError(f"a cohort needs more than {top} templates")
        self.cohort = np.ascontiguousarray(unit_length(cohort))
        self.top = top
        # FAISS, not numpy: a search alternates with the vector index's FAISS calls, and numpy's
        # BLAS threads waiting on FAISS's made the probe's statistics take 3 ms instead of 0.1
        self._index = faiss.IndexFlatIP(self.cohort.shape[1])
        self._index.add(self.cohort)

    def __len__(self) -> int:
        return len(self.cohort)

    def stats(self, templates: np.ndarray) -> np.ndarray:
        """Rows ``(mu, sd)`` of each template's ``top`` highest cosines against the cohort
        (float64; NaN for a NaN template, e.g. an image without a face)."""
        templates = np.asarray(templates, dtype=np.float32).reshape(-1, self.cohort.shape[1])
        out = np.full((len(templates), 2), np.nan)
        present = ~np.isnan(templates).any(axis=1)
        if present.any():
            best, _ = self._index.search(np.ascontiguousarray(unit_length(templates[present])), self.top)
            best = best.astype(np.float64)
            out[present] = np.column_stack([best.mean(axis=1), best.std(axis=1)])
        return out

    def scored_rows(self, templates: np.ndarray) -> np.ndarray:
        """Rows ``[unit template | mu | sd]``, which :func:`scored_similarity` compares."""
        return np.hstack([unit_length(templates).astype(np.float64), self.stats(templates)])


def normalised(cosines: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """AS-norm z of ``cosines[i, j]`` between row i of one side and row j of the other, given each
    side's ``(mu, sd)`` rows ``a`` and ``b``."""
    return 0.5 * ((cosines - a[:, :1]) / a[:, 1:] + (cosines - b[:, 0]) / b[:, 1])


def scored_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Unclamped Similarity of every row of ``a`` with every row of ``b`` (rows from
    :meth:`CohortNorm.scored_rows`); -inf where either row has no template."""
    z = normalised(a[:, :-2] @ b[:, :-2].T, a[:, -2:], b[:, -2:])
    return np.where(np.isnan(z), -np.inf, similarity_of_z(z))
