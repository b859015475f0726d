"""The one list of operations: their names, and where each is offered.

Everything else takes operation names from here: the access rules (service/access.py), the HTTP
API's dispatch (api/wire.py) and the runner that ledgers every call (service/runner.py), so an
operation cannot exist in one place and be missing in another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Door(str, Enum):
    """Where an operation can be called from, besides the CLI and Python."""

    REKOGNITION = "RekognitionService"  # Rekognition's face API over HTTP (X-Amz-Target prefix)
    FACELEDGER = "FaceledgerService"  # faceledger's own accountability operations over HTTP
    LOCAL = "local"  # the operator at the machine only (CLI, Python)
    CONSOLE = "console"  # the web console only (faceledger/console/): signing in and out
    JOB = "job"  # the end of a job a Start operation asked for, ledgered as whoever asked


@dataclass(frozen=True)
class Operation:
    name: str  # Rekognition's (or faceledger's) operation name, e.g. SearchFacesByImage
    door: Door

    @property
    def method(self) -> str:
        """The :class:`~faceledger.service.FaceService` method: the name in snake_case."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self.name).lower()


def _operations(door: Door, *names: str) -> list[Operation]:
    return [Operation(name, door) for name in names]


OPERATIONS: dict[str, Operation] = {
    operation.name: operation
    for operation in (
        *_operations(
            Door.REKOGNITION,
            "CreateCollection",
            "DescribeCollection",
            "ListCollections",
            "DeleteCollection",
            "DetectFaces",
            "CompareFaces",
            "IndexFaces",
            "ListFaces",
            "DeleteFaces",
            "SearchFaces",
            "SearchFacesByImage",
            "CreateUser",
            "DeleteUser",
            "ListUsers",
            "AssociateFaces",
            "DisassociateFaces",
            "SearchUsers",
            "SearchUsersByImage",
            "TagResource",
            "UntagResource",
            "ListTagsForResource",
            "StartFaceDetection",
            "GetFaceDetection",
            "StartFaceSearch",
            "GetFaceSearch",
        ),
        *_operations(
            Door.FACELEDGER,
            "PutCollectionPolicy",
            "UpdateCollectionPolicy",
            "GetCollectionPolicy",
            "PutCollectionCohort",
            "GetCollectionCohort",
            "RecordConsent",
            "WithdrawConsent",
            "ListConsents",
            "GetReviewCase",
            "ListReviewCases",
            "DecideReview",
            "EraseFaces",
            "ListLedgerEntries",
            "VerifyLedger",
            "SearchAllFacesByImage",
        ),
        *_operations(Door.CONSOLE, "StartConsoleSession", "EndConsoleSession"),
        *_operations(Door.JOB, "FaceDetectionJob", "FaceSearchJob"),
        *_operations(
            Door.LOCAL,
            "SetThresholdTable",
            "CreateAccessKey",
            "SetAccessKeyEnabled",
            "DeleteAccessKey",
            "RotateTemplateKey",
            "ExportLedger",
            "Purge",
            "CheckDataDirectory",
            "RegisterFaceModel",
            "RegisterFusedFaceModel",
            "MigrateCollection",
            "MigrateStore",
        ),
    )
}


def offered_at(door: Door) -> frozenset[str]:
    """Names of the operations offered at ``door``."""
    return frozenset(name for name, operation in OPERATIONS.items() if operation.door is door)


def operation_names(*names: str) -> frozenset[str]:
    """``names`` as a set, each checked against the registry: a misspelt name in a rule (who may
    call what, which calls may be replayed) would otherwise silently match nothing."""
    unknown = set(names) - OPERATIONS.keys()
    if unknown:
        raise ValueError(f"not operations: {sorted(unknown)}")
    return frozenset(names)


# Operations that decode and analyse an image (detection, alignment, embedding): a few hundred
# milliseconds of CPU each, where the others take a millisecond or two. The HTTP API runs them on
# workers of their own, so that cheap calls never queue behind them (api/app.py).
IMAGE_OPERATIONS = operation_names(
    "DetectFaces", "CompareFaces", "IndexFaces", "SearchFacesByImage", "SearchUsersByImage", "SearchAllFacesByImage"
)

# Operations that change nothing but the ledger: a replay of them is harmless (api/replay.py),
# and a store migration resumed after them copies nothing stale (service/store_migration.py).
READ_OPERATIONS = operation_names(
    "DescribeCollection",
    "ListCollections",
    "ListTagsForResource",
    "DetectFaces",
    "CompareFaces",
    "ListFaces",
    "ListUsers",
    "SearchFaces",
    "SearchFacesByImage",
    "SearchAllFacesByImage",
    "SearchUsers",
    "SearchUsersByImage",
    "GetCollectionPolicy",
    "ListReviewCases",
    "GetReviewCase",
    "ListLedgerEntries",
    "VerifyLedger",
    "GetFaceDetection",
    "GetFaceSearch",
)


def changes_data(operation: str) -> bool:
    """Whether a replay of ``operation`` is refused: every operation that is not a read (so an
    operation added later is protected unless it is listed as a read)."""
    return operation not in READ_OPERATIONS
