"""A request rate per access key, so that one key (a runaway script, a stolen key) cannot take
every worker from the others: a token bucket of ``burst`` requests refilled at ``rate`` per second."""

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
