"""Cohort collections: searches of a collection scored by AS-norm against another's faces.

An operator who holds faces of people who are never searched for, and who agreed to serve as a
cohort (a consent_required collection, say), names that collection as another collection's
cohort (``PutCollectionCohort``; CLI ``faceledger collection cohort``). Searches of the collection
are then scored as vision/cohort.py describes, and priced by a table measured with a cohort: the
collection's own (``faceledger calibrate`` with the cohort set) or the one shipped for its model,
which holds only for cohorts at least as large as the one it was measured with.

The cohort is derived data: its templates are read from the store when its generation changes
(a face erased from it is gone from the next search), and each gallery face's statistics are
computed when a search first meets it and kept until the cohort changes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from faceledger.errors import InvalidParameterException
from faceledger.index import Neighbour
from faceledger.service import validation
from faceledger.service.results import Reply
from faceledger.service.templates import TemplateVault
from faceledger.store import Store
from faceledger.vision.cohort import MIN_COHORT_FACES, CohortNorm, normalised


@dataclass
class Cohort:
    """A cohort collection at one generation, and what is known of the gallery faces met so far."""

    generation: int
    norm: CohortNorm
    # (collection, seq) -> (mu, sd, template length): kept so that a search meets a face's
    # template only once (the cosine then follows from the index's squared distance)
    gallery: dict[tuple[str, int], tuple[float, float, float]] = field(default_factory=dict)

    def gallery_stats(
        self, collection_id: str, seqs: list[int], templates: Callable[[list[int]], np.ndarray]
    ) -> np.ndarray:
        """Rows ``(mu, sd, |template|)`` of the gallery faces ``seqs``; ``templates(seqs)`` gives
        the templates of faces not met before."""
        missing = [seq for seq in seqs if (collection_id, seq) not in self.gallery]
        if missing:
            vectors = templates(missing)
            lengths = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
            for seq, (mu, sd), length in zip(missing, self.norm.stats(vectors), lengths, strict=True):
                self.gallery[(collection_id, seq)] = (float(mu), float(sd), float(length))
        return np.array([self.gallery[(collection_id, seq)] for seq in seqs]).reshape(-1, 3)

    def scores(
        self,
        collection_id: str,
        probe: np.ndarray,
        neighbours: list[Neighbour],
        templates: Callable[[list[int]], np.ndarray],
    ) -> np.ndarray:
        """AS-norm z of the probe (one row) with each of the index's ``neighbours``."""
        stats = self.gallery_stats(collection_id, [n.seq for n in neighbours], templates)
        squared = np.array([n.squared_distance for n in neighbours])
        length = float(np.sqrt(np.einsum("ij,ij->", probe, probe)))
        # the cosine from the index's (exact) squared distance and the two template lengths; no
        # BLAS here: numpy's BLAS threads alternating with FAISS's cost milliseconds a search
        cosines = (length**2 + stats[:, 2] ** 2 - squared) / (2.0 * length * stats[:, 2])
        return normalised(cosines[None, :], self.norm.stats(probe), stats[:, :2])[0]


class CohortCollections:
    def __init__(self, store: Store, templates: TemplateVault) -> None:
        self._store = store
        self._templates = templates
        self._cohorts: dict[str, Cohort] = {}
        self._lock = threading.Lock()

    def put(self, collection_id: str, cohort_collection_id: str | None) -> Reply:
        """Name (or, with None, stop using) the collection whose faces ``collection_id``'s
        searches are normalised against."""
        self._store.require_collection(collection_id)
        before = self._store.cohort_collection(collection_id)
        if cohort_collection_id is not None:
            validation.collection_id(cohort_collection_id)
            if cohort_collection_id == collection_id:
                raise InvalidParameterException(
                    "A collection cannot be its own cohort: the cohort holds people who are not searched for."
                )
            self._check(
                collection_id, cohort_collection_id, self._store.get_collection(cohort_collection_id).face_count
            )
        self._store.set_cohort_collection(collection_id, cohort_collection_id, time.time())
        response = {
            "CohortCollectionId": cohort_collection_id,
            "Changes": {"Before": before, "After": cohort_collection_id},
        }
        return Reply(response, {"CohortCollectionId": cohort_collection_id, "Before": before})

    def get(self, collection_id: str) -> Reply:
        self._store.require_collection(collection_id)
        cohort_id = self._store.cohort_collection(collection_id)
        return Reply({"CohortCollectionId": cohort_id})

    def for_search(self, collection_id: str) -> Cohort | None:
        """The cohort the collection's searches are scored against, current with the store; None
        without one. Refused (InvalidParameter) when it no longer qualifies."""
        cohort_id = self._store.cohort_collection(collection_id)
        if cohort_id is None:
            return None
        self._check_model(collection_id, cohort_id)
        generation = self._store.generation(cohort_id)
        with self._lock:
            cohort = self._cohorts.get(cohort_id)
            if cohort is None or cohort.generation != generation:
                _, vectors, generation = self._templates.load(cohort_id)
                self._check_size(collection_id, cohort_id, len(vectors))
                cohort = Cohort(generation, CohortNorm(vectors))
                self._cohorts[cohort_id] = cohort
        return cohort

    def _check(self, collection_id: str, cohort_id: str, faces: int) -> None:
        self._check_model(collection_id, cohort_id)
        self._check_size(collection_id, cohort_id, faces)

    def _check_model(self, collection_id: str, cohort_id: str) -> None:
        version = self._store.face_model_version(collection_id)
        if self._store.face_model_version(cohort_id) != version:
            raise InvalidParameterException(
                f"Cohort collection {cohort_id!r} is not of face model {version} (collection {collection_id!r}'s): "
                "templates of two models are never compared."
            )

    @staticmethod
    def _check_size(collection_id: str, cohort_id: str, faces: int) -> None:
        if faces < MIN_COHORT_FACES:
            raise InvalidParameterException(
                f"Cohort collection {cohort_id!r} holds {faces:,} faces; a cohort needs at least "
                f"{MIN_COHORT_FACES:,} (faces of people never searched for): index more into it, or stop using it "
                f"with 'faceledger collection cohort {collection_id} --none'."
            )
