"""Evaluation protocols over embedded image sets: LFW 10-fold verification, all-pairs error
counts (for calibration and per-group rates), and open-set 1:N identification.

Scores are the embedding model's Similarity *without* the clamp to [0, 100] (so that strangers
far apart still rank), e.g. ``100 - 20 * (d / 0.6)^2`` for dlib's ResNet. An image where no face
was found yields no template: every comparison with it scores ``-inf``, a non-match, so it counts
as a false non-match when mated and is never dropped from the denominators.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from faceledger.eval import metrics
from faceledger.eval.datasets import Pair
from faceledger.eval.embeddings import EmbeddedSet
from faceledger.vision.calibration import RAW_SCORING, ThresholdRow, ThresholdTable
from faceledger.vision.similarity import SimilarityScale

TARGET_FMRS = (1e-2, 1e-3, 1e-4)


def similarity_matrix(a: np.ndarray, b: np.ndarray, scale: SimilarityScale) -> np.ndarray:
    """Unclamped similarity of every row of ``a`` with every row of ``b``; -inf where either
    row is missing (NaN: no face)."""
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    squared = (a64 * a64).sum(1)[:, None] + (b64 * b64).sum(1)[None, :] - 2.0 * a64 @ b64.T
    scores = scale.unclamped(np.maximum(squared, 0.0))
    return np.where(np.isnan(scores), -np.inf, scores)


def pair_scores(templates: np.ndarray, first: np.ndarray, second: np.ndarray, scale: SimilarityScale) -> np.ndarray:
    diff = templates[first].astype(np.float64) - templates[second].astype(np.float64)
    scores = scale.unclamped(np.einsum("ij,ij->i", diff, diff))
    return np.where(np.isnan(scores), -np.inf, scores)


@dataclass
class VerificationResult:
    folds: list[metrics.FoldResult]
    scores: np.ndarray
    same: np.ndarray
    failures_to_acquire: list[str]
    pairs_with_fta: int

    @property
    def accuracy_mean(self) -> float:
        return float(np.mean([f.accuracy for f in self.folds]))

    @property
    def accuracy_std(self) -> float:
        return float(np.std([f.accuracy for f in self.folds]))

    def operating_points(self) -> list[metrics.OperatingPoint]:
        mated, nonmated = self.scores[self.same], self.scores[~self.same]
        return [metrics.tar_at_fmr(mated, nonmated, target) for target in TARGET_FMRS]


def verification(embedded: EmbeddedSet, pairs: Sequence[Pair], *, flip: bool) -> VerificationResult:
    """LFW's protocol: per fold, the accuracy-maximising threshold of the other folds."""
    templates = embedded.templates(flip)
    first = embedded.rows([p.first for p in pairs])
    second = embedded.rows([p.second for p in pairs])
    scores = pair_scores(templates, first, second, embedded.similarity)
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    missing = set(embedded.failures_to_acquire)
    return VerificationResult(
        folds=metrics.k_fold_accuracy(scores, same, folds),
        scores=scores,
        same=same,
        failures_to_acquire=sorted(missing & {p.first for p in pairs} | missing & {p.second for p in pairs}),
        pairs_with_fta=sum(p.first in missing or p.second in missing for p in pairs),
    )


# Similarity is binned at 0.01 from -150 (far strangers) to 100; lower scores share the first bin.
BIN_LOW, BIN_STEP, BIN_COUNT = -150.0, 0.01, 25_001


@dataclass
class PairCounts:
    """Counts of all mated and non-mated comparisons by score bin (exact at bin edges).
    ``*_missing`` count comparisons involving an image with no face (always non-matches)."""

    mated: np.ndarray = field(default_factory=lambda: np.zeros(BIN_COUNT, dtype=np.int64))
    nonmated: np.ndarray = field(default_factory=lambda: np.zeros(BIN_COUNT, dtype=np.int64))
    mated_missing: int = 0
    nonmated_missing: int = 0

    def add(self, scores: np.ndarray, same: np.ndarray) -> None:
        finite = np.isfinite(scores)
        bins = np.clip(np.floor((scores[finite] - BIN_LOW) / BIN_STEP + 1e-9).astype(np.int64), 0, BIN_COUNT - 1)
        same_finite = same[finite]
        self.mated += np.bincount(bins[same_finite], minlength=BIN_COUNT)
        self.nonmated += np.bincount(bins[~same_finite], minlength=BIN_COUNT)
        self.mated_missing += int(np.count_nonzero(~finite & same))
        self.nonmated_missing += int(np.count_nonzero(~finite & ~same))

    @property
    def mated_total(self) -> int:
        return int(self.mated.sum()) + self.mated_missing

    @property
    def nonmated_total(self) -> int:
        return int(self.nonmated.sum()) + self.nonmated_missing

    def _bin(self, threshold: float) -> int:
        return int(np.clip(round((threshold - BIN_LOW) / BIN_STEP), 0, BIN_COUNT))

    def fmr(self, threshold: float) -> metrics.Rate:
        return metrics.Rate(int(self.nonmated[self._bin(threshold) :].sum()), self.nonmated_total)

    def fnmr(self, threshold: float) -> metrics.Rate:
        return metrics.Rate(int(self.mated[: self._bin(threshold)].sum()) + self.mated_missing, self.mated_total)

    def threshold_at_fmr(self, target: float) -> float:
        """The lowest bin edge whose FMR is at most ``target``."""
        matches_at_or_above = np.cumsum(self.nonmated[::-1])[::-1]  # index k: scores >= edge k
        allowed = target * self.nonmated_total
        k = (
            int(np.argmax(matches_at_or_above <= allowed + 1e-9))
            if (matches_at_or_above <= allowed + 1e-9).any()
            else BIN_COUNT
        )
        return BIN_LOW + k * BIN_STEP

    def curve(self) -> metrics.Curve:
        edges = BIN_LOW + np.arange(BIN_COUNT) * BIN_STEP
        fmr = np.cumsum(self.nonmated[::-1])[::-1] / self.nonmated_total
        fnmr = (np.concatenate([[0], np.cumsum(self.mated)[:-1]]) + self.mated_missing) / self.mated_total
        return metrics.Curve(edges, fmr, fnmr)

    def threshold_table(self, source: str, thresholds: Sequence[float], scoring: str = RAW_SCORING) -> ThresholdTable:
        rows = []
        for threshold in thresholds:
            fmr, fnmr = self.fmr(threshold), self.fnmr(threshold)
            (fmr_low, fmr_high), (fnmr_low, fnmr_high) = fmr.interval, fnmr.interval
            rows.append(
                ThresholdRow(
                    round(threshold, 4),
                    fmr.value,
                    fmr_low,
                    fmr_high,
                    fmr.errors,
                    fnmr.value,
                    fnmr_low,
                    fnmr_high,
                    fnmr.errors,
                )
            )
        return ThresholdTable(source, self.mated_total, self.nonmated_total, tuple(rows), scoring=scoring)


TABLE_THRESHOLDS = tuple(50.0 + 0.5 * n for n in range(101))  # 50, 50.5, ..., 100


def all_pairs(
    embedded: EmbeddedSet,
    identities: Sequence[str],
    *,
    flip: bool,
    groups: dict[str, str] | None = None,
    block: int = 1024,
    score: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[PairCounts, dict[str, PairCounts]]:
    """Every comparison between two different images of the set, counted by score, overall and
    (with ``groups``, identity -> group) within each group: both images' people in the group.
    ``score(a, b)``: the score matrix (default: the model's Similarity)."""
    templates = embedded.templates(flip)
    score = score or partial(similarity_matrix, scale=embedded.similarity)
    labels = np.asarray(identities)
    if len(labels) != len(templates):
        raise ValueError("all_pairs needs one identity per embedded image, in the same order")
    group_of = np.array([groups.get(identity, "") for identity in labels]) if groups else None
    overall = PairCounts()
    per_group = {g: PairCounts() for g in sorted(set(groups.values()))} if groups else {}
    n = len(templates)
    for start in range(0, n, block):
        stop = min(n, start + block)
        scores = score(templates[start:stop], templates[start:])
        upper = np.arange(start, stop)[:, None] < np.arange(start, n)[None, :]  # each pair once
        same = labels[start:stop, None] == labels[None, start:]
        overall.add(scores[upper], same[upper])
        if group_of is not None:
            for group, counts in per_group.items():
                inside = upper & (group_of[start:stop, None] == group) & (group_of[None, start:] == group)
                counts.add(scores[inside], same[inside])
    return overall, per_group


@dataclass
class IdentificationResult:
    search: metrics.OpenSetResult
    gallery_size: int
    mated_probes: int
    nonmated_probes: int


def identification(
    embedded: EmbeddedSet,
    identities: Sequence[str],
    *,
    flip: bool,
    score: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> IdentificationResult:
    """Open-set 1:N: people with two or more images are enrolled with one image each (their first
    with a face); their other images are mated probes; everyone with a single image is never
    enrolled and their images are non-mated probes. ``score(probes, gallery)``: the score matrix
    (default: the model's Similarity), e.g. a normalised score under study."""
    templates = embedded.templates(flip)
    by_person: dict[str, list[int]] = {}
    for row, identity in enumerate(identities):
        by_person.setdefault(identity, []).append(row)
    gallery_rows, gallery_ids, mated_rows, mated_ids, nonmated_rows = [], [], [], [], []
    for identity, rows in by_person.items():
        if len(rows) == 1:
            nonmated_rows.extend(rows)
            continue
        with_face = [r for r in rows if embedded.found[r]]
        if not with_face:  # nobody to enrol: their images still search, as non-mated
            nonmated_rows.extend(rows)
            continue
        enrolled = with_face[0]
        gallery_rows.append(enrolled)
        gallery_ids.append(identity)
        for r in rows:
            if r != enrolled:
                mated_rows.append(r)
                mated_ids.append(identity)
    search = metrics.open_set_search(
        templates[gallery_rows],
        np.array(gallery_ids),
        templates[mated_rows],
        np.array(mated_ids),
        templates[nonmated_rows],
        score or partial(similarity_matrix, scale=embedded.similarity),
    )
    return IdentificationResult(search, len(gallery_rows), len(mated_rows), len(nonmated_rows))
