"""Refusing replays of signed requests that change data (stricter than AWS, which accepts them).

A SigV4 signature is valid for the whole clock-skew window (5 minutes either side), so a captured
IndexFaces, DeleteFaces or DeleteCollection could be sent again and run again. The server
remembers the signature of each such request it runs until the signature expires, and refuses
the same signature a second time. Reads (describe, list, get, detect, compare, search) may be
replayed: they change nothing but the ledger.

Several nodes (or processes) serving one store share what they ran: each signature is also
recorded in the store, in a transaction of its own, and a signature recorded by any of them is
refused by all (behind a load balancer, a captured request replayed to another node verifies
there too: the Host header is the balancer's). Each node keeps its own record in memory as well,
so that its own replays are refused without a database round trip.

An SDK making the same call twice within one second sends the same signature too (X-Amz-Date has
one-second resolution). The refusal is therefore a 503, which every AWS SDK retries, and each
retry is signed anew, so such a call runs a moment later, as it would on AWS.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from faceledger.api.sigv4 import IncompleteSignatureException, Verified
from faceledger.errors import FaceledgerError, ThrottlingException


class ReplayedRequestException(FaceledgerError):
    """This signed request, which changes data, was already received."""

    code = "ReplayedRequestException"
    http_status = 503  # retried by SDKs, which sign the retry anew


_REPLAYED = (
    "This signed request was already received, and it changes data: faceledger runs it once. "
    "Sign it again to repeat it (AWS SDKs sign every retry anew)."
)


class ReplayCache:
    """Signatures of the requests run that change data, each kept until it expires.

    ``capacity``: signatures remembered at most; when that many are unexpired, further requests
    that change data get ThrottlingException rather than go unremembered. ``horizon``: the longest
    a signature is remembered (twice the clock skew: a request may be dated that far ahead);
    a presigned URL valid for longer cannot be used to change data."""

    def __init__(
        self,
        capacity: int,
        horizon: timedelta,
        shared: Callable[[str, float, float], bool] | None = None,
    ) -> None:
        """``shared(signature, expires_at, now)``: record the signature where every node sees it;
        False when it was recorded already (Store.remember_signature)."""
        self._shared = shared
        self._capacity = capacity
        self._horizon = horizon
        self._expiry: dict[str, datetime] = {}
        self._queue: list[tuple[datetime, str]] = []  # heap by expiry
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def admit(self, verified: Verified, now: datetime | None = None) -> None:
        """Remember ``verified``'s signature, or raise ReplayedRequestException if it is known."""
        now = now or datetime.now(UTC)
        if verified.valid_until - now > self._horizon:
            raise IncompleteSignatureException(
                f"A presigned request that changes data must expire within {self._horizon.total_seconds() / 2:g} "
                "seconds, so that its replays can be refused."
            )
        with self._lock:
            while self._queue and self._queue[0][0] < now:
                del self._expiry[heapq.heappop(self._queue)[1]]
            if verified.signature in self._expiry:
                raise ReplayedRequestException(_REPLAYED)
            if len(self._expiry) >= self._capacity:
                raise ThrottlingException(
                    "Too many requests that change data in the last minutes to guard against their replay; "
                    "retry with backoff."
                )
            self._expiry[verified.signature] = verified.valid_until
            heapq.heappush(self._queue, (verified.valid_until, verified.signature))
        if self._shared is not None and not self._shared(
            verified.signature, verified.valid_until.timestamp(), now.timestamp()
        ):
            raise ReplayedRequestException(_REPLAYED)
