"""Biometric error metrics, on comparison scores where higher means more alike.

Vocabulary (ISO/IEC 19795-1 and NIST FRVT):

- a *mated* comparison is of two images of the same person, a *non-mated* one of two people;
- at threshold ``t`` a comparison is a match when ``score >= t``;
- FMR (false match rate): share of non-mated comparisons that match;
- FNMR (false non-match rate): share of mated comparisons that do not match; TAR = 1 - FNMR;
- in 1:N search, FPIR (false positive identification rate): share of non-mated searches that
  return any candidate at or above ``t``; FNIR: share of mated searches whose mate is not the
  top candidate at or above ``t``.

Confidence intervals are Wilson score intervals for a binomial proportion. Comparisons that
share images are not independent, so these intervals are narrower than the truth; they bound
sampling error of the comparisons, not of the people.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Rate:
    """``errors`` out of ``trials``, with a 95% Wilson interval."""

    errors: int
    trials: int

    @property
    def value(self) -> float:
        return self.errors / self.trials if self.trials else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.errors, self.trials)

    def as_dict(self) -> dict[str, float | int]:
        low, high = self.interval
        return {"value": self.value, "low": low, "high": high, "errors": self.errors, "trials": self.trials}


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of ``successes / trials`` (``(nan, nan)`` for no trials)."""
    if trials == 0:
        return (float("nan"), float("nan"))
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def false_match_rate(nonmated: np.ndarray, threshold: float) -> Rate:
    return Rate(int(np.count_nonzero(nonmated >= threshold)), len(nonmated))


def false_non_match_rate(mated: np.ndarray, threshold: float) -> Rate:
    return Rate(int(np.count_nonzero(mated < threshold)), len(mated))


@dataclass(frozen=True)
class Curve:
    """Error trade-off over thresholds (ascending): ``fmr[i]`` and ``fnmr[i]`` at ``thresholds[i]``."""

    thresholds: np.ndarray
    fmr: np.ndarray
    fnmr: np.ndarray


def error_curve(mated: np.ndarray, nonmated: np.ndarray) -> Curve:
    """FMR and FNMR at every distinct score (each a threshold), exactly."""
    thresholds = np.unique(np.concatenate([mated, nonmated]))
    mated_sorted, nonmated_sorted = np.sort(mated), np.sort(nonmated)
    # matches at t are scores >= t: count those strictly below t and subtract
    fmr = 1.0 - np.searchsorted(nonmated_sorted, thresholds, side="left") / len(nonmated)
    fnmr = np.searchsorted(mated_sorted, thresholds, side="left") / len(mated)
    return Curve(thresholds, fmr, fnmr)


def equal_error_rate(mated: np.ndarray, nonmated: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): where FMR and FNMR cross (the mean of the two at the closest point)."""
    curve = error_curve(mated, nonmated)
    i = int(np.argmin(np.abs(curve.fmr - curve.fnmr)))
    return float((curve.fmr[i] + curve.fnmr[i]) / 2), float(curve.thresholds[i])


def threshold_at_fmr(nonmated: np.ndarray, target: float) -> float:
    """The lowest threshold whose FMR is at most ``target``.

    With ``n`` non-mated scores, FMR moves in steps of ``1/n``: below ``1/n`` the answer is just
    above the highest non-mated score, and the measured FMR there is 0 of ``n``.
    """
    ordered = np.sort(nonmated)[::-1]
    allowed = int(math.floor(target * len(ordered) + 1e-9))  # non-mated scores that may match
    if allowed >= len(ordered):
        return float(ordered[-1])
    return float(np.nextafter(ordered[allowed], np.inf))


@dataclass(frozen=True)
class OperatingPoint:
    target_fmr: float
    threshold: float
    fmr: Rate
    tar: float
    fnmr: Rate
    resolvable: bool  # False when target_fmr < 1/non-mated count: the figure rests on 0 errors

    def as_dict(self) -> dict[str, object]:
        return {
            "target_fmr": self.target_fmr,
            "threshold": self.threshold,
            "fmr": self.fmr.as_dict(),
            "tar": self.tar,
            "fnmr": self.fnmr.as_dict(),
            "resolvable": self.resolvable,
        }


def tar_at_fmr(mated: np.ndarray, nonmated: np.ndarray, target: float) -> OperatingPoint:
    threshold = threshold_at_fmr(nonmated, target)
    fnmr = false_non_match_rate(mated, threshold)
    return OperatingPoint(
        target_fmr=target,
        threshold=threshold,
        fmr=false_match_rate(nonmated, threshold),
        tar=1.0 - fnmr.value,
        fnmr=fnmr,
        resolvable=target * len(nonmated) >= 1.0,
    )


def best_accuracy_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the highest verification accuracy on these labelled pairs (ties: the
    midpoint between the two scores around the best cut, so it is not tuned to one sample)."""
    order = np.argsort(scores)
    sorted_scores, sorted_same = scores[order], same[order].astype(np.int64)
    # cut k: the first k pairs (lowest scores) are called non-matches, the rest matches
    mated_below = np.concatenate([[0], np.cumsum(sorted_same)])
    nonmated_below = np.arange(len(scores) + 1) - mated_below
    correct = nonmated_below + (mated_below[-1] - mated_below)
    k = int(np.argmax(correct))
    if k == 0:
        return float(sorted_scores[0])
    if k == len(scores):
        return float(np.nextafter(sorted_scores[-1], np.inf))
    return float((sorted_scores[k - 1] + sorted_scores[k]) / 2)


def accuracy(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(np.mean((scores >= threshold) == same))


@dataclass(frozen=True)
class FoldResult:
    fold: int
    threshold: float
    accuracy: float


def k_fold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> list[FoldResult]:
    """The LFW protocol: for each fold, the threshold is chosen on all other folds and the
    accuracy measured on this fold."""
    results = []
    for fold in np.unique(folds):
        train = folds != fold
        threshold = best_accuracy_threshold(scores[train], same[train])
        results.append(FoldResult(int(fold), threshold, accuracy(scores[~train], same[~train], threshold)))
    return results


@dataclass(frozen=True)
class OpenSetResult:
    """Open-set 1:N search outcome of each probe against a gallery."""

    mated_top_score: np.ndarray  # best score of each mated probe's search (any gallery entry)
    mated_top_is_mate: np.ndarray  # whether that best entry is the probe's mate
    nonmated_top_score: np.ndarray  # best score of each non-mated probe's search

    def fpir(self, threshold: float) -> Rate:
        return Rate(int(np.count_nonzero(self.nonmated_top_score >= threshold)), len(self.nonmated_top_score))

    def fnir(self, threshold: float) -> Rate:
        hit = self.mated_top_is_mate & (self.mated_top_score >= threshold)
        return Rate(int(np.count_nonzero(~hit)), len(hit))

    @property
    def rank1_hit_rate(self) -> float:
        return float(np.mean(self.mated_top_is_mate))

    def threshold_at_fpir(self, target: float) -> float:
        return threshold_at_fmr(self.nonmated_top_score, target)


def open_set_search(
    gallery: np.ndarray,
    gallery_ids: np.ndarray,
    mated_probes: np.ndarray,
    mated_ids: np.ndarray,
    nonmated_probes: np.ndarray,
    score: callable,  # type: ignore[valid-type]
) -> OpenSetResult:
    """Search each probe row against every gallery row with ``score(probes, gallery)`` (a
    probes x gallery matrix, higher = more alike) and keep each search's top candidate.
    A probe row of NaN (no face found) returns no candidate: score -inf."""

    def top(probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        best_score = np.full(len(probes), -np.inf)
        best_index = np.full(len(probes), -1, dtype=np.int64)
        for start in range(0, len(probes), 2048):
            block = score(probes[start : start + 2048], gallery)
            block = np.where(np.isnan(block), -np.inf, block)
            index = np.argmax(block, axis=1)
            best_index[start : start + 2048] = index
            best_score[start : start + 2048] = block[np.arange(len(index)), index]
        return best_score, best_index

    mated_score, mated_index = top(mated_probes)
    nonmated_score, _ = top(nonmated_probes)
    is_mate = (gallery_ids[np.maximum(mated_index, 0)] == mated_ids) & np.isfinite(mated_score)
    return OpenSetResult(mated_score, is_mate, nonmated_score)
