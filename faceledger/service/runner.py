"""Every operation runs through one runner, and leaves exactly one ledger entry.

The steps, in order: take who is calling (and why) from the request context; authorise the
caller for the operation and its collection; open one unit of work; run the effect; append the
ledger entry to the same unit; commit; run what waits for the commit (index updates, key file
moves). So no effect exists without its entry. A call that is denied or fails still leaves one
entry (outcome ``denied`` or ``error``), appended after its transaction has rolled back.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from faceledger.errors import AccessDeniedException, FaceledgerError, InternalServerError
from faceledger.ledger.chain import Ledger, LedgerEntry
from faceledger.service.access import AccessControl
from faceledger.service.context import current_context
from faceledger.service.objects import S3Object
from faceledger.service.operations import OPERATIONS
from faceledger.store import Store


class Summarised(Protocol):
    """A result that says what the ledger keeps of it (ids and similarities, never free text)."""

    def ledger_summary(self) -> dict[str, Any]: ...


T = TypeVar("T", bound=Summarised)


class OperationRunner:
    """authorise -> unit of work -> effect -> ledger entry -> commit -> after-commit."""

    def __init__(self, store: Store, ledger: Ledger | None, access: Callable[[], AccessControl]) -> None:
        """``ledger`` None: no entries (only to measure what the ledger costs, see Settings)."""
        self._store = store
        self._ledger = ledger
        self._access = access
        self._running = threading.local()

    def run(
        self,
        operation: str,
        effect: Callable[[], T],
        *,
        collection_id: str | None = None,
        images: Iterable[object] = (),
    ) -> T:
        """Run ``effect`` as ``operation`` on behalf of the current request context; ``images``
        are its inputs as given (encoded bytes, decoded with their SHA-256, or S3 objects), hashed
        for the entry once it has run."""
        if getattr(self._running, "operation", None) is not None:
            # one operation, one entry: an operation built from others calls their effects
            raise RuntimeError(f"{operation} started inside {self._running.operation}")
        entry = self._new_entry(operation, collection_id)
        inputs = tuple(images)
        self._running.operation = operation
        try:
            self._access().authorize(current_context().caller, operation, collection_id)
            with self._store.unit_of_work():
                result = effect()
                entry.ended_at, entry.result = time.time(), result.ledger_summary()
                _note_inputs(entry, inputs)
                self._append(entry)
            return result
        except FaceledgerError as error:
            self._append_failure(entry, error, inputs)
            raise
        except Exception:
            self._append_failure(entry, InternalServerError("internal error"), inputs)
            raise
        finally:
            self._running.operation = None

    def record_failure(self, operation: str, error: FaceledgerError, collection_id: str | None = None) -> None:
        """Ledger an operation refused before it reached the service (e.g. malformed on the wire)."""
        self._append_failure(self._new_entry(operation, collection_id), error)

    @staticmethod
    def _new_entry(operation: str, collection_id: str | None) -> LedgerEntry:
        if operation not in OPERATIONS:
            raise ValueError(f"{operation} is not an operation (service/operations.py)")
        context = current_context()
        return LedgerEntry(
            operation=operation,
            started_at=time.time(),
            access_key_id=context.caller.access_key_id,
            role=context.caller.role_name,
            purpose=context.purpose,
            case_ref=context.case_ref,
            collection_id=collection_id,
        )

    def _append(self, entry: LedgerEntry) -> None:
        if self._ledger is not None:
            self._ledger.append(entry)

    def _append_failure(self, entry: LedgerEntry, error: FaceledgerError, inputs: tuple[object, ...] = ()) -> None:
        entry.ended_at = time.time()
        entry.outcome = "denied" if isinstance(error, AccessDeniedException) else "error"
        entry.error = error.code
        entry.result = {}
        _note_inputs(entry, inputs)
        self._append(entry)


def _note_inputs(entry: LedgerEntry, inputs: tuple[object, ...]) -> None:
    """The SHA-256 of each input image as given or read, and where S3 objects were read from
    (bucket, key, version): noted once the operation has read them."""
    entry.input_sha256 = [digest for digest in map(_sha256, inputs) if digest is not None]
    named = [image.ledger_record() for image in inputs if isinstance(image, S3Object)]
    if named:
        entry.result = {**entry.result, "S3Objects": named}


def _sha256(image: object) -> str | None:
    """The SHA-256 of an input image; None for what is no image (refused by the operation)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(image)).hexdigest()
    digest = getattr(image, "sha256", None)  # DecodedImage, AnalyzedImage, S3Object once read
    return digest if isinstance(digest, str) else None
