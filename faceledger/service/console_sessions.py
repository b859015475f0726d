"""Sign-ins to the web console (faceledger/console/): an access key's secret is checked once and
exchanged for a random session token, which the browser keeps in a cookie and sends instead.

The store keeps only the token's SHA-256 (a copy of the database signs nobody in) and every node
of the store knows every session, so a sign-out ends it everywhere. A session ends at sign-out,
``IDLE_SECONDS`` after its last use, ``LIFETIME_SECONDS`` after sign-in, or as soon as its key is
disabled or deleted."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable

from faceledger.service.access import AccessControl, Caller
from faceledger.service.results import Reply
from faceledger.store import Store
from faceledger.store.records import ConsoleSession

LIFETIME_SECONDS = 8 * 3600.0  # a working day, then sign in again
IDLE_SECONDS = 30 * 60.0  # a console left alone this long is signed out
_TOUCH_EVERY_SECONDS = 60.0  # how stale the recorded last use may be (saves a write per page)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ConsoleSessions:
    def __init__(self, store: Store, access: Callable[[], AccessControl]) -> None:
        """``access``: the access keys (read when first needed: the secrets key is made then)."""
        self._store = store
        self._access = access

    def start(self, caller: Caller) -> Reply:
        """A new session of ``caller`` (whose secret was checked): its token is in the response
        and nowhere else, never in the ledger."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        expires_at = now + LIFETIME_SECONDS
        self._store.console_sessions.start(
            ConsoleSession(token_sha256(token), caller.access_key_id, now, now, expires_at), expired_before=now
        )
        return Reply(
            {
                "SessionToken": token,
                "AccessKeyId": caller.access_key_id,
                "Role": caller.role_name,
                "ExpiresAt": expires_at,
            },
            {"ExpiresAt": expires_at},
        )

    def caller(self, token: str) -> Caller | None:
        """The caller signed in with ``token``, or None: unknown, ended, expired, idle too long,
        or its key disabled or deleted since."""
        if not isinstance(token, str) or not token:
            return None
        digest = token_sha256(token)
        session = self._store.console_sessions.get(digest)
        now = time.time()
        if session is None or now >= session.expires_at or now - session.last_seen_at >= IDLE_SECONDS:
            return None
        key = self._access().keys.get(session.access_key_id)
        if key is None or not key.enabled:
            return None
        if now - session.last_seen_at >= _TOUCH_EVERY_SECONDS:
            self._store.console_sessions.touch(digest, now)
        return self._access().caller(key)

    def end(self, token: str) -> Reply:
        ended = isinstance(token, str) and self._store.console_sessions.end(token_sha256(token))
        return Reply({"Ended": ended}, {"Ended": ended})
