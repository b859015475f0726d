"""Rates: a request rate per access key, so that one key (a runaway script, a stolen key) cannot
take every worker from the others (a token bucket of ``burst`` requests refilled at ``rate`` per
second); and how often a refusal in one name is written to the ledger, so that a flood of
forgeries cannot flood it."""

from __future__ import annotations

import threading
import time

from faceledger.errors import ThrottlingException


class KeyRateLimits:
    def __init__(self, rate: float, burst: int, *, clock=time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)
        self._lock = threading.Lock()

    def take(self, access_key_id: str) -> None:
        """Spend one request of the key's allowance, or raise ThrottlingException (SDKs retry)."""
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.get(access_key_id, (self._burst, now))
            tokens = min(self._burst, tokens + (now - then) * self._rate)
            if tokens < 1.0:
                self._buckets[access_key_id] = (tokens, now)
                raise ThrottlingException(
                    f"Access key {access_key_id} is over its {self._rate:g} requests per second; retry with backoff."
                )
            self._buckets[access_key_id] = (tokens - 1.0, now)
            if len(self._buckets) > 10_000:  # forget keys whose bucket has refilled
                full = (self._burst - 1.0) / self._rate if self._rate else float("inf")
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}


# the one allowance every claimed key id that is no key here shares (made-up ids cannot flood)
UNKNOWN_KEYS = "unknown keys"


class RefusalAllowance:
    """At most one ledger entry per name (an access key id, or ``UNKNOWN_KEYS``) per ``interval``
    seconds for requests refused in that name (failed authentications, refused replays, failed
    console sign-ins); the access log has every one."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, name: str) -> bool:
        """Whether a refusal in ``name`` is to be ledgered now (it then counts as ledgered)."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(name)
            if last is not None and now - last < self._interval:
                return False
            if len(self._last) >= 10_000:  # forget names quiet for an interval
                self._last = {k: t for k, t in self._last.items() if now - t < self._interval}
            self._last[name] = now
            return True
