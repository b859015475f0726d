"""Collection operations: create, describe, list, delete, and tags."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Sequence
from datetime import datetime, timezone

from faceledger.config import Settings
from faceledger.errors import InvalidParameterException
from faceledger.index import VectorIndexRegistry
from faceledger.service import validation
from faceledger.service.context import current_context
from faceledger.service.ledgering import ledgered
from faceledger.service.pagination import decode_token, encode_token
from faceledger.service.shapes import Response
from faceledger.service.validation import MAX_PAGE_SIZE
from faceledger.service.thresholds import ThresholdTable, safe_search_threshold, shipped_table
from faceledger.store import SQLiteStore

MAX_TAGS = 200


class CollectionOperations:
    """Mixed into :class:`FaceService`, which provides the members declared here."""

    settings: Settings
    store: SQLiteStore
    indexes: VectorIndexRegistry
    face_model_version: str

    def collection_arn(self, collection_id: str) -> str:
        return (
            f"arn:aws:rekognition:{self.settings.region}:{self.settings.account_id}"
            f":collection/{collection_id}"
        )

    def collection_id_from_arn(self, resource_arn: str) -> str:
        """The collection id named by a collection ARN (any region and account are accepted,
        since clients build ARNs from their own configuration)."""
        parts = resource_arn.split(":", 5) if isinstance(resource_arn, str) else []
        if len(parts) != 6 or parts[:3] != ["arn", "aws", "rekognition"] or not parts[5].startswith("collection/"):
            raise InvalidParameterException(
                f"ResourceArn {resource_arn!r} is not a collection ARN "
                "(arn:aws:rekognition:REGION:ACCOUNT:collection/ID); only collections have tags here."
            )
        return validation.collection_id(parts[5][len("collection/"):])

    @ledgered("CreateCollection")
    def create_collection(self, *, collection_id: str, tags: dict[str, str] | None = None) -> Response:
        validation.collection_id(collection_id)
        if tags is not None:
            validation.tags(tags)
        self.store.create_collection(collection_id, self.face_model_version, time.time(), tags)
        return {
            "StatusCode": 200,
            "CollectionArn": self.collection_arn(collection_id),
            "FaceModelVersion": self.face_model_version,
        }

    @ledgered("DescribeCollection")
    def describe_collection(self, *, collection_id: str) -> Response:
        validation.collection_id(collection_id)
        record = self.store.get_collection(collection_id)
        return {
            "FaceCount": record.face_count,
            "FaceModelVersion": record.face_model_version,
            "CollectionARN": self.collection_arn(collection_id),
            "CreationTimestamp": datetime.fromtimestamp(record.created_at, tz=timezone.utc),
            "UserCount": record.user_count,
        }

    @ledgered("ListCollections")
    def list_collections(
        self,
        *,
        next_token: str | None = None,
        max_results: int = 1000,
        visible: Collection[str] | None = None,
    ) -> Response:
        """Collection ids in order; ``visible`` restricts the listing to those ids (by default,
        those the calling access key covers)."""
        limit = validation.integer(max_results, "MaxResults", 0, MAX_PAGE_SIZE) or 1000
        after = decode_token("collections", next_token)
        if visible is None:
            visible = current_context().caller.collections
        ids = self.store.list_collection_ids(
            str(after) if after is not None else None, limit + 1, only=sorted(visible) if visible is not None else None
        )
        response: Response = {
            "CollectionIds": ids[:limit],
            "FaceModelVersions": [self.face_model_version] * len(ids[:limit]),
        }
        if len(ids) > limit:
            response["NextToken"] = encode_token("collections", ids[limit - 1])
        return response

    @ledgered("DeleteCollection")
    def delete_collection(self, *, collection_id: str) -> Response:
        validation.collection_id(collection_id)
        self.store.delete_collection(collection_id)
        self.store.after_commit(lambda: self.indexes.drop(collection_id))
        return {"StatusCode": 200}

    def threshold_table(self, collection_id: str) -> ThresholdTable:
        """The collection's own calibration (``faceledger calibrate``), else the shipped one."""
        stored = self.store.threshold_table(collection_id)
        return ThresholdTable.from_dict(json.loads(stored)) if stored is not None else shipped_table()

    @ledgered("SetThresholdTable")
    def set_threshold_table(self, *, collection_id: str, table: ThresholdTable) -> dict[str, float]:
        """Store a collection's own calibration; its searches then default to its safe threshold
        (a table too small to show FMR <= 1e-4 is refused)."""
        validation.collection_id(collection_id)
        safe = safe_search_threshold(table)
        self.store.set_threshold_table(collection_id, json.dumps(table.to_dict()), time.time())
        return {"SafeThreshold": safe}

    def default_search_threshold(self, collection_id: str) -> float:
        """Similarity whose measured false-match rate is at most 1e-4 (95% upper bound) on the
        collection's calibration data."""
        return safe_search_threshold(self.threshold_table(collection_id))

    def search_threshold(self, collection_id: str, requested: float | None, name: str) -> float:
        """``requested`` once validated, or the collection's default search threshold."""
        if requested is None:
            return self.default_search_threshold(collection_id)
        return validation.percent(requested, name)

    @ledgered("TagResource")
    def tag_resource(self, *, resource_arn: str, tags: dict[str, str]) -> Response:
        collection_id = self.collection_id_from_arn(resource_arn)
        validation.tags(tags)
        self.store.tag_collection(collection_id, tags, MAX_TAGS)
        return {}

    @ledgered("UntagResource")
    def untag_resource(self, *, resource_arn: str, tag_keys: Sequence[str]) -> Response:
        collection_id = self.collection_id_from_arn(resource_arn)
        if not isinstance(tag_keys, (list, tuple)) or not 0 <= len(tag_keys) <= MAX_TAGS:
            raise InvalidParameterException(f"TagKeys must be a list of at most {MAX_TAGS} keys.")
        for key in tag_keys:
            validation.tag_key(key)
        self.store.untag_collection(collection_id, tag_keys)
        return {}

    @ledgered("ListTagsForResource")
    def list_tags_for_resource(self, *, resource_arn: str) -> Response:
        return {"Tags": self.store.collection_tags(self.collection_id_from_arn(resource_arn))}
