"""Connection limits uvicorn lacks: a cap on open connections (overall and per client address)
and a deadline for a request's line and headers.

uvicorn closes a connection idle between requests (``timeout_keep_alive``), but a connection that
sends nothing, or sends its headers a byte at a time, stays open for as long as the client likes,
and it accepts as many such connections as the operating system lets it. This protocol is
uvicorn's own h11 protocol with those two holes closed; the body's deadline is the app's
(api/admission.py). Refusals are answered as AWS errors and written to the access log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

access_log = logging.getLogger("faceledger.access")


class ConnectionGuard:
    """Open connections, counted overall and per client address, for every protocol instance
    of one server.

    ``max_connections`` and ``max_per_client``: connections open at once (behind a reverse proxy
    every client has the proxy's address). ``header_timeout``: seconds from a connection's start,
    or from the first byte of a further request on it, to the end of the request's headers."""

    def __init__(self, max_connections: int, max_per_client: int, header_timeout: float) -> None:
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.header_timeout = header_timeout
        self._open = 0
        self._per_client: dict[str | None, int] = {}
        self._lock = threading.Lock()

    def open(self, client: str | None) -> str | None:
        """Count a new connection from ``client``; returns why it is refused, or None."""
        with self._lock:
            if self._open >= self.max_connections:
                return f"The server has {self._open} connections open, its limit."
            if self._per_client.get(client, 0) >= self.max_per_client:
                return f"Your address has {self.max_per_client} connections open, the limit per client."
            self._open += 1
            self._per_client[client] = self._per_client.get(client, 0) + 1
            return None

    def close(self, client: str | None) -> None:
        with self._lock:
            self._open -= 1
            remaining = self._per_client.pop(client, 1) - 1
            if remaining:
                self._per_client[client] = remaining


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol under a :class:`ConnectionGuard` (see :func:`guarded_protocol`)."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._counted = False
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        refusal = self.guard.open(self._client_host())
        if refusal is not None:
            self._refuse(503, "Service Unavailable", "ThrottlingException", refusal + " Retry with backoff.")
            return
        self._counted = True
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # (part of) a request line or headers, no request yet
            if self._header_deadline is None and not self.transport.is_closing():
                self._await_headers()
        else:
            self._stop_waiting()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        if self._counted:
            self._counted = False
            self.guard.close(self._client_host())
        super().connection_lost(exc)

    def _client_host(self) -> str | None:
        return self.client[0] if self.client else None

    def _await_headers(self) -> None:
        self._header_deadline = self.loop.call_later(self.guard.header_timeout, self._headers_too_slow)

    def _stop_waiting(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._refuse(
                408,
                "Request Timeout",
                "RequestTimeoutException",
                f"The request line and headers did not arrive within {self.guard.header_timeout:g} seconds.",
            )

    def _refuse(self, status: int, reason: str, code: str, message: str) -> None:
        """Answer with an AWS error envelope outside h11's bookkeeping, and close."""
        body = json.dumps({"__type": code, "message": message}).encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/x-amz-json-1.1\r\n"
            f"x-amzn-ErrorType: {code}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()
        access_log.info(
            json.dumps({"remote": self._client_host(), "error": code, "status": status}, separators=(",", ":"))
        )


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedH11Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` whose connections ``guard`` counts."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": guard})
