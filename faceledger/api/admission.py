"""What a request may hold before it is admitted to a worker, and the admission itself.

A request is read in full first (within a deadline), its signature is checked next, and only then
does it take a place among the requests running or waiting for a worker thread. So a client that
sends slowly, or sends what it cannot sign, holds no worker and no place in the queue: at most a
connection (capped in api/connections.py) and the bytes it has sent, counted against one budget
for all the bodies not yet authenticated.
"""

from __future__ import annotations

import threading
from types import TracebackType

import anyio
from starlette.requests import Request

from faceledger.errors import FaceledgerError, ImageTooLargeException, ThrottlingException

# A body this small is never refused for the budget: whatever many connections send of it stays
# within the connection cap times this, and small calls (lists, deletes, searches by face id)
# keep working while large uploads wait.
SMALL_BODY_BYTES = 64 * 1024


class RequestTimeoutException(FaceledgerError):
    """The request body did not arrive within the server's deadline (SDKs retry this)."""

    code = "RequestTimeoutException"
    http_status = 408


class Admission:
    """Counts requests running or waiting for a worker, to answer ThrottlingException instead of
    queueing forever."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._count = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            if self._count >= self._limit:
                raise ThrottlingException("Too many requests are waiting; retry with backoff.")
            self._count += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._count -= 1


class BodyBudget:
    """Bytes of request bodies received and not yet authenticated, across all connections.

    ``limit`` in bytes. Bytes count as they arrive, not as declared, so a client that declares a
    large body and sends it slowly holds little; a body that would take the total past the limit
    is refused (before a byte is read when its Content-Length already says so)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held(self) -> int:
        return self._held

    def holding(self) -> BodyHolding:
        """The bytes of one request, given back when the ``with`` block ends (once authenticated
        or refused)."""
        return BodyHolding(self)

    def _take(self, size: int, body_size: int, *, keep: bool = True) -> None:
        """Count ``size`` more bytes of a body of ``body_size`` bytes (or only check that they
        would fit, when not ``keep``)."""
        with self._lock:
            if body_size > SMALL_BODY_BYTES and self._held + size > self.limit:
                raise ThrottlingException(
                    f"The server is receiving {self._held:,} bytes of request bodies not yet authenticated; "
                    f"its limit is {self.limit:,}. Retry with backoff."
                )
            if keep:
                self._held += size

    def _give_back(self, size: int) -> None:
        with self._lock:
            self._held -= size


class BodyHolding:
    """The bytes one request holds of a :class:`BodyBudget`."""

    def __init__(self, budget: BodyBudget) -> None:
        self._budget = budget
        self.size = 0

    def check_room(self, declared: int) -> None:
        """Refuse now a body whose declared size does not fit what is left of the budget."""
        self._budget._take(declared, declared, keep=False)

    def add(self, size: int, body_size: int) -> None:
        self._budget._take(size, body_size)
        self.size += size

    def __enter__(self) -> BodyHolding:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._budget._give_back(self.size)
        self.size = 0


async def read_body(request: Request, *, limit: int, timeout: float, holding: BodyHolding) -> bytes:
    """The whole body, at most ``limit`` bytes, arrived within ``timeout`` seconds of the headers,
    each byte counted in ``holding``. Raises ImageTooLargeException, ThrottlingException (budget
    spent), RequestTimeoutException, or starlette's ClientDisconnect."""
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise ImageTooLargeException(f"The request body is {declared:,} bytes; the limit is {limit:,}.")
    if declared is not None:
        holding.check_room(declared)
    body = bytearray()
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                if len(body) + len(chunk) > limit:
                    raise ImageTooLargeException(f"The request body is over the limit of {limit:,} bytes.")
                holding.add(len(chunk), max(declared or 0, len(body) + len(chunk)))
                body += chunk
    except TimeoutError:
        expected = f"{declared:,}" if declared is not None else "an unknown number of"
        raise RequestTimeoutException(
            f"The request body did not arrive within {timeout:g} seconds ({len(body):,} of {expected} bytes came)."
        ) from None
    return bytes(body)


def _declared_length(request: Request) -> int | None:
    declared = request.headers.get("content-length")
    # h11 has refused a malformed Content-Length before the request got here
    return int(declared) if declared is not None and declared.isdigit() else None
