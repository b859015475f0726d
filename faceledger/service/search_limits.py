"""The one place a search's threshold and result cap are decided.

A search's threshold is, in order: what the caller asked (validated), else the collection's
calibrated safe threshold (FMR <= 1e-4 with 95% confidence on its own calibration, or on the
face model's shipped LFW table); then never below the collection policy's floor. Its result cap is what the
caller asked, never above the policy's cap. A collection that demands a declared purpose and
case refuses searches without them.
"""

from __future__ import annotations

import json

from faceledger.errors import AccessDeniedException, InvalidParameterException
from faceledger.service import validation
from faceledger.service.context import current_context
from faceledger.service.validation import MAX_PAGE_SIZE
from faceledger.store import Store
from faceledger.vision.calibration import ThresholdTable, safe_search_threshold
from faceledger.vision.model import FaceModel

DEFAULT_MAX_RESULTS = 100


class SearchLimits:
    def __init__(self, store: Store, model: FaceModel) -> None:
        self._store = store
        self._model = model

    def threshold_table(self, collection_id: str) -> ThresholdTable:
        """The collection's own calibration (``faceledger calibrate``), else the one shipped with
        the face model."""
        stored = self._store.threshold_table(collection_id)
        return ThresholdTable.from_dict(json.loads(stored)) if stored is not None else self._model.threshold_table()

    def default_threshold(self, collection_id: str) -> float:
        """Similarity whose measured false-match rate is at most 1e-4 (95% upper bound) on the
        collection's calibration data."""
        return safe_search_threshold(self.threshold_table(collection_id))

    def resolve(
        self, collection_id: str, threshold: float | None, max_results: int | None, name: str
    ) -> tuple[float, int]:
        """(threshold, result cap) for one search; ``name`` is the request member of the threshold
        (FaceMatchThreshold, UserMatchThreshold) for error messages."""
        policy = self._store.policies.policy(collection_id)
        context = current_context()
        if policy.purpose_required and not (context.purpose and context.case_ref):
            raise AccessDeniedException(
                f"Collection {collection_id!r} requires a declared purpose and case reference for searches "
                "(HTTP headers X-Faceledger-Purpose and X-Faceledger-Case; CLI --purpose and --case)."
            )
        resolved = self.default_threshold(collection_id) if threshold is None else validation.percent(threshold, name)
        if policy.min_threshold is not None:
            if threshold is not None and threshold < policy.min_threshold:
                raise InvalidParameterException(
                    f"{name} {threshold:g} is below collection {collection_id!r}'s floor of {policy.min_threshold:g}."
                )
            resolved = max(resolved, policy.min_threshold)
        cap = policy.max_results or MAX_PAGE_SIZE
        if max_results is not None and max_results > cap:
            raise InvalidParameterException(f"Collection {collection_id!r} returns at most {cap} results.")
        return resolved, max_results if max_results is not None else min(cap, DEFAULT_MAX_RESULTS)
