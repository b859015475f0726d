"""The console's defences, each against one attack:

- **Session cookie** (stolen by script, sent by another site): HttpOnly, SameSite=Strict, Path
  limited to the console, Secure when the console is reached over HTTPS; it holds a random token
  whose SHA-256 is all the store keeps (service/console_sessions.py).
- **Forged form posts** (a page on another origin, or another port of the same host, which
  browsers treat as the same site and send the cookie to): every state-changing request carries a
  CSRF token derived from the session token (HMAC), which a page elsewhere cannot read; an
  ``Origin`` header, when the browser sends one, must be the console's own. The sign-in form,
  before any session exists, carries a random token that must match a cookie of its own
  (double submit), so that no page elsewhere posts a sign-in for a visitor (a page on the same
  host, another port, can still set cookies: docs/console.md).
- **Guessing secrets**: failed sign-ins are counted per access key id and client address, and per
  client address; past ``SignInThrottle``'s limits, sign-in is refused without checking. Failed
  sign-ins are ledgered within the API's allowance for refusals (api/rate.py: once per key per
  interval, unknown keys sharing one), every one is logged.
- **Framing, sniffing, leaking**: a strict Content-Security-Policy (nothing but the console's own
  script file, styles and images, face crops as ``data:`` images), no framing, no referrer beyond the console itself (``no-referrer`` would make the browser send
  ``Origin: null`` on the console's own forms), and no
  caching of pages that show faces or the ledger.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "faceledger_console"
SIGN_IN_COOKIE = "faceledger_console_sign_in"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: a page must have been served within the session to know it."""
    return hmac.new(session_token.encode(), b"faceledger console csrf", hashlib.sha256).hexdigest()


def same_token(given: object, expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def new_sign_in_token() -> str:
    return secrets.token_urlsafe(24)


def foreign_origin(request: Request) -> bool:
    """Whether the request says it comes from a page of another origin than the console's."""
    origin = request.headers.get("origin")
    if origin is None:  # not sent by every browser on every request; the CSRF token still holds
        return False
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    return origin != own


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(
        name, path=COOKIE_PATH, httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )


@dataclass
class SignInThrottle:
    """At most ``per_key`` failed sign-ins of one access key id from one client address, and
    ``per_address`` from one address, in ``window`` seconds; then sign-in is refused there until
    the oldest failure leaves the window. Counted per key *and* address, so that nobody locks a
    named person out of the console by failing in their name from elsewhere (key ids are not
    secret); secrets are 240 random bits, so the throttle limits noise, not a feasible guess. A
    success does not reset the count. At most ``max_names`` counts are kept (the oldest dropped)."""

    per_key: int = 5
    per_address: int = 20
    window: float = 15 * 60.0
    max_names: int = 100_000
    _failures: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, access_key_id: str, address: str) -> float | None:
        """Seconds until a sign-in may be tried again, or None if it may be tried now."""
        now = time.monotonic()
        waits = []
        with self._lock:
            for name, limit in self._limits(access_key_id, address):
                failures = self._failures.get(name)
                recent = [t for t in failures if t > now - self.window] if failures else []
                if len(recent) >= limit:
                    waits.append(recent[0] + self.window - now)
        return max(waits) if waits else None

    def failed(self, access_key_id: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            for name, _ in self._limits(access_key_id, address):
                failures = self._failures.pop(name, None) or deque()
                while failures and failures[0] <= now - self.window:
                    failures.popleft()
                failures.append(now)
                self._failures[name] = failures  # the most recently failed last
            while len(self._failures) > self.max_names:
                self._failures.popitem(last=False)

    def _limits(self, access_key_id: str, address: str) -> list[tuple[str, int]]:
        return [(f"key:{access_key_id}@{address}", self.per_key), (f"address:{address}", self.per_address)]
