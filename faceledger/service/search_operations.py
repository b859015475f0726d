"""Searches: a collection's faces (SearchFaces, SearchFacesByImage) and users (SearchUsers,
SearchUsersByImage). Thresholds and caps come from :class:`SearchLimits`; in a review_required
collection the matches are held for human review. A collection with a cohort (service/cohorts.py)
is scored by AS-norm: the index's ``COHORT_CANDIDATES`` nearest faces are rescored and ranked again."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from faceledger.errors import InvalidParameterException, NoUsableFaceException
from faceledger.index import CollectionIndex, VectorIndexRegistry
from faceledger.service import validation
from faceledger.service.cohorts import Cohort, CohortCollections
from faceledger.service.images import MAX_FACES_PER_IMAGE, NO_FACE, ImageInput, ImageReader
from faceledger.service.models import FaceModels
from faceledger.service.results import AllFacesSearchResult, FaceSearchResult, SearchedFace, UserSearchResult
from faceledger.service.review_operations import ReviewOperations
from faceledger.service.search_limits import SearchLimits
from faceledger.service.templates import TemplateVault
from faceledger.service.validation import MAX_PAGE_SIZE
from faceledger.store import FaceRecord, Store
from faceledger.vision.cohort import COHORT_CANDIDATES, clamped_similarity
from faceledger.vision.crop import face_crop
from faceledger.vision.quality import QualityFilter, quality_failures
from faceledger.vision.similarity import SimilarityScale


class SearchOperations:
    def __init__(
        self,
        store: Store,
        indexes: VectorIndexRegistry,
        images: ImageReader,
        templates: TemplateVault,
        limits: SearchLimits,
        reviews: ReviewOperations,
        models: FaceModels,
        cohorts: CohortCollections,
    ) -> None:
        self._store = store
        self._cohorts = cohorts
        self._indexes = indexes
        self._images = images
        self._templates = templates
        self._limits = limits
        self._reviews = reviews
        self._models = models

    def faces_by_id(
        self, collection_id: str, face_id: str, max_faces: int | None, threshold: float | None
    ) -> FaceSearchResult:
        """Faces of the collection similar to one of its own faces (itself excluded)."""
        validation.face_id(face_id)
        analyzer = self._models.for_collection(collection_id)
        meaning, max_faces = self._limits.resolve(
            collection_id, threshold, max_faces, "FaceMatchThreshold", self.gallery_size(collection_id)
        )
        _, probe = self._store.get_face(collection_id, face_id)
        matches = self._by_embedding(
            collection_id,
            analyzer.model.similarity,
            self._templates.embedding(probe),
            meaning.threshold,
            max_faces,
            exclude_face_ids=[face_id],
        )
        review = self._reviews.hold(collection_id, "SearchFaces", face_id, matches)
        return FaceSearchResult(matches, analyzer.model.version, meaning, searched_face_id=face_id, review=review)

    def faces_by_image(
        self,
        collection_id: str,
        image: ImageInput,
        max_faces: int | None,
        threshold: float | None,
        level: QualityFilter,
    ) -> FaceSearchResult:
        """Search the collection with the largest face of the image."""
        analyzer = self._models.for_collection(collection_id)
        meaning, max_faces = self._limits.resolve(
            collection_id, threshold, max_faces, "FaceMatchThreshold", self.gallery_size(collection_id)
        )
        decoded = self._images.decode(image)
        probe, _ = self._images.largest_face(decoded, level, analyzer=analyzer)
        matches = self._by_embedding(
            collection_id,
            analyzer.model.similarity,
            probe.embedding,
            meaning.threshold,
            max_faces,  # type: ignore[arg-type]
        )
        review = self._reviews.hold(
            collection_id, "SearchFacesByImage", decoded.sha256, matches, lambda: face_crop(decoded.pixels, probe.box)
        )
        return FaceSearchResult(
            matches,
            analyzer.model.version,
            meaning,
            probe=probe,
            probe_size=(decoded.width, decoded.height),
            review=review,
        )

    def all_faces_by_image(
        self,
        collection_id: str,
        image: ImageInput,
        max_faces: int | None,
        threshold: float | None,
        level: QualityFilter,
    ) -> AllFacesSearchResult:
        """Search the collection with every face of the image that passes ``level`` (at most the
        100 largest), each as SearchFacesByImage searches its one face. The threshold's meaning
        counts every face searched: N faces make N times the comparisons, so N times the false
        candidates to expect. In a review_required collection each face with matches opens a
        review case of its own."""
        analyzer = self._models.for_collection(collection_id)
        self._limits.check_purpose(collection_id)  # refused before the image is analysed
        decoded = self._images.decode(image)
        faces = analyzer.analyze(decoded.pixels, embed=False, limit=MAX_FACES_PER_IMAGE)
        if not faces:
            raise NoUsableFaceException(NO_FACE)
        failures = [quality_failures(face, level) for face in faces]
        passing = [face for face, reasons in zip(faces, failures, strict=True) if not reasons]
        meaning, max_faces = self._limits.resolve(
            collection_id,
            threshold,
            max_faces,
            "FaceMatchThreshold",
            self.gallery_size(collection_id, max(1, len(passing))),
        )
        analyzer.embed_faces(passing)
        searched = []
        for face in passing:
            matches = self._by_embedding(
                collection_id,
                analyzer.model.similarity,
                face.embedding,  # type: ignore[arg-type]
                meaning.threshold,
                max_faces,  # type: ignore[arg-type]
            )
            review = self._reviews.hold(
                collection_id,
                "SearchAllFacesByImage",
                decoded.sha256,
                matches,
                functools.partial(face_crop, decoded.pixels, face.box),
            )
            searched.append(SearchedFace(face, matches, review))
        unsearched = [(face, reasons) for face, reasons in zip(faces, failures, strict=True) if reasons]
        return AllFacesSearchResult(
            searched, unsearched, analyzer.model.version, meaning, (decoded.width, decoded.height)
        )

    def users(
        self,
        collection_id: str,
        user_id: str | None,
        face_id: str | None,
        threshold: float | None,
        max_users: int | None,
    ) -> UserSearchResult:
        """Users whose faces match a face of the collection, or the faces of a user."""
        if (user_id is None) == (face_id is None):
            raise InvalidParameterException("Give exactly one of UserId and FaceId.")
        analyzer = self._models.for_collection(collection_id)
        self._limits.check_purpose(collection_id)
        if face_id is not None:
            validation.face_id(face_id)
            _, record = self._store.get_face(collection_id, face_id)
            probes = [self._templates.embedding(record)]
            searched = {"SearchedFace": {"FaceId": face_id}}
        else:
            validation.user_id(user_id)
            self._store.get_user(collection_id, user_id)  # type: ignore[arg-type]
            probes = [
                self._templates.embedding(r)
                for _, r in self._store.list_faces(collection_id, user_id=user_id, limit=MAX_PAGE_SIZE)
            ]
            searched = {"SearchedUser": {"UserId": user_id}}
        meaning, max_users = self._limits.resolve(
            collection_id, threshold, max_users, "UserMatchThreshold", self.gallery_size(collection_id, len(probes))
        )
        matches = self._user_matches(
            collection_id, analyzer.model.similarity, probes, meaning.threshold, max_users, exclude_user=user_id
        )
        return UserSearchResult(matches, analyzer.model.version, meaning, searched=searched)

    def users_by_image(
        self,
        collection_id: str,
        image: ImageInput,
        threshold: float | None,
        max_users: int | None,
        level: QualityFilter,
    ) -> UserSearchResult:
        """Users matching the largest face of the image; the other faces are listed as unsearched."""
        analyzer = self._models.for_collection(collection_id)
        meaning, max_users = self._limits.resolve(
            collection_id, threshold, max_users, "UserMatchThreshold", self.gallery_size(collection_id)
        )
        decoded = self._images.decode(image)
        probe, others = self._images.largest_face(decoded, level, with_others=True, analyzer=analyzer)
        matches = self._user_matches(
            collection_id,
            analyzer.model.similarity,
            [probe.embedding],
            meaning.threshold,
            max_users,  # type: ignore[list-item]
        )
        return UserSearchResult(
            matches,
            analyzer.model.version,
            meaning,
            probe=probe,
            others=others,
            image_size=(decoded.width, decoded.height),
        )

    def by_embedding(
        self, collection_id: str, embedding: np.ndarray, threshold: float, max_faces: int
    ) -> list[tuple[float, FaceRecord]]:
        """The collection's faces with similarity >= ``threshold`` to ``embedding`` (made by the
        collection's model), most similar first: a video's tracked face, searched."""
        scale = self._models.for_collection(collection_id).model.similarity
        return self._by_embedding(collection_id, scale, embedding, threshold, max_faces)

    def gallery_size(self, collection_id: str, probes: int = 1) -> Callable[[], int]:
        """How many templates a search of the collection with ``probes`` probes compares."""
        return lambda: probes * len(self._indexes.for_search(collection_id))

    def _by_embedding(
        self,
        collection_id: str,
        scale: SimilarityScale,
        embedding: np.ndarray,
        threshold: float,
        max_faces: int,
        exclude_face_ids: Sequence[str] = (),
    ) -> list[tuple[float, FaceRecord]]:
        """The collection's faces with similarity >= ``threshold``, most similar first."""
        index = self._indexes.for_search(collection_id)
        probe = np.asarray(embedding, dtype=np.float32)[None, :]
        cohort = self._cohorts.for_search(collection_id)
        if cohort is not None:
            return self._by_cohort(collection_id, index, cohort, probe, threshold, max_faces, exclude_face_ids)
        neighbours = index.search(probe, max_faces + len(exclude_face_ids))[0]
        limit = scale.max_squared_distance(threshold)
        close = [n for n in neighbours if n.squared_distance <= limit + 1e-9]
        records = self._store.faces_by_seq(collection_id, [n.seq for n in close])
        matches = [
            (scale.from_squared_distance(n.squared_distance), records[n.seq])
            for n in close
            if n.seq in records and records[n.seq].face_id not in exclude_face_ids
        ]
        return matches[:max_faces]

    def _by_cohort(
        self,
        collection_id: str,
        index: CollectionIndex,
        cohort: Cohort,
        probe: np.ndarray,
        threshold: float,
        max_faces: int,
        exclude_face_ids: Sequence[str],
    ) -> list[tuple[float, FaceRecord]]:
        """AS-norm Similarity >= ``threshold`` among the index's nearest faces, highest first."""
        neighbours = index.search(probe, max(COHORT_CANDIDATES, max_faces) + len(exclude_face_ids))[0]
        z = cohort.scores(collection_id, probe, neighbours, index.vectors)
        # ranked on z itself: Similarity's clamp at 100 would tie the strongest matches
        ranked = sorted(zip(z.tolist(), (n.seq for n in neighbours), strict=True), reverse=True)
        close = [(clamped_similarity(score), seq) for score, seq in ranked]
        close = [(similarity, seq) for similarity, seq in close if similarity >= threshold - 1e-9]
        records = self._store.faces_by_seq(collection_id, [seq for _, seq in close])
        matches = [
            (similarity, records[seq])
            for similarity, seq in close
            if seq in records and records[seq].face_id not in exclude_face_ids
        ]
        return matches[:max_faces]

    def _user_matches(
        self,
        collection_id: str,
        scale: SimilarityScale,
        probes: list[np.ndarray],
        threshold: float,
        max_users: int,
        exclude_user: str | None = None,
    ) -> list[tuple[float, str]]:
        """A user's similarity is the best similarity between any probe and any of its faces."""
        best: dict[str, float] = {}
        for probe in probes:
            for similarity, record in self._by_embedding(collection_id, scale, probe, threshold, MAX_PAGE_SIZE):
                if record.user_id is not None and record.user_id != exclude_user:
                    best[record.user_id] = max(similarity, best.get(record.user_id, 0.0))
        ranked = sorted(best.items(), key=lambda item: item[1], reverse=True)[:max_users]
        return [(similarity, user_id) for user_id, similarity in ranked]
