"""Every operation leaves exactly one ledger entry, written in the same transaction as its effect.

Operations are marked with :func:`ledgered`. A marked call: takes who is calling (and why) from
the request context, authorises it, runs inside one unit of work, and appends its ledger entry to
that unit before it commits, so no effect exists without its entry. A call that is denied or
fails still leaves one entry (outcome ``denied`` or ``error``), appended once its transaction has
rolled back. Calls made inside a marked call are covered by the outer entry.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from faceledger.errors import AccessDeniedException, FaceledgerError, InternalServerError
from faceledger.ledger.chain import Ledger, LedgerEntry
from faceledger.service.context import RequestContext, acting_as, current_context, local_caller
from faceledger.vision import AnalyzedImage, DecodedImage

if TYPE_CHECKING:
    from faceledger.config import Settings
    from faceledger.service.access import AccessControl
    from faceledger.store import SQLiteStore

F = TypeVar("F", bound=Callable[..., Any])


_depth: ContextVar[int] = ContextVar("faceledger_ledger_depth", default=0)


def ledgered(operation: str) -> Callable[[F], F]:
    def decorate(method: F) -> F:
        @functools.wraps(method)
        def run(self: LedgeredOperations, **kwargs: Any) -> Any:
            return self.run_ledgered(operation, method, kwargs)

        return run  # type: ignore[return-value]

    return decorate


_IMAGE_ARGUMENTS = ("image", "source_image", "target_image")


def input_hashes(kwargs: dict[str, Any]) -> list[str]:
    hashes = []
    for name in _IMAGE_ARGUMENTS:
        image = kwargs.get(name)
        if isinstance(image, (DecodedImage, AnalyzedImage)):
            hashes.append(image.sha256)
        elif isinstance(image, (bytes, bytearray, memoryview)):
            hashes.append(hashlib.sha256(bytes(image)).hexdigest())
    return hashes


def summarize(response: Any) -> dict[str, Any]:
    """What came back, for the ledger: face and user ids with their similarities; for listings,
    only how many."""
    if not isinstance(response, dict):
        return {}
    summary: dict[str, Any] = {}
    for key, value in response.items():
        if key in ("FaceMatches", "UserMatches"):
            summary[key] = [
                {k: v for k, v in (("FaceId", m.get("Face", {}).get("FaceId")),
                                   ("UserId", m.get("User", {}).get("UserId")),
                                   ("Similarity", round(m.get("Similarity", 0.0), 4))) if v is not None}
                for m in value
            ]
        elif key == "FaceRecords":
            summary["IndexedFaceIds"] = [r["Face"]["FaceId"] for r in value]
        elif key == "DeletedFaces" or key.endswith("FaceIds"):
            summary[key] = list(value)  # erasure receipts among them
        elif key in ("AssociatedFaces", "DisassociatedFaces"):
            summary[key] = [f["FaceId"] for f in value]
        elif key == "FaceledgerReview":
            summary["ReviewCaseId"] = value["CaseId"]
        elif key in ("SearchedFaceId", "UserStatus", "AccessKeyId", "Role", "CaseId", "Status") or (
            isinstance(value, (int, float)) and not isinstance(value, bool)
        ):
            summary[key] = value  # never SecretAccessKey or other free text
        elif isinstance(value, list):
            summary[f"{key}Count"] = len(value)
    return summary


def _new_entry(operation: str) -> LedgerEntry:
    """An entry for ``operation`` starting now, on behalf of the current request context."""
    context = current_context()
    return LedgerEntry(
        operation=operation, started_at=time.time(), access_key_id=context.caller.access_key_id,
        role=context.caller.role.value, purpose=context.purpose, case_ref=context.case_ref,
    )


class LedgeredOperations:
    """Mixed into :class:`FaceService`, which provides the members declared here."""

    store: SQLiteStore
    ledger: Ledger
    access: AccessControl
    settings: Settings
    collection_id_from_arn: Callable[[str], str]

    def run_ledgered(self, operation: str, method: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        depth = _depth.get()
        if depth:
            return method(self, **kwargs)
        token = _depth.set(depth + 1)
        entry = _new_entry(operation)
        entry.input_sha256 = input_hashes(kwargs)
        try:
            entry.collection_id = self._collection_of(kwargs)
            self.access.authorize(current_context().caller, operation, entry.collection_id)
            with self.store.unit_of_work():
                response = method(self, **kwargs)
                entry.ended_at, entry.result = time.time(), summarize(response)
                self._append(entry)
            return response
        except FaceledgerError as error:
            self._append_failure(entry, error)
            raise
        except Exception:
            self._append_failure(entry, InternalServerError("internal error"))
            raise
        finally:
            _depth.reset(token)

    def record_failure(self, operation: str, error: FaceledgerError, collection_id: str | None = None) -> None:
        """Ledger an operation refused before it reached the service (e.g. malformed on the wire)."""
        entry = _new_entry(operation)
        entry.collection_id = collection_id
        self._append_failure(entry, error)

    def _append(self, entry: LedgerEntry) -> None:
        if self.settings.audit_ledger:
            self.ledger.append(entry)

    def _append_failure(self, entry: LedgerEntry, error: FaceledgerError) -> None:
        entry.ended_at = time.time()
        entry.outcome = "denied" if isinstance(error, AccessDeniedException) else "error"
        entry.error = error.code
        entry.result = {}
        self._append(entry)

    def _collection_of(self, kwargs: dict[str, Any]) -> str | None:
        if isinstance(kwargs.get("collection_id"), str):
            return kwargs["collection_id"]
        if isinstance(kwargs.get("resource_arn"), str):
            return self.collection_id_from_arn(kwargs["resource_arn"])
        return None
