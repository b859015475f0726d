"""Collection operations: create, describe, list, delete, tags, and a collection's calibration."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from faceledger.config import Settings
from faceledger.errors import InvalidParameterException
from faceledger.index import VectorIndexRegistry
from faceledger.service import validation
from faceledger.service.models import FaceModels
from faceledger.service.pagination import decode_token, encode_token
from faceledger.service.results import Reply
from faceledger.service.search_limits import SearchLimits
from faceledger.service.validation import MAX_PAGE_SIZE
from faceledger.store import Store
from faceledger.vision.calibration import ThresholdTable, safe_search_threshold
from faceledger.vision.onnx_model import UncalibratedModelError

MAX_TAGS = 200


class CollectionOperations:
    def __init__(
        self, store: Store, indexes: VectorIndexRegistry, limits: SearchLimits, settings: Settings, models: FaceModels
    ) -> None:
        self._store = store
        self._indexes = indexes
        self._limits = limits
        self._settings = settings
        self._models = models

    def arn(self, collection_id: str) -> str:
        return f"arn:aws:rekognition:{self._settings.region}:{self._settings.account_id}:collection/{collection_id}"

    @staticmethod
    def id_from_arn(resource_arn: str) -> str:
        """The collection id named by a collection ARN (any region and account are accepted,
        since clients build ARNs from their own configuration)."""
        parts = resource_arn.split(":", 5) if isinstance(resource_arn, str) else []
        if len(parts) != 6 or parts[:3] != ["arn", "aws", "rekognition"] or not parts[5].startswith("collection/"):
            raise InvalidParameterException(
                f"ResourceArn {resource_arn!r} is not a collection ARN "
                "(arn:aws:rekognition:REGION:ACCOUNT:collection/ID); only collections have tags here."
            )
        return validation.collection_id(parts[5][len("collection/") :])

    def create(self, collection_id: str, tags: dict[str, str] | None, face_model: str | None) -> Reply:
        """An empty collection of the face model named ``face_model`` (default: the service's)."""
        if tags is not None:
            validation.tags(tags)
        version = self._models.named(face_model).version
        self._store.create_collection(collection_id, version, time.time(), tags)
        return Reply(
            {"StatusCode": 200, "CollectionArn": self.arn(collection_id), "FaceModelVersion": version},
            {"StatusCode": 200},
        )

    def describe(self, collection_id: str) -> Reply:
        record = self._store.get_collection(collection_id)
        return Reply(
            {
                "FaceCount": record.face_count,
                "FaceModelVersion": record.face_model_version,
                "CollectionARN": self.arn(collection_id),
                "CreationTimestamp": datetime.fromtimestamp(record.created_at, tz=UTC),
                "UserCount": record.user_count,
                # what a search with the default threshold means at today's size (search_limits.py)
                "FaceledgerSearchThreshold": self._search_threshold(collection_id, record.face_count),
                # searches scored by AS-norm against this collection's faces (service/cohorts.py)
                "FaceledgerCohortCollectionId": self._store.cohort_collection(collection_id),
            },
            {"FaceCount": record.face_count, "UserCount": record.user_count},
        )

    def _search_threshold(self, collection_id: str, faces: int) -> dict[str, object]:
        try:
            self._models.for_collection(collection_id)  # searchable at all?
            return self._limits.meaning(collection_id, faces).to_response()
        except UncalibratedModelError as error:  # searches are refused until a table is stored
            return {"Status": "UNCALIBRATED", "Message": error.message}
        except InvalidParameterException as error:  # its model is not run here: nothing to promise
            return {"Status": "MODEL_NOT_AVAILABLE", "Message": error.message}

    def list(self, next_token: str | None, max_results: int, visible: Collection[str] | None) -> Reply:
        """Collection ids in order; ``visible`` restricts the listing to those ids."""
        limit = validation.integer(max_results, "MaxResults", 0, MAX_PAGE_SIZE) or 1000
        after = decode_token("collections", next_token)
        ids = self._store.list_collection_ids(
            str(after) if after is not None else None, limit + 1, only=sorted(visible) if visible is not None else None
        )
        response = {
            "CollectionIds": ids[:limit],
            "FaceModelVersions": [self._store.face_model_version(c) for c in ids[:limit]],
        }
        if len(ids) > limit:
            response["NextToken"] = encode_token("collections", ids[limit - 1])
        return Reply(response, {"CollectionIdsCount": len(ids[:limit])})

    def delete(self, collection_id: str) -> Reply:
        self._store.delete_collection(collection_id)
        self._store.after_commit(lambda: self._indexes.drop(collection_id))
        return Reply({"StatusCode": 200}, {"StatusCode": 200})

    def set_threshold_table(self, collection_id: str, table: ThresholdTable) -> Reply:
        """Store a collection's own calibration (a table too small to show FMR <= 1e-4 is refused)."""
        safe = safe_search_threshold(table)
        self._store.set_threshold_table(collection_id, json.dumps(table.to_dict()), time.time())
        return Reply({"SafeThreshold": safe}, {"SafeThreshold": safe})

    def tag(self, resource_arn: str, tags: dict[str, str]) -> Reply:
        collection_id = self.id_from_arn(resource_arn)
        validation.tags(tags)
        self._store.tag_collection(collection_id, tags, MAX_TAGS)
        return Reply({})

    def untag(self, resource_arn: str, tag_keys: Sequence[str]) -> Reply:
        collection_id = self.id_from_arn(resource_arn)
        if not isinstance(tag_keys, (list, tuple)) or not 0 <= len(tag_keys) <= MAX_TAGS:
            raise InvalidParameterException(f"TagKeys must be a list of at most {MAX_TAGS} keys.")
        for key in tag_keys:
            validation.tag_key(key)
        self._store.untag_collection(collection_id, tag_keys)
        return Reply({})

    def tags(self, resource_arn: str) -> Reply:
        return Reply({"Tags": self._store.collection_tags(self.id_from_arn(resource_arn))})
