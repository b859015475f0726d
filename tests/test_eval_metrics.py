"""Metric code checked against values computed by hand on small synthetic score sets."""

from __future__ import annotations

import numpy as np
import pytest

from faceledger.eval.metrics import (
    Rate,
    accuracy,
    best_accuracy_threshold,
    equal_error_rate,
    error_curve,
    false_match_rate,
    false_non_match_rate,
    k_fold_accuracy,
    open_set_search,
    tar_at_fmr,
    threshold_at_fmr,
    wilson_interval,
)

MATED = np.array([0.9, 0.8, 0.7, 0.4])
NONMATED = np.array([0.1, 0.2, 0.3, 0.75, 0.5])


def test_rates_at_a_threshold() -> None:
    assert false_match_rate(NONMATED, 0.6) == Rate(1, 5)
    assert false_non_match_rate(MATED, 0.6) == Rate(1, 4)
    assert false_match_rate(NONMATED, 0.75).value == 0.2  # ties match: score >= threshold
    assert false_non_match_rate(MATED, 0.4).value == 0.0


def test_error_curve_points() -> None:
    curve = error_curve(MATED, NONMATED)
    assert curve.thresholds.tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.75, 0.8, 0.9]
    assert curve.fmr.tolist() == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.4, 0.2, 0.2, 0.0, 0.0])
    assert curve.fnmr.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.25, 0.25, 0.5, 0.5, 0.75])


def test_equal_error_rate() -> None:
    eer, threshold = equal_error_rate(MATED, NONMATED)
    assert eer == pytest.approx(0.225)
    assert threshold == 0.7  # FMR 0.2, FNMR 0.25: the closest pair


def test_threshold_and_tar_at_fmr() -> None:
    threshold = threshold_at_fmr(NONMATED, 0.2)
    assert 0.5 < threshold < 0.5 + 1e-9
    point = tar_at_fmr(MATED, NONMATED, 0.2)
    assert point.fmr == Rate(1, 5) and point.tar == 0.75 and point.resolvable
    strict = tar_at_fmr(MATED, NONMATED, 0.1)  # below 1/5: only "no non-mated match" can do
    assert strict.fmr == Rate(0, 5) and strict.tar == 0.5 and not strict.resolvable
    assert threshold_at_fmr(NONMATED, 1.0) == 0.1


def test_wilson_interval_matches_published_values() -> None:
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(1, 1_000_000)[1] < 6e-6
    assert all(np.isnan(wilson_interval(0, 0)))


def test_best_accuracy_threshold_and_accuracy() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.75, 0.8, 0.9])
    same = np.array([0, 0, 0, 1, 0, 1, 0, 1, 1], dtype=bool)
    threshold = best_accuracy_threshold(scores, same)
    assert threshold == pytest.approx(0.35)
    assert accuracy(scores, same, threshold) == pytest.approx(7 / 9)


def test_ten_fold_split_picks_each_threshold_on_the_other_folds() -> None:
    scores = np.array([0.2, 0.6, 0.5, 0.9])
    same = np.array([False, True, False, True])
    folds = np.array([0, 0, 1, 1])
    results = k_fold_accuracy(scores, same, folds)
    assert [(r.fold, r.threshold, r.accuracy) for r in results] == [
        (0, pytest.approx(0.7), 0.5),  # threshold learnt on fold 1 only
        (1, pytest.approx(0.4), 0.5),  # threshold learnt on fold 0 only
    ]


def test_open_set_search_fnir_fpir_and_rank1() -> None:
    gallery = np.array([[1.0, 0.0], [0.0, 1.0]])
    result = open_set_search(
        gallery,
        np.array(["A", "B"]),
        np.array([[0.9, 0.1], [0.2, 0.8]]),
        np.array(["A", "A"]),
        np.array([[0.6, 0.5], [np.nan, np.nan]]),
        score=lambda probes, g: probes @ g.T,
    )
    assert result.rank1_hit_rate == 0.5
    assert result.fpir(0.7) == Rate(0, 2) and result.fpir(0.5) == Rate(1, 2)
    assert result.fnir(0.85) == Rate(1, 2) and result.fnir(0.95) == Rate(2, 2)
    assert 0.6 < result.threshold_at_fpir(0.0) < 0.6 + 1e-9


def test_flip_averaged_templates_are_kept_unit_length_for_models_of_unit_templates() -> None:
    """The service stores unit(mean) for such models: evaluations must measure that, or their
    tables read high (by 0.2-0.3 Similarity for faceres)."""
    from faceledger.eval.embeddings import EmbeddedSet
    from faceledger.vision.similarity import SimilarityScale

    rng = np.random.default_rng(3)
    unit = rng.normal(size=(4, 8))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    mirrored = unit + rng.normal(scale=0.3, size=unit.shape)
    mirrored /= np.linalg.norm(mirrored, axis=1, keepdims=True)
    scale = SimilarityScale(0.6, 80.0)
    found = np.ones(4, dtype=bool)
    averaged = EmbeddedSet(["a", "b", "c", "d"], unit, mirrored, found, scale).templates(flip=True)
    np.testing.assert_allclose(np.linalg.norm(averaged, axis=1), 1.0, atol=1e-9)
    dlib_like = EmbeddedSet(["a", "b", "c", "d"], unit * 1.4, mirrored * 1.4, found, scale).templates(flip=True)
    np.testing.assert_allclose(dlib_like, (unit * 1.4 + mirrored * 1.4) / 2.0)  # dlib's are not unit: as before
