"""The HTTP server: Rekognition's face API over AWS JSON 1.1 on ``POST /``.

One request: read the body (bounded), verify SigV4, find the operation in ``X-Amz-Target``,
authorise the caller's key for it, validate the members against botocore's model, run the
service method in a worker thread (model inference never blocks the event loop), answer JSON.
Every failure becomes ``{"__type": ..., "message": ...}`` with the SDKs' error names.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from faceledger.api import sigv4, wire
from faceledger.errors import (
    FaceledgerError,
    ImageTooLargeException,
    InternalServerError,
    ThrottlingException,
)
from faceledger.service import FaceService
from faceledger.service.access import Caller, Role
from faceledger.service.context import RequestContext, acting_as
from faceledger.store import AccessKey

access_log = logging.getLogger("faceledger.access")
PURPOSE_HEADER = "x-faceledger-purpose"
CASE_HEADER = "x-faceledger-case"
REVIEW_HEADER = "x-faceledger-review-case"
THRESHOLD_HEADER = "x-faceledger-threshold"
EXPECTED_FALSE_CANDIDATES_HEADER = "x-faceledger-expected-false-candidates"
THRESHOLD_STATUS_HEADER = "x-faceledger-threshold-status"
# the caller of a server started with --insecure-no-auth
ANONYMOUS = Caller("anonymous", Role.ADMIN, None)
error_log = logging.getLogger("faceledger.api")


@dataclass(frozen=True)
class ApiSettings:
    """``auth``: verify SigV4 (turned off only by ``serve --insecure-no-auth``).
    ``max_body_bytes``: largest request body read (CompareFaces carries two 5 MB images in
    base64). ``worker_threads``: requests run at once; ``max_waiting``: requests queued beyond
    that before ThrottlingException. ``clock_skew_seconds``: how far X-Amz-Date may be off."""

    auth: bool = True
    max_body_bytes: int = 16 * 1024 * 1024
    worker_threads: int = 4
    max_waiting: int = 64
    clock_skew_seconds: int = 300


class _Admission:
    """Counts requests in the building, to answer ThrottlingException instead of queueing forever."""

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


def create_app(service: FaceService, settings: ApiSettings | None = None) -> Starlette:
    settings = settings or ApiSettings()
    limiter = anyio.CapacityLimiter(settings.worker_threads)
    admission = _Admission(settings.worker_threads + settings.max_waiting)

    async def handle(request: Request) -> Response:
        started = time.perf_counter()
        record: dict[str, Any] = {"remote": request.client.host if request.client else None}
        try:
            with admission:
                body = await _read_body(request, settings.max_body_bytes)
                record["bytes_in"] = len(body)
                signed = _signed_request(request, body) if settings.auth else None
                # one hop to a worker thread for authentication (SQLite, HMAC) and the call
                headers = {name: request.headers.get(name) for name in ("x-amz-target", PURPOSE_HEADER, CASE_HEADER)}
                result = await anyio.to_thread.run_sync(
                    _handle, service, settings, signed, headers, body, record, limiter=limiter
                )
            response = Response(wire.response_body(result), media_type=wire.CONTENT_TYPE)
            if "FaceledgerReview" in result:  # SDKs drop unmodelled members; a header reaches them
                response.headers[REVIEW_HEADER] = result["FaceledgerReview"]["CaseId"]
            if "FaceledgerThreshold" in result:  # what the threshold used means at this collection's size
                meaning = result["FaceledgerThreshold"]
                response.headers[THRESHOLD_HEADER] = f"{meaning['Threshold']:g}"
                expected = meaning["ExpectedFalseCandidatesUpper95"]
                response.headers[EXPECTED_FALSE_CANDIDATES_HEADER] = (
                    "unknown" if expected is None else f"{expected:.3g}"
                )
                response.headers[THRESHOLD_STATUS_HEADER] = meaning["Status"]
        except FaceledgerError as error:
            record["error"] = error.code
            response = _error_response(error)
        except Exception:  # the envelope must hold whatever broke; the log keeps the traceback
            error_log.exception("unexpected failure in %s", record.get("operation"))
            record["error"] = InternalServerError.code
            response = _error_response(InternalServerError("Internal server error; nothing was changed."))
        record["status"] = response.status_code
        record["ms"] = round((time.perf_counter() - started) * 1000, 1)
        access_log.info(json.dumps(record, separators=(",", ":")))
        return response

    return Starlette(routes=[Route("/", handle, methods=["POST", "GET"])])


def _handle(
    service: FaceService,
    settings: ApiSettings,
    signed: sigv4.SignedRequest | None,
    headers: dict[str, str],
    body: bytes,
    record: dict[str, Any],
) -> dict[str, Any]:
    caller = _authenticate(service, settings, signed) if signed is not None else ANONYMOUS
    record["access_key_id"] = caller.access_key_id
    context = RequestContext(caller, purpose=headers.get(PURPOSE_HEADER), case_ref=headers.get(CASE_HEADER))
    with acting_as(context):
        operation = wire.operation_for(headers.get("x-amz-target"))
        record["operation"] = operation.name
        method = getattr(service, wire.method_name(operation))
        try:
            # the role first: a denied caller learns nothing of how its request would have fared
            service.access.authorize(caller, operation.name, None)
            arguments = wire.request_arguments(operation, wire.parse_body(body), method)
        except FaceledgerError as error:
            service.record_failure(operation.name, error)  # refused on the wire: still one entry
            raise
        return method(**arguments)  # authorised for the collection and ledgered by the service


def _signed_request(request: Request, body: bytes) -> sigv4.SignedRequest:
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.raw:
        headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return sigv4.SignedRequest(
        method=request.method,
        raw_path=request.scope.get("raw_path", b"/").decode("latin-1"),
        query=list(request.query_params.multi_items()),
        headers=headers,
        body=body,
    )


def _authenticate(service: FaceService, settings: ApiSettings, signed: sigv4.SignedRequest) -> Caller:
    keys = service.access.keys
    found: dict[str, AccessKey] = {}

    def secret_for(access_key_id: str) -> str | None:
        key = keys.get(access_key_id)
        if key is None or not key.enabled:
            return None
        found[access_key_id] = key
        return service.access.secret(access_key_id)

    access_key_id = sigv4.verify_request(signed, secret_for, max_skew=timedelta(seconds=settings.clock_skew_seconds))
    return service.access.caller(found[access_key_id])


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ImageTooLargeException(f"The request body is {int(declared):,} bytes; the limit is {limit:,}.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ImageTooLargeException(f"The request body is over the limit of {limit:,} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _error_response(error: FaceledgerError) -> Response:
    return Response(
        wire.error_body(error),
        status_code=error.http_status,
        media_type=wire.CONTENT_TYPE,
        headers={"x-amzn-ErrorType": error.code},
    )
