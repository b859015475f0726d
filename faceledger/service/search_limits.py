"""The one place a search's threshold and result cap are decided, and what the threshold means.

A per-comparison false-match rate says little about a search: a threshold with FMR 1e-4 hands
about one false candidate to every search of a 10,000-face collection. So a search's default
threshold is chosen for the collection's size, from a target *false-positive identification
rate* (FPIR: the share of searches for someone not enrolled that return any candidate, 1% by
default): the lowest tabulated threshold at which

    comparisons x FMR_upper(threshold) <= target FPIR

where FMR_upper is the 95% upper bound of the false-match rate measured at that threshold (the
collection's own calibration, else the face model's shipped table) and comparisons is the number
of templates searched times the number of probes. The left side bounds the expected number of
false candidates per search, and so the FPIR (union bound). The default is never below the
per-comparison safe threshold (FMR <= 1e-4, 95% upper bound), so small collections keep today's
default. When no tabulated threshold reaches the target at this size (the calibration holds too
few non-mated pairs to show so small an FMR), the strictest tabulated threshold is used and every
response says that the target is not met: nothing that was not measured is promised.

A collection searched with a cohort (service/cohorts.py) is scored by AS-norm, and priced by a
table measured that way: its own calibration if made with a cohort, else the one shipped for its
model, which holds only for cohorts at least as large as the one it was measured with; without
such a table its searches are refused (UncalibratedModelError), never priced by a raw table.

Then the policy's floor applies, and a caller's own threshold is taken as asked (validated); its
meaning at the collection's size is reported all the same. A collection that demands a declared
purpose and case refuses searches without them. The result cap is what the caller asked, never
above the policy's cap.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faceledger.errors import AccessDeniedException, InvalidParameterException
from faceledger.service import validation
from faceledger.service.context import current_context
from faceledger.service.models import FaceModels
from faceledger.service.validation import MAX_PAGE_SIZE
from faceledger.store import CollectionPolicy, Store
from faceledger.vision.calibration import RAW_SCORING, ThresholdTable, safe_search_threshold
from faceledger.vision.cohort import SCORING, shipped_cohort_table
from faceledger.vision.onnx_model import UncalibratedModelError

DEFAULT_MAX_RESULTS = 100
TARGET_FPIR = 0.01  # at most 1% of searches for someone not enrolled return any candidate


@dataclass(frozen=True)
class ThresholdMeaning:
    """What a threshold means for one search of a collection of a given size.

    ``expected_false_candidates`` is the 95% upper bound of the expected number of candidates of
    other people a search returns (comparisons x FMR upper bound, times the table's transfer
    margin, which ``fmr_upper`` includes); it also bounds the FPIR.
    ``status``: ``WITHIN_TARGET`` (bound <= target FPIR), ``ABOVE_TARGET`` (a threshold asked for,
    or a policy floor, that gives more), ``TARGET_NOT_MEASURABLE`` (no tabulated threshold reaches
    the target at this size), ``NOT_MEASURED`` (the threshold is below the table's range)."""

    threshold: float
    comparisons: int
    fmr: float | None
    fmr_upper: float | None
    expected_false_candidates: float | None
    target_fpir: float
    status: str
    calibration: str
    transfer_margin: float = 1.0
    scoring: str = RAW_SCORING

    def to_response(self) -> dict[str, Any]:
        return {
            "Threshold": self.threshold,
            "TemplatesCompared": self.comparisons,
            "FalseMatchRate": self.fmr,
            "FalseMatchRateUpper95": self.fmr_upper,
            "ExpectedFalseCandidatesUpper95": self.expected_false_candidates,
            "TargetFalsePositiveIdentificationRate": self.target_fpir,
            "Status": self.status,
            "Calibration": self.calibration,
            "TransferMargin": self.transfer_margin,
            "Scoring": self.scoring,
        }

    def ledger_summary(self) -> dict[str, Any]:
        return {
            "Threshold": self.threshold,
            "ExpectedFalseCandidatesUpper95": self.expected_false_candidates,
            "ThresholdStatus": self.status,
            "Scoring": self.scoring,
        }


def fpir_threshold(table: ThresholdTable, comparisons: int, target: float) -> tuple[float, bool]:
    """The lowest tabulated threshold, not below the per-comparison safe one, whose FMR upper
    bound times ``comparisons`` is at most ``target``; and whether one exists (if not: the
    threshold of the smallest FMR upper bound the table shows)."""
    floor = safe_search_threshold(table)
    for row in table.rows:
        if row.threshold >= floor and table.bound(row) * comparisons <= target:
            return row.threshold, True
    strictest = min(table.rows, key=lambda row: (table.bound(row), row.threshold))
    return max(strictest.threshold, floor), False


def threshold_meaning(
    table: ThresholdTable, threshold: float, comparisons: int, target: float, default_met: bool | None
) -> ThresholdMeaning:
    """``default_met``: for a default threshold, whether it met the target (None: asked for)."""
    if threshold < table.rows[0].threshold - 1e-9:
        return ThresholdMeaning(
            threshold,
            comparisons,
            None,
            None,
            None,
            target,
            "NOT_MEASURED",
            table.source,
            table.transfer_margin,
            table.scoring,
        )
    row = table.at(threshold)
    expected = comparisons * table.bound(row)
    if default_met is False:
        status = "TARGET_NOT_MEASURABLE"
    else:
        status = "WITHIN_TARGET" if expected <= target else "ABOVE_TARGET"
    return ThresholdMeaning(
        threshold,
        comparisons,
        row.fmr,
        table.bound(row),
        expected,
        target,
        status,
        table.source,
        table.transfer_margin,
        table.scoring,
    )


def default_meaning(table: ThresholdTable, comparisons: int, target: float = TARGET_FPIR) -> ThresholdMeaning:
    """The default threshold for a search comparing ``comparisons`` templates, and its meaning."""
    default, met = fpir_threshold(table, max(comparisons, 1), target)
    return threshold_meaning(table, default, comparisons, target, met)


class SearchLimits:
    def __init__(self, store: Store, models: FaceModels, target_fpir: float = TARGET_FPIR) -> None:
        self._store = store
        self._models = models
        self.target_fpir = target_fpir

    def threshold_table(self, collection_id: str) -> ThresholdTable:
        """The collection's own calibration (``faceledger calibrate``), else the one shipped with
        the face model; for a collection with a cohort, a table measured with a cohort."""
        cohort_id = self._store.cohort_collection(collection_id)
        stored = self._store.threshold_table(collection_id)
        own = ThresholdTable.from_dict(json.loads(stored)) if stored is not None else None
        if cohort_id is None:
            if own is not None and own.scoring == RAW_SCORING:
                return own
            # an operator's model ships none: UncalibratedModelError until 'faceledger calibrate' stores one
            return self._models.for_collection(collection_id).model.threshold_table()
        version = self._store.face_model_version(collection_id)
        table = own if own is not None and own.scoring == SCORING else shipped_cohort_table(version)
        if table is None:
            raise UncalibratedModelError(
                f"Collection {collection_id!r} is searched with cohort {cohort_id!r}, and no threshold table measured "
                f"with a cohort ships for face model {version}: run 'faceledger calibrate DIR --collection "
                f"{collection_id}' on your own labelled photos (it measures with the cohort), or stop using the "
                f"cohort ('faceledger collection cohort {collection_id} --none')."
            )
        faces = self._store.get_collection(cohort_id).face_count
        if table.cohort_faces is not None and faces < table.cohort_faces:
            raise InvalidParameterException(
                f"Cohort collection {cohort_id!r} holds {faces:,} faces, and the threshold table of {collection_id!r} "
                f"holds only for cohorts of {table.cohort_faces:,} or more (a smaller cohort gives more false matches "
                f"at the same threshold): add faces to the cohort, or calibrate with it ('faceledger calibrate DIR "
                f"--collection {collection_id}')."
            )
        return table

    def default_threshold(self, collection_id: str, comparisons: int | None = None) -> float:
        """The similarity a search of the collection uses when none is asked for, at its current
        size (or at ``comparisons`` templates compared)."""
        if comparisons is None:
            comparisons = self._store.get_collection(collection_id).face_count
        return default_meaning(self.threshold_table(collection_id), comparisons, self.target_fpir).threshold

    def meaning(self, collection_id: str, comparisons: int, threshold: float | None = None) -> ThresholdMeaning:
        """What ``threshold`` (default: the default at this size) means for a search comparing
        ``comparisons`` templates, without the policy's floor."""
        table = self.threshold_table(collection_id)
        if threshold is not None:
            return threshold_meaning(table, threshold, comparisons, self.target_fpir, None)
        return default_meaning(table, comparisons, self.target_fpir)

    def check_purpose(self, collection_id: str, policy: CollectionPolicy | None = None) -> None:
        """Refuse a search without a declared purpose and case where the policy demands them."""
        policy = policy or self._store.policies.policy(collection_id)
        context = current_context()
        if policy.purpose_required and not (context.purpose and context.case_ref):
            raise AccessDeniedException(
                f"Collection {collection_id!r} requires a declared purpose and case reference for searches "
                "(HTTP headers X-Faceledger-Purpose and X-Faceledger-Case; CLI: add --purpose 'WHY' --case REF "
                "to the command, e.g. faceledger search photo.jpg -c COLLECTION --purpose 'WHY' --case REF)."
            )

    def resolve(
        self,
        collection_id: str,
        threshold: float | None,
        max_results: int | None,
        name: str,
        comparisons: Callable[[], int],
    ) -> tuple[ThresholdMeaning, int]:
        """(what the threshold used means, result cap) for one search; ``name`` is the request
        member of the threshold (FaceMatchThreshold, UserMatchThreshold) for error messages;
        ``comparisons`` counts the templates the search will compare (asked only once allowed)."""
        policy = self._store.policies.policy(collection_id)
        self.check_purpose(collection_id, policy)
        if threshold is not None:
            threshold = validation.percent(threshold, name)
            if policy.min_threshold is not None and threshold < policy.min_threshold:
                raise InvalidParameterException(
                    f"{name} {threshold:g} is below collection {collection_id!r}'s floor of {policy.min_threshold:g}."
                )
        cap = policy.max_results or MAX_PAGE_SIZE
        if max_results is not None and max_results > cap:
            raise InvalidParameterException(f"Collection {collection_id!r} returns at most {cap} results.")
        meaning = self.meaning(collection_id, comparisons(), threshold)
        if policy.min_threshold is not None and meaning.threshold < policy.min_threshold:
            meaning = self.meaning(collection_id, meaning.comparisons, policy.min_threshold)
        return meaning, max_results if max_results is not None else min(cap, DEFAULT_MAX_RESULTS)
