"""The face operations, protocol-free, named and shaped after Amazon Rekognition's face API.

Each public method is one operation in snake_case (``index_faces`` is IndexFaces), takes the
request members as keyword arguments in snake_case, and returns a dict with exactly the response
members boto3 would return. Errors are :mod:`faceledger.errors` classes named after Rekognition's.
The CLI and the HTTP API both call this class; nothing here knows about either.

This class is a facade: each method hands its work to one operation family (the objects built in
``__init__``, each with its collaborators in its constructor) through the one runner that
authorises, ledgers and commits every call (runner.py).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from faceledger.config import DATABASE_URL_ENV, Settings
from faceledger.errors import (
    AccessDeniedException,
    ConflictException,
    DataDirectoryError,
    FaceledgerError,
    InvalidParameterException,
    ResourceNotFoundException,
)
from faceledger.index import VectorIndexRegistry
from faceledger.ledger.chain import Ledger, ledger_key_path
from faceledger.service import validation
from faceledger.service.access import KEY_ID, AccessControl, Caller, load_secrets_key, unknown_caller
from faceledger.service.admin_operations import AdminOperations
from faceledger.service.cohorts import CohortCollections
from faceledger.service.collection_operations import CollectionOperations
from faceledger.service.console_sessions import ConsoleSessions
from faceledger.service.context import RequestContext, acting_as, current_context
from faceledger.service.data_directory import DataDirectory
from faceledger.service.face_operations import FaceOperations
from faceledger.service.images import ImageInput, ImageReader
from faceledger.service.ledger_operations import LedgerOperations, checked_filters
from faceledger.service.migration import ModelMigration
from faceledger.service.models import FaceModels
from faceledger.service.node_keys import check_shared_keys, shared_keys
from faceledger.service.objects import ObjectReader
from faceledger.service.policy_operations import UNCHANGED, PolicyOperations, Unchanged
from faceledger.service.results import IndexFacesResult, Reply
from faceledger.service.review_operations import ReviewOperations
from faceledger.service.runner import OperationRunner
from faceledger.service.search_limits import SearchLimits
from faceledger.service.search_operations import SearchOperations
from faceledger.service.shapes import Response
from faceledger.service.store_migration import StoreMigration
from faceledger.service.templates import TemplateVault
from faceledger.service.user_operations import UserOperations
from faceledger.service.video_operations import MAX_RESULTS as MAX_VIDEO_RESULTS
from faceledger.service.video_operations import Progress as VideoProgress
from faceledger.service.video_operations import VideoInput, VideoOperations, worker_name
from faceledger.store import CollectionPolicy, ImageRecord, LedgerEntry, Store, open_store, without_password
from faceledger.vision import FaceAnalyzer
from faceledger.vision.calibration import ThresholdTable

# CompareFaces keeps Rekognition's default 80 (dlib's d = 0.6, see vision/similarity.py); searches
# default to the collection's calibrated threshold (see search_limits.py).
DEFAULT_SIMILARITY_THRESHOLD = 80.0
DEFAULT_ASSOCIATION_THRESHOLD = 75.0

PURGE_BATCH = 1000  # faces erased per transaction (and ledger receipt) by a purge


class FaceService:
    """All face operations over one data directory (store + vector index + face engine).

    Thread-safe: each thread gets its own store connection; the index and the models guard
    themselves.
    """

    def __init__(self, settings: Settings | None = None, analyzer: FaceAnalyzer | None = None) -> None:
        self.settings = settings or Settings()
        data_dir = self.settings.data_dir
        self.data_directory, self.store = _open_data_directory(data_dir, self.settings.database_url)
        self.templates = TemplateVault(self.store, data_dir, encrypt=self.settings.encrypt_templates)
        self.ledger = Ledger(self.store.ledger, ledger_key_path(data_dir))
        check_shared_keys(self.store, shared_keys(data_dir, self.ledger))
        self.analyzer = analyzer or FaceAnalyzer()
        self.models = FaceModels(self.analyzer, data_dir, self.store)
        self.indexes = VectorIndexRegistry(
            lambda collection_id: self.models.for_collection(collection_id).model.dimension,
            self.templates.load,
            self.store.generation,
            persist_dir=data_dir / "index",
            cipher=lambda: self.templates.codec,
            changes=self.templates.changes_since,
        )
        self.cohorts = CohortCollections(self.store, self.templates)
        self.limits = SearchLimits(self.store, self.models)
        self._access: AccessControl | None = None
        self._moved_to: str | None = None  # set once migrate_store has moved the store elsewhere
        self._runner = OperationRunner(
            self.store, self.ledger if self.settings.audit_ledger else None, lambda: self.access
        )
        images = ImageReader(self.analyzer, self.settings.image_limits, ObjectReader(self.settings.object_storage))
        reviews = ReviewOperations(self.store, self.templates, self.limits)
        self._reviews = reviews
        self._policies = PolicyOperations(self.store, self.indexes)
        models = self.models
        self._collections = CollectionOperations(self.store, self.indexes, self.limits, self.settings, models)
        self._faces = FaceOperations(self.store, self.indexes, images, self.templates, self._policies, models)
        self._search = SearchOperations(
            self.store, self.indexes, images, self.templates, self.limits, reviews, models, self.cohorts
        )
        self._users = UserOperations(self.store, self.templates, models)
        self._migration = ModelMigration(self.store, self.indexes, images, self.templates, models, self._policies)
        self._video = VideoOperations(
            self.store,
            images,
            models,
            self._search,
            self.limits,
            reviews,
            self.settings.video_limits,
            data_dir / "video",
            self._run_typed,
        )
        self._ledger_reads = LedgerOperations(self.ledger, self.store.ledger)
        self.console_sessions = ConsoleSessions(self.store, lambda: self.access)
        self._admin = AdminOperations(self.store, lambda: self.access, self.templates, self.indexes, self.ledger)

    @property
    def access(self) -> AccessControl:
        """API access keys; the secrets key is read (or created) on first use only."""
        if self._access is None:
            self._access = AccessControl(self.store.access_keys, load_secrets_key(self.settings.data_dir))
        return self._access

    def close(self) -> None:
        if self._moved_to is None:
            self.indexes.save()
            self.store.close()
        self.data_directory.close()

    def __enter__(self) -> FaceService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(
        self, operation: str, effect: Callable[[], Any], *, collection_id: object = None, images: Iterable[object] = ()
    ) -> Response:
        """Run one operation (see runner.py) and shape its result for the caller."""
        return self._run_typed(operation, effect, collection_id=collection_id, images=images).to_response()

    def _run_typed(
        self, operation: str, effect: Callable[[], Any], *, collection_id: object = None, images: Iterable[object] = ()
    ) -> Any:
        """Run one operation and return its typed result. A collection id is checked inside the
        run, so that a malformed one is ledgered like any refusal."""
        if self._moved_to is not None:
            raise ConflictException(f"This data directory's store moved to {self._moved_to}: open the directory again.")
        named = collection_id if isinstance(collection_id, str) else None

        def checked() -> Any:
            if collection_id is not None:
                validation.collection_id(collection_id)
            return effect()

        return self._runner.run(operation, checked, collection_id=named, images=images)

    def record_failure(self, operation: str, error: FaceledgerError, collection_id: str | None = None) -> None:
        """Ledger an operation refused before it reached the service (e.g. malformed on the wire)."""
        self._runner.record_failure(operation, error, collection_id)

    # -- collections -----------------------------------------------------------------------

    def create_collection(
        self, *, collection_id: str, tags: dict[str, str] | None = None, face_model: str | None = None
    ) -> Response:
        """Create an empty collection; it records the face model its faces are indexed and searched
        with: ``face_model`` names one (see :meth:`register_face_model`; default: the service's)."""
        return self._run(
            "CreateCollection",
            lambda: self._collections.create(collection_id, tags, face_model),
            collection_id=collection_id,
        )

    def describe_collection(self, *, collection_id: str) -> Response:
        """Face and user counts, face model version, ARN and creation time of a collection."""
        return self._run(
            "DescribeCollection", lambda: self._collections.describe(collection_id), collection_id=collection_id
        )

    def list_collections(
        self, *, next_token: str | None = None, max_results: int = 1000, visible: Collection[str] | None = None
    ) -> Response:
        """Collection ids in order; ``visible`` restricts the listing to those ids (by default,
        those the calling access key covers)."""
        if visible is None:
            visible = current_context().caller.collections
        return self._run("ListCollections", lambda: self._collections.list(next_token, max_results, visible))

    def delete_collection(self, *, collection_id: str) -> Response:
        """Delete a collection with every face, user, tag and policy in it."""
        return self._run(
            "DeleteCollection", lambda: self._collections.delete(collection_id), collection_id=collection_id
        )

    def tag_resource(self, *, resource_arn: str, tags: dict[str, str]) -> Response:
        return self._run(
            "TagResource",
            lambda: self._collections.tag(resource_arn, tags),
            collection_id=self._arn_collection(resource_arn),
        )

    def untag_resource(self, *, resource_arn: str, tag_keys: Sequence[str]) -> Response:
        return self._run(
            "UntagResource",
            lambda: self._collections.untag(resource_arn, tag_keys),
            collection_id=self._arn_collection(resource_arn),
        )

    def list_tags_for_resource(self, *, resource_arn: str) -> Response:
        return self._run(
            "ListTagsForResource",
            lambda: self._collections.tags(resource_arn),
            collection_id=self._arn_collection(resource_arn),
        )

    @staticmethod
    def _arn_collection(resource_arn: str) -> str | None:
        """The collection an ARN names, for authorisation; None when malformed (the operation
        then refuses it, ledgered)."""
        try:
            return CollectionOperations.id_from_arn(resource_arn)
        except FaceledgerError:
            return None

    def set_threshold_table(self, *, collection_id: str, table: ThresholdTable) -> Response:
        """Store a collection's own calibration (``faceledger calibrate``); its searches then
        default to its safe threshold (a table too small to show FMR <= 1e-4 is refused)."""
        return self._run(
            "SetThresholdTable",
            lambda: self._collections.set_threshold_table(collection_id, table),
            collection_id=collection_id,
        )

    def threshold_table(self, collection_id: str) -> ThresholdTable:
        """The calibration a collection's searches use (its own, else the shipped LFW table)."""
        return self.limits.threshold_table(collection_id)

    def resolve_face_ids(self, *, collection_id: str, face_ids: Sequence[str]) -> list[str]:
        """``face_ids`` with each unique prefix (at least 4 characters, as git takes a commit)
        replaced by the one face id of the collection it starts; a prefix that matches no face, or
        several, is refused (ResourceNotFound, InvalidParameter). Full ids pass unchecked: the
        operation given them checks them, and ledgers the call."""
        if any(not validation.FACE_ID.fullmatch(given_id) for given_id in face_ids):
            self.store.require_collection(collection_id)
        resolved = []
        for given_id in face_ids:
            if validation.FACE_ID.fullmatch(given_id) or not validation.FACE_ID_PREFIX.fullmatch(given_id):
                resolved.append(given_id)
                continue
            found = self.store.face_ids_where(collection_id, id_prefix=given_id, limit=2)
            if not found:
                raise ResourceNotFoundException(f"FaceId prefix {given_id!r} matches no face of {collection_id!r}.")
            if len(found) > 1:
                raise InvalidParameterException(
                    f"FaceId prefix {given_id!r} matches several faces of {collection_id!r}: give more of the id."
                )
            resolved.append(found[0])
        return resolved

    def default_search_threshold(self, collection_id: str) -> float:
        """The similarity a search of the collection uses when none is asked for."""
        return self.limits.default_threshold(collection_id)

    # -- images and faces ------------------------------------------------------------------

    def detect_faces(self, *, image: ImageInput, attributes: Sequence[str] | None = None) -> Response:
        """Faces in an image, largest first (at most 100). ``attributes`` is accepted for
        compatibility; faceledger never estimates age, gender or emotion, whatever is asked."""
        return self._run("DetectFaces", lambda: self._faces.detect(image), images=[image])

    def compare_faces(
        self,
        *,
        source_image: ImageInput,
        target_image: ImageInput,
        similarity_threshold: float = DEFAULT_SIMILARITY_THRESHOLD,
        quality_filter: str = "NONE",
    ) -> Response:
        """Compare the largest face of the source with every face of the target (at most 100);
        a match has similarity >= ``similarity_threshold`` (0-100; 80 is dlib's distance 0.6)."""

        def effect() -> Any:
            threshold = validation.percent(similarity_threshold, "SimilarityThreshold")
            return self._faces.compare(source_image, target_image, threshold, validation.quality_filter(quality_filter))

        return self._run("CompareFaces", effect, images=[source_image, target_image])

    def index_faces(
        self,
        *,
        collection_id: str,
        image: ImageInput,
        external_image_id: str | None = None,
        max_faces: int | None = None,
        quality_filter: str = "AUTO",
        detection_attributes: Sequence[str] | None = None,
        store_image: bool = False,
        source_path: str | None = None,
    ) -> Response:
        """Detect faces and add them to a collection, all of them or none (one transaction).

        The largest ``max_faces`` faces that pass ``quality_filter`` are indexed; every other
        face is reported in UnindexedFaces with Rekognition's reasons. The image's pixels are
        kept only when ``store_image`` is true; ``source_path`` records where a file came from.
        """
        return self.index_image(
            collection_id=collection_id,
            image=image,
            external_image_id=external_image_id,
            max_faces=max_faces,
            quality_filter=quality_filter,
            store_image=store_image,
            source_path=source_path,
        ).to_response()

    def index_image(
        self,
        *,
        collection_id: str,
        image: ImageInput,
        external_image_id: str | None = None,
        max_faces: int | None = None,
        quality_filter: str = "AUTO",
        store_image: bool = False,
        source_path: str | None = None,
        only_new: bool = False,
    ) -> IndexFacesResult:
        """IndexFaces, returning the typed result rather than the response dict (bulk indexing).
        ``only_new``: index nothing (``already_indexed``) if the collection holds the same image,
        decided in the write's own transaction, so concurrent runs never store an image twice.
        (IndexFaces itself, as in Rekognition, indexes an image as often as it is sent.)"""

        def effect() -> IndexFacesResult:
            validation.external_image_id(external_image_id)
            level = validation.quality_filter(quality_filter)
            if max_faces is not None:
                validation.integer(max_faces, "MaxFaces", 1)
            return self._faces.index(
                collection_id, image, external_image_id, max_faces, level, store_image, source_path, only_new
            )

        return self._run_typed("IndexFaces", effect, collection_id=collection_id, images=[image])

    def find_indexed_image(self, *, collection_id: str, image_sha256: str) -> ImageRecord | None:
        """The image with this SHA-256 already indexed into the collection, if any (so that a
        folder index resumes; not an operation of its own, the IndexFaces it saves is)."""
        return self._faces.find_indexed_image(collection_id, image_sha256)

    def list_faces(
        self,
        *,
        collection_id: str,
        next_token: str | None = None,
        max_results: int = 1000,
        user_id: str | None = None,
        face_ids: Sequence[str] | None = None,
    ) -> Response:
        """A page of the collection's faces in index order, optionally of one user or among ids."""
        return self._run(
            "ListFaces",
            lambda: self._faces.list(collection_id, next_token, max_results, user_id, face_ids),
            collection_id=collection_id,
        )

    def delete_faces(self, *, collection_id: str, face_ids: Sequence[str]) -> Response:
        """Delete faces from the store and the index. A face still associated with a user is
        not deleted (disassociate it first), as in Rekognition."""
        return self._run(
            "DeleteFaces", lambda: self._faces.delete(collection_id, face_ids), collection_id=collection_id
        )

    # -- search ----------------------------------------------------------------------------

    def search_faces(
        self,
        *,
        collection_id: str,
        face_id: str,
        max_faces: int | None = None,
        face_match_threshold: float | None = None,
    ) -> Response:
        """Faces of the collection similar to one of its own faces (itself excluded).
        ``face_match_threshold`` defaults to the collection's calibrated search threshold."""

        def effect() -> Any:
            _check_max(max_faces, "MaxFaces")
            return self._search.faces_by_id(collection_id, face_id, max_faces, face_match_threshold)

        return self._run("SearchFaces", effect, collection_id=collection_id)

    def search_faces_by_image(
        self,
        *,
        collection_id: str,
        image: ImageInput,
        max_faces: int | None = None,
        face_match_threshold: float | None = None,
        quality_filter: str = "NONE",
    ) -> Response:
        """Search the collection with the largest face of the image. ``face_match_threshold``
        defaults to the collection's calibrated search threshold."""

        def effect() -> Any:
            _check_max(max_faces, "MaxFaces")
            level = validation.quality_filter(quality_filter)
            return self._search.faces_by_image(collection_id, image, max_faces, face_match_threshold, level)

        return self._run("SearchFacesByImage", effect, collection_id=collection_id, images=[image])

    def search_all_faces_by_image(
        self,
        *,
        collection_id: str,
        image: ImageInput,
        max_faces: int | None = None,
        face_match_threshold: float | None = None,
        quality_filter: str = "NONE",
    ) -> Response:
        """faceledger's extension: search the collection with every face of the image (at most
        the 100 largest) in one call, each face with its bounding box and its matches (at most
        ``max_faces`` each); faces that fail ``quality_filter`` are listed unsearched with the
        reasons. Threshold, purpose, review and ledger as SearchFacesByImage; the threshold's
        default and meaning count every face searched."""

        def effect() -> Any:
            _check_max(max_faces, "MaxFaces")
            level = validation.quality_filter(quality_filter)
            return self._search.all_faces_by_image(collection_id, image, max_faces, face_match_threshold, level)

        return self._run("SearchAllFacesByImage", effect, collection_id=collection_id, images=[image])

    def search_users(
        self,
        *,
        collection_id: str,
        user_id: str | None = None,
        face_id: str | None = None,
        user_match_threshold: float | None = None,
        max_users: int | None = None,
    ) -> Response:
        """Users whose faces match a face of the collection, or the faces of a user.
        ``user_match_threshold`` defaults to the collection's calibrated search threshold."""

        def effect() -> Any:
            _check_max(max_users, "MaxUsers", 500)
            return self._search.users(collection_id, user_id, face_id, user_match_threshold, max_users)

        return self._run("SearchUsers", effect, collection_id=collection_id)

    def search_users_by_image(
        self,
        *,
        collection_id: str,
        image: ImageInput,
        user_match_threshold: float | None = None,
        max_users: int | None = None,
        quality_filter: str = "NONE",
    ) -> Response:
        """Users matching the largest face of the image; the other faces are listed as unsearched.
        ``user_match_threshold`` defaults to the collection's calibrated search threshold."""

        def effect() -> Any:
            _check_max(max_users, "MaxUsers", 500)
            level = validation.quality_filter(quality_filter)
            return self._search.users_by_image(collection_id, image, user_match_threshold, max_users, level)

        return self._run("SearchUsersByImage", effect, collection_id=collection_id, images=[image])

    # -- stored video ------------------------------------------------------------------------

    def start_face_detection(
        self,
        *,
        video: VideoInput,
        client_request_token: str | None = None,
        notification_channel: object = None,
        face_attributes: str | None = None,
        job_tag: str | None = None,
    ) -> Response:
        """Start finding the faces of a stored video (an S3Object of the configured store; a
        local file from the CLI or Python); answers the JobId at once (service/video_operations.py).
        ``face_attributes`` is accepted for compatibility: faceledger estimates no attribute."""

        def effect() -> Reply:
            if face_attributes not in (None, "DEFAULT", "ALL"):
                raise InvalidParameterException("FaceAttributes must be DEFAULT or ALL.")
            return self._video.start(
                "FaceDetection", video, None, None, client_request_token, notification_channel, job_tag
            )

        return self._run("StartFaceDetection", effect)

    def get_face_detection(
        self, *, job_id: str, max_results: int = MAX_VIDEO_RESULTS, next_token: str | None = None
    ) -> Response:
        """A face detection job's status and, once SUCCEEDED, a page of its faces by timestamp."""
        return self._run(
            "GetFaceDetection", lambda: self._video.get("FaceDetection", job_id, max_results, next_token, "TIMESTAMP")
        )

    def start_face_search(
        self,
        *,
        video: VideoInput,
        collection_id: str,
        face_match_threshold: float | None = None,
        client_request_token: str | None = None,
        notification_channel: object = None,
        job_tag: str | None = None,
        held_by: str | None = None,
    ) -> Response:
        """Start searching a collection for the people of a stored video; answers the JobId at
        once. ``face_match_threshold`` defaults to the collection's calibrated search threshold;
        purpose and review as for SearchFacesByImage. ``held_by`` (not over the API): the worker
        that runs the job at once (run_video_job with that worker), so no server takes it first."""
        return self._run(
            "StartFaceSearch",
            lambda: self._video.start(
                "FaceSearch",
                video,
                collection_id,
                face_match_threshold,
                client_request_token,
                notification_channel,
                job_tag,
                held_by,
            ),
            collection_id=collection_id,
        )

    def get_face_search(
        self,
        *,
        job_id: str,
        max_results: int = MAX_VIDEO_RESULTS,
        next_token: str | None = None,
        sort_by: str = "TIMESTAMP",
    ) -> Response:
        """A face search job's status and, once SUCCEEDED, a page of its persons (each tracked
        person at each sampled time, with its matches), by TIMESTAMP or by person INDEX."""
        return self._run(
            "GetFaceSearch",
            lambda: self._video.get("FaceSearch", job_id, max_results, next_token, sort_by),
            collection_id=self._video.collection_of(job_id),
        )

    def run_video_job(
        self, *, job_id: str | None = None, worker: str | None = None, progress: VideoProgress | None = None
    ) -> bool:
        """Take a stored-video job (``job_id``, else the oldest waiting) and run it to its end,
        which is ledgered (FaceDetectionJob, FaceSearchJob) under the key that started it; False
        if there was none to take. ``faceledger serve`` calls this in a loop; ``progress(done,
        total)`` in milliseconds of video."""
        return self._video.run(worker or worker_name(), job_id, progress)

    # -- users -----------------------------------------------------------------------------

    def create_user(self, *, collection_id: str, user_id: str, client_request_token: str | None = None) -> Response:
        return self._run(
            "CreateUser",
            lambda: self._users.create(collection_id, user_id, client_request_token),
            collection_id=collection_id,
        )

    def delete_user(self, *, collection_id: str, user_id: str, client_request_token: str | None = None) -> Response:
        """Delete a user; its faces stay indexed, no longer associated with anyone."""
        return self._run(
            "DeleteUser",
            lambda: self._users.delete(collection_id, user_id, client_request_token),
            collection_id=collection_id,
        )

    def list_users(self, *, collection_id: str, next_token: str | None = None, max_results: int = 100) -> Response:
        return self._run(
            "ListUsers", lambda: self._users.list(collection_id, next_token, max_results), collection_id=collection_id
        )

    def associate_faces(
        self,
        *,
        collection_id: str,
        user_id: str,
        face_ids: Sequence[str],
        user_match_threshold: float = DEFAULT_ASSOCIATION_THRESHOLD,
        client_request_token: str | None = None,
    ) -> Response:
        """Associate faces with a user. Once the user has faces, a new face must match them
        (best similarity >= ``user_match_threshold``), so one person's faces are not mixed
        with another's by mistake."""
        return self._run(
            "AssociateFaces",
            lambda: self._users.associate(collection_id, user_id, face_ids, user_match_threshold, client_request_token),
            collection_id=collection_id,
        )

    def disassociate_faces(
        self, *, collection_id: str, user_id: str, face_ids: Sequence[str], client_request_token: str | None = None
    ) -> Response:
        return self._run(
            "DisassociateFaces",
            lambda: self._users.disassociate(collection_id, user_id, face_ids, client_request_token),
            collection_id=collection_id,
        )

    # -- policies, consent, erasure --------------------------------------------------------

    def put_collection_policy(
        self,
        *,
        collection_id: str,
        purpose_required: bool = False,
        min_threshold: float | None = None,
        max_results: int | None = None,
        retention_days: int | None = None,
        consent_required: bool = False,
        review_required: bool = False,
    ) -> Response:
        """Replace the collection's policy (every demand not given is lifted)."""
        policy = CollectionPolicy(
            bool(purpose_required),
            min_threshold,
            max_results,
            retention_days,
            bool(consent_required),
            bool(review_required),
        )
        return self._run(
            "PutCollectionPolicy", lambda: self._policies.put(collection_id, policy), collection_id=collection_id
        )

    def update_collection_policy(
        self,
        *,
        collection_id: str,
        purpose_required: bool | Unchanged = UNCHANGED,
        min_threshold: float | None | Unchanged = UNCHANGED,
        max_results: int | None | Unchanged = UNCHANGED,
        retention_days: int | None | Unchanged = UNCHANGED,
        consent_required: bool | Unchanged = UNCHANGED,
        review_required: bool | Unchanged = UNCHANGED,
    ) -> Response:
        """Change only the demands given (None lifts a numeric one); the response's ``Changes``
        and the ledger entry say what changed, before -> after."""
        changes = {
            name: value
            for name, value in {
                "purpose_required": purpose_required,
                "min_threshold": min_threshold,
                "max_results": max_results,
                "retention_days": retention_days,
                "consent_required": consent_required,
                "review_required": review_required,
            }.items()
            if value is not UNCHANGED
        }
        return self._run(
            "UpdateCollectionPolicy",
            lambda: self._policies.update(collection_id, changes),
            collection_id=collection_id,
        )

    def put_collection_cohort(self, *, collection_id: str, cohort_collection_id: str | None = None) -> Response:
        """Score the collection's searches by AS-norm against the faces of ``cohort_collection_id``
        (same face model, at least MIN_COHORT_FACES faces of people never searched for); without
        it, stop. The caller must cover both collections."""

        def put() -> Reply:
            caller = current_context().caller
            if cohort_collection_id is not None and not caller.covers(cohort_collection_id):
                raise AccessDeniedException(
                    f"Access key {caller.access_key_id} does not cover collection {cohort_collection_id!r}."
                )
            return self.cohorts.put(collection_id, cohort_collection_id)

        return self._run("PutCollectionCohort", put, collection_id=collection_id)

    def get_collection_cohort(self, *, collection_id: str) -> Response:
        return self._run("GetCollectionCohort", lambda: self.cohorts.get(collection_id), collection_id=collection_id)

    def get_collection_policy(self, *, collection_id: str) -> Response:
        return self._run("GetCollectionPolicy", lambda: self._policies.get(collection_id), collection_id=collection_id)

    def record_consent(
        self,
        *,
        collection_id: str,
        external_image_id: str,
        basis: str,
        reference: str,
        obtained_at: float | None = None,
        expires_at: float | None = None,
    ) -> Response:
        """Record the consent of the person shown in images with ``external_image_id``:
        its legal ``basis`` (e.g. "explicit consent, GDPR 9(2)(a)"), a ``reference`` to the
        signed document, when it was obtained and when it expires (seconds since the epoch)."""
        return self._run(
            "RecordConsent",
            lambda: self._policies.record_consent(
                collection_id, external_image_id, basis, reference, obtained_at, expires_at
            ),
            collection_id=collection_id,
        )

    def withdraw_consent(self, *, collection_id: str, consent_id: str) -> Response:
        """Withdraw a consent and erase every face it covered (GDPR Art. 17)."""
        return self._run(
            "WithdrawConsent",
            lambda: self._policies.withdraw_consent(collection_id, consent_id),
            collection_id=collection_id,
        )

    def list_consents(self, *, collection_id: str, external_image_id: str | None = None) -> Response:
        """The collection's consent records (of one ExternalImageId if given), oldest first, each
        with its status now: ACTIVE, NOT_YET_VALID, EXPIRED or WITHDRAWN."""
        return self._run(
            "ListConsents",
            lambda: self._policies.list_consents(collection_id, external_image_id),
            collection_id=collection_id,
        )

    def purge(self, *, now: float | None = None) -> Response:
        """Erase every face past its collection's retention period or its consent's expiry, in
        batches of at most ``PURGE_BATCH`` faces, each its own transaction and ledger entry (its
        receipt), so that any number of expired faces is erased; returns every batch's receipts."""
        moment = time.time() if now is None else now
        receipts: list[dict[str, Any]] = []
        while True:
            batch = self._run("Purge", lambda: self._policies.purge(moment, PURGE_BATCH))
            receipts += batch["Receipts"]
            if len(batch["ErasedFaceIds"]) < PURGE_BATCH:
                return {"Receipts": receipts, "ErasedFaceIds": [f for r in receipts for f in r["ErasedFaceIds"]]}

    # -- review ----------------------------------------------------------------------------

    def decide_review(self, *, case_id: str, face_id: str, decision: str, note: str) -> Response:
        """Confirm or reject one candidate of a case, as the calling reviewer, with a note."""
        return self._run(
            "DecideReview",
            lambda: self._reviews.decide(case_id, face_id, decision, note),
            collection_id=self._reviews.collection_of(case_id),
        )

    def get_review_case(self, *, case_id: str, include_face_crops: bool = False) -> Response:
        """A case's candidates, their status, what each similarity means (its false-match rate)
        and every decision; with ``include_face_crops``, the JPEG crops kept of the probe and
        candidate faces (review-required collections keep them), as a reviewer needs to decide."""
        return self._run(
            "GetReviewCase",
            lambda: self._reviews.get(case_id, include_face_crops),
            collection_id=self._reviews.collection_of(case_id),
        )

    def list_review_cases(
        self,
        *,
        collection_id: str | None = None,
        status: str | None = None,
        opened_by: str | None = None,
        awaiting_my_decision: bool = False,
        max_results: int | None = None,
        next_token: str | None = None,
    ) -> Response:
        """Review cases, oldest first, 100 a page by default (MaxResults up to 1,000): of one
        collection, or of every collection the caller covers; ``status`` OPEN or CLOSED;
        ``opened_by`` one key's searches; ``awaiting_my_decision`` the caller's queue (open cases
        of others' searches with a candidate the caller has not decided yet)."""
        visible = current_context().caller.collections

        def listing() -> Reply:
            return self._reviews.list(
                collection_id,
                visible,
                status=status,
                opened_by=opened_by,
                awaiting_my_decision=awaiting_my_decision,
                max_results=max_results,
                next_token=next_token,
            )

        return self._run("ListReviewCases", listing, collection_id=collection_id)

    # -- erasure -----------------------------------------------------------------------------

    def erase_faces(
        self, *, collection_id: str, face_ids: Sequence[str] | None = None, external_image_id: str | None = None
    ) -> Response:
        """Erase faces for good, whatever user they belong to (GDPR Art. 17): the ``face_ids``
        given, or every face indexed under ``external_image_id``; the ledger entry is the receipt
        (faces not found are listed in NotFoundFaceIds)."""
        return self._run(
            "EraseFaces",
            lambda: self._policies.erase_faces(collection_id, face_ids, external_image_id),
            collection_id=collection_id,
        )

    # -- the web console's sign-in ------------------------------------------------------------

    def start_console_session(self, *, access_key_id: str, secret: str, ledger_refusal: bool = True) -> Response:
        """Check an access key's secret and start a web console session of that key: the
        response's SessionToken (shown once, stored only as its SHA-256) stands for the key until
        it ends (service/console_sessions.py). A wrong secret is ledgered as a denied sign-in of
        the key it names, or of ``unknown:`` and the id if it has a key id's form (what was typed
        may be a secret in the wrong field: it never reaches the ledger); ``ledger_refusal`` False
        leaves the refusal to the caller's log (a flood of them, web console)."""
        try:
            caller = self.access.verify(access_key_id, secret)
        except AccessDeniedException as error:
            if ledger_refusal:
                key = self.access.keys.get(access_key_id) if isinstance(access_key_id, str) else None
                shown = access_key_id if isinstance(access_key_id, str) and KEY_ID.fullmatch(access_key_id) else ""
                claimed = self.access.caller(key) if key is not None else unknown_caller(shown)
                with acting_as(RequestContext(claimed)):
                    self._runner.record_failure("StartConsoleSession", error)
            raise
        with acting_as(RequestContext(caller)):
            return self._run("StartConsoleSession", lambda: self.console_sessions.start(caller))

    def console_caller(self, session_token: str) -> Caller | None:
        """Who a console session token signs in (None: no session, or one that has ended)."""
        return self.console_sessions.caller(session_token)

    def end_console_session(self, *, session_token: str) -> Response:
        """End a console session (sign-out), as the current caller."""
        return self._run("EndConsoleSession", lambda: self.console_sessions.end(session_token))

    # -- keys and the ledger ---------------------------------------------------------------

    def create_access_key(
        self, *, role: str, collections: list[str] | None = None, description: str | None = None
    ) -> Response:
        """A new API key; the response holds its secret, the only time it is ever shown."""
        return self._run("CreateAccessKey", lambda: self._admin.create_key(role, collections, description))

    def set_access_key_enabled(self, *, access_key_id: str, enabled: bool) -> Response:
        return self._run("SetAccessKeyEnabled", lambda: self._admin.set_key_enabled(access_key_id, enabled))

    def delete_access_key(self, *, access_key_id: str) -> Response:
        return self._run("DeleteAccessKey", lambda: self._admin.delete_key(access_key_id))

    def rotate_template_key(self) -> Response:
        """Re-encrypt every face template under a new template key; refused (ConflictException)
        while another process, such as a running server, has the data directory open."""
        with self.data_directory.exclusive() as alone:  # held until the new key file is in place
            return self._run("RotateTemplateKey", lambda: self._admin.rotate_template_key(alone))

    def migrate_collection(
        self,
        *,
        collection_id: str,
        face_model: str,
        source_root: str | None = None,
        drop_unavailable: bool = False,
    ) -> Response:
        """Move a collection to face model ``face_model``, keeping its face ids (service/migration.py):
        images are read again from their stored pixels, or from ``source_root``, the folder they
        were indexed from; refused if any is available neither way, unless ``drop_unavailable``
        (their faces are then erased, with a receipt)."""
        root = Path(source_root) if source_root is not None else None
        return self._run(
            "MigrateCollection",
            lambda: self._migration.migrate(collection_id, face_model, root, drop_unavailable),
            collection_id=collection_id,
        )

    def migrate_store(
        self, *, to: str, keep_sqlite: bool = False, progress: Callable[[str, int], None] | None = None
    ) -> Response:
        """Move this data directory's store into the PostgreSQL database at ``to`` (empty, or
        holding this store's copy cut short: then the copy resumes), verify the copy (row counts,
        the ledger up to the same head) and switch the directory to it (service/store_migration.py).
        Needs the data directory alone. The service is closed for operations afterwards: open the
        directory again to use the new store. ``progress(table, rows copied)`` after each batch."""
        with self.data_directory.exclusive() as alone:
            migration = StoreMigration(self.store, self.data_directory, ledger_key_path(self.settings.data_dir))

            def announce() -> Reply:  # refusals are ledgered like any operation's
                if not alone:
                    raise ConflictException(
                        "Another process (a server, another command) has the data directory open: stop it "
                        "first, so that nothing is written to the store while it is copied."
                    )
                migration.check_target(to)
                return migration.announce(to)

            self._run("MigrateStore", announce)
            shown = without_password(to)
            counts = migration.copy(to, progress)
            self.indexes.save()
            self.store.close()
            self._moved_to = shown
            kept = migration.switch(to, keep_sqlite)
        return {
            "To": shown,
            "Tables": [{"Table": c.table, "Rows": c.target_rows} for c in counts],
            "KeptSQLite": None if kept is None else str(kept),
        }

    def register_face_model(
        self, *, name: str, onnx_file: str, spec: dict[str, Any], keep_copy: bool = False
    ) -> Response:
        """Register an operator's ONNX embedding network as face model ``name`` (see
        service/models.py; ``spec``: vision/onnx_spec.py), for new collections to choose;
        ``keep_copy`` copies the file into the data directory."""

        def effect() -> Reply:
            model = self.models.register(name, Path(onnx_file), spec, keep_copy=keep_copy)
            return Reply(
                {"Name": name, "FaceModelVersion": model.version, "Dimension": model.dimension},
                {"Name": name, "FaceModelVersion": model.version},
            )

        return self._run("RegisterFaceModel", effect)

    def register_fused_face_model(
        self, *, name: str, parts: Sequence[str], weights: Sequence[float], reference_cosine: float
    ) -> Response:
        """Register the score-level fusion of the registered models ``parts`` with ``weights``
        as face model ``name`` (vision/fusion.py): its Similarity is the weighted sum of the parts'
        cosines, ``reference_cosine`` of it reporting 80."""

        def effect() -> Reply:
            model = self.models.register_fusion(name, parts, weights, reference_cosine)
            shipped = model.threshold_table().source if model.table is not None else None
            return Reply(
                {
                    "Name": name,
                    "FaceModelVersion": model.version,
                    "Dimension": model.dimension,
                    "ShippedCalibration": shipped,
                },
                {"Name": name, "FaceModelVersion": model.version},
            )

        return self._run("RegisterFusedFaceModel", effect)

    def check_data_directory(self) -> Response:
        """Problems with the data directory: the ledger's chain and signatures, templates that
        do not decrypt, files others may read (``Problems`` empty: none found)."""
        return self._run("CheckDataDirectory", lambda: self._admin.check(self.data_directory))

    def export_ledger(self, *, write: Callable[[LedgerEntry], None], **filters: Any) -> Response:
        """Pass every entry matching ``filters`` (see Ledger.entries) to ``write``, in order; a
        caller scoped to some collections gets only their entries."""
        visible = current_context().caller.collections

        def export() -> Reply:
            checked = checked_filters(filters)
            if visible is not None:
                checked["collections"] = visible
            return self._admin.export_ledger(write, checked)

        return self._run("ExportLedger", export)

    def list_ledger_entries(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        access_key_id: str | None = None,
        collection_id: str | None = None,
        operation: str | None = None,
        outcome: str | None = None,
        purpose: str | None = None,
        case_ref: str | None = None,
        next_token: str | None = None,
        max_results: int = 100,
    ) -> Response:
        """Ledger entries, newest first, filtered by time (seconds since the epoch), key,
        collection, operation, outcome (ok, denied, error), purpose or case reference; a caller
        scoped to some collections sees only their entries."""
        filters = {
            "since": since,
            "until": until,
            "access_key_id": access_key_id,
            "collection_id": collection_id,
            "operation": operation,
            "outcome": outcome,
            "purpose": purpose,
            "case_ref": case_ref,
        }
        visible = current_context().caller.collections
        return self._run(
            "ListLedgerEntries",
            lambda: self._ledger_reads.list(filters, visible, next_token, max_results),
            collection_id=collection_id,
        )

    def verify_ledger(self) -> Response:
        """Check the ledger's chain and signatures: Intact, or the Problems found (where the
        chain breaks), the number of entries and the last signed head. The chain is the whole
        ledger's, so a key scoped to some collections may not (it would learn of the others)."""
        caller = current_context().caller

        def verify() -> Reply:
            if caller.collections is not None:
                raise AccessDeniedException(
                    f"Access key {caller.access_key_id} is scoped to some collections; VerifyLedger reads the whole "
                    "ledger and needs a key of every collection."
                )
            return self._ledger_reads.verify()

        return self._run("VerifyLedger", verify)


def _open_data_directory(path: Path, database_url: str | None) -> tuple[DataDirectory, Store]:
    """The data directory and its store, or one DataDirectoryError saying what is wrong and
    what to do (instead of whichever OSError or sqlite3 error met it first)."""
    advice = "use a directory this account owns (--data-dir or FACELEDGER_DATA_DIR), or fix its permissions"
    try:
        if path.exists() and not path.is_dir():
            raise DataDirectoryError(f"The data directory {path} is a file, not a directory: {advice}.")
        directory = DataDirectory(path)
    except OSError as error:
        reason = error.strerror or str(error)
        raise DataDirectoryError(f"The data directory {path} cannot be used ({reason}): {advice}.") from None
    location: str | Path = path
    try:
        location = directory.store_location(database_url, os.environ.get(DATABASE_URL_ENV) or None)
        return directory, open_store(location)
    except (OSError, sqlite3.Error) as error:
        directory.close()
        shown = location if isinstance(location, Path) else without_password(location)
        raise DataDirectoryError(
            f"The database {shown} cannot be opened for writing ({error}): {advice}; faceledger writes its "
            "store, keys and ledger there."
        ) from None
    except BaseException:
        directory.close()
        raise


def _check_max(value: int | None, name: str, maximum: int = validation.MAX_PAGE_SIZE) -> None:
    if value is not None:
        validation.integer(value, name, 1, maximum)
