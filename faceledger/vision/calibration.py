"""What a similarity threshold means in errors: the calibration table.

A table lists, for similarity thresholds from 50 to 100, the false-match rate (FMR) and the
false-non-match rate (FNMR) measured on a labelled data set, each with a 95% confidence interval
and the number of comparisons behind it. A table holds for one face model only (its embedding and
similarity scale); each model ships one (:meth:`faceledger.vision.model.FaceModel.threshold_table`;
dlib's ResNet's was measured on all pairs of LFW's 13,233 images, see docs/accuracy.md), which
chooses the default search threshold. A user can measure their own with ``faceledger calibrate``
and store it for a collection.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from faceledger.errors import InvalidParameterException

SAFE_FMR = 1e-4  # the default search threshold keeps measured FMR at or below this
RAW_SCORING = "similarity"  # a table of the model's own Similarity (vision/cohort.py names the other)


@dataclass(frozen=True)
class ThresholdRow:
    """Rates at one threshold: ``fmr`` in [``fmr_low``, ``fmr_high``] (95%), likewise FNMR."""

    threshold: float
    fmr: float
    fmr_low: float
    fmr_high: float
    false_matches: int
    fnmr: float
    fnmr_low: float
    fnmr_high: float
    false_non_matches: int


@dataclass(frozen=True)
class ThresholdTable:
    """Rows in ascending threshold order, measured with ``mated`` and ``nonmated`` comparisons.

    ``transfer_margin``: how many times the measured FMR (its 95% upper bound) the table assumes
    on photos unlike those it was measured on, for every promise made from it (:meth:`bound`). 1
    for a table measured on the photos searched (``faceledger calibrate``); a shipped table states
    its own, from how its thresholds transferred to other data (docs/accuracy.md).
    ``scoring``: the score its thresholds are on, the model's Similarity (``RAW_SCORING``) or
    Similarity after cohort normalisation (``vision.cohort.SCORING``); a table prices only searches
    scored the same way. ``cohort_faces`` (AS-norm tables): the size of the cohort it was measured
    with; it holds for cohorts at least that large (a smaller cohort gives more false matches at the
    same threshold: benchmarks/asnorm_table.py).
    """

    source: str
    mated: int
    nonmated: int
    rows: tuple[ThresholdRow, ...]
    transfer_margin: float = 1.0
    scoring: str = RAW_SCORING
    cohort_faces: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ThresholdTable:
        try:
            rows = tuple(sorted((ThresholdRow(**row) for row in data["rows"]), key=lambda r: r.threshold))
            margin = float(data.get("transfer_margin", 1.0))
            scoring = str(data.get("scoring", RAW_SCORING))
            cohort = data.get("cohort_faces")
            cohort = None if cohort is None else int(cohort)
            table = cls(str(data["source"]), int(data["mated"]), int(data["nonmated"]), rows, margin, scoring, cohort)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidParameterException(f"Not a threshold table: {exc}.") from None
        if not rows:
            raise InvalidParameterException("A threshold table needs at least one row.")
        if not margin >= 1.0:  # also NaN
            raise InvalidParameterException("A threshold table's transfer margin is a number >= 1.")
        return table

    @classmethod
    def load(cls, path: Path) -> ThresholdTable:
        return cls.from_dict(json.loads(path.read_text()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "mated": self.mated,
            "nonmated": self.nonmated,
            "rows": [asdict(row) for row in self.rows],
            "transfer_margin": self.transfer_margin,
            "scoring": self.scoring,
            "cohort_faces": self.cohort_faces,
        }

    def bound(self, row: ThresholdRow) -> float:
        """The FMR every promise at ``row`` rests on: its 95% upper bound times the transfer margin."""
        return min(1.0, row.fmr_high * self.transfer_margin)

    def at(self, threshold: float) -> ThresholdRow:
        """The rates that hold at least at ``threshold``: the row of the largest tabulated
        threshold not above it (FMR only falls as the threshold rises, so this never
        understates the false-match rate)."""
        eligible = [row for row in self.rows if row.threshold <= threshold + 1e-9]
        if not eligible:
            raise InvalidParameterException(
                f"Threshold {threshold} is below this table's range (from {self.rows[0].threshold})."
            )
        return eligible[-1]

    def false_match_rate_at(self, similarity: float) -> tuple[float, float] | None:
        """What a score of ``similarity`` means: (the FMR measured at it, :meth:`bound` of it),
        from the row :meth:`at` picks; None below the table's range (not measured)."""
        eligible = [row for row in self.rows if row.threshold <= similarity + 1e-9]
        return (eligible[-1].fmr, self.bound(eligible[-1])) if eligible else None

    def threshold_for_fmr(self, target: float, *, upper_bound: bool = True) -> float:
        """The lowest tabulated threshold whose FMR (by default :meth:`bound`, the upper end of its
        95% interval times the transfer margin, so the claim holds with confidence) is at most
        ``target``."""
        for row in self.rows:
            if (self.bound(row) if upper_bound else row.fmr) <= target:
                return row.threshold
        raise InvalidParameterException(
            f"No threshold in this table reaches FMR {target:g}: too few non-mated comparisons "
            f"({self.nonmated:,}) to show it."
        )


def safe_search_threshold(table: ThresholdTable) -> float:
    """The default FaceMatchThreshold of searches: FMR <= 1e-4 with 95% confidence."""
    return table.threshold_for_fmr(SAFE_FMR)
