"""The HTTP server: Rekognition's face API over AWS JSON 1.1 on ``POST /``.

One request: read the body (bounded in size and time), verify SigV4, and only then take a place
among the requests running or waiting (api/admission.py); in a worker thread (model inference never
blocks the event loop) find the operation in ``X-Amz-Target``, check the declared purpose and
case, authorise the caller's key, validate the members against botocore's model, refuse a replay
of a request that changes data (api/replay.py), run the service method, answer JSON. Every
failure becomes ``{"__type": ..., "message": ...}`` with the SDKs' error names.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from faceledger.api import sigv4, wire
from faceledger.api.admission import Admission, BodyBudget, read_body
from faceledger.api.console.app import ConsoleLimits, create_console
from faceledger.api.rate import UNKNOWN_KEYS, KeyRateLimits, RefusalAllowance
from faceledger.api.replay import ReplayCache, ReplayedRequestException
from faceledger.errors import FaceledgerError, InternalServerError, InvalidParameterException
from faceledger.service import FaceService, validation
from faceledger.service.access import Caller, Role, unknown_caller
from faceledger.service.context import RequestContext, acting_as
from faceledger.service.operations import IMAGE_OPERATIONS, changes_data
from faceledger.store import AccessKey

access_log = logging.getLogger("faceledger.access")
PURPOSE_HEADER = "x-faceledger-purpose"
CASE_HEADER = "x-faceledger-case"
REVIEW_HEADER = "x-faceledger-review-case"
THRESHOLD_HEADER = "x-faceledger-threshold"
EXPECTED_FALSE_CANDIDATES_HEADER = "x-faceledger-expected-false-candidates"
THRESHOLD_STATUS_HEADER = "x-faceledger-threshold-status"
IMAGE_WORKER_NICENESS = 10
# the caller of a server started with --insecure-no-auth
ANONYMOUS = Caller("anonymous", Role.ADMIN, None)
# what the access log says of a client gone before its answer (nginx's "client closed request")
DISCONNECTED_STATUS = 499
error_log = logging.getLogger("faceledger.api")


@dataclass(frozen=True)
class ApiSettings:
    """Limits of the HTTP API; sizes in bytes, times in seconds.

    ``auth``: verify SigV4 (turned off only by ``serve --insecure-no-auth``).
    ``max_body_bytes``: largest request body read (CompareFaces carries two 5 MB images in
    base64). Requests run on two sets of worker threads, each with its own queue: those that
    analyse an image (service/operations.py's IMAGE_OPERATIONS: hundreds of milliseconds each) on
    ``worker_threads`` (default: one per core), below the others' CPU priority (nice 10), every
    other request (a millisecond or two: searches by face id, lists, deletes) on
    ``quick_threads``, so that cheap calls neither queue behind image analysis nor wait for a core
    it keeps busy (benchmarks/mixed_load.py).
    ``max_waiting``: requests queued beyond the running ones, on each path, before
    ThrottlingException (a request takes its place only once its body has arrived and its
    signature holds). ``clock_skew_seconds``: how far X-Amz-Date may be off.

    Slow and abusive clients: ``header_timeout_seconds`` from a connection's start (or a further
    request's first byte) to the end of its headers, then 408 and close; ``body_timeout_seconds``
    from the headers to the end of the body, then RequestTimeoutException (408) and close (20 s
    takes a 16 MiB body at 6.7 Mbit/s); ``max_header_bytes`` for the request line and headers
    (then 400); ``max_connections`` open at once, ``max_connections_per_client`` from one address
    (then 503 ThrottlingException and close); ``unauthenticated_body_bytes``: bodies received and
    not yet authenticated, all connections together (then ThrottlingException; bodies up to
    64 KiB are never refused for it).

    ``refuse_replays``: refuse a second request with the signature of one already run that
    changes data (ReplayedRequestException, 503), remembering at most ``replay_cache_entries``
    signatures. ``refusal_ledger_interval_seconds``: a failed authentication (of a known key) or a
    refused replay is ledgered at most once per access key in this time; the access log has each.

    ``requests_per_second_per_key`` and ``burst_per_key``: each access key's request rate (a token
    bucket), checked once the request is authenticated; beyond it ThrottlingException.

    ``console``: serve the web console under ``/console/`` (api/console/; never with ``auth``
    off: it signs in with access keys).
    """

    auth: bool = True
    max_body_bytes: int = 16 * 1024 * 1024
    worker_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    quick_threads: int = 8
    max_waiting: int = 64
    clock_skew_seconds: int = 300
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 20.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 512
    max_connections_per_client: int = 128
    unauthenticated_body_bytes: int = 64 * 1024 * 1024
    refuse_replays: bool = True
    replay_cache_entries: int = 100_000
    refusal_ledger_interval_seconds: float = 10.0
    requests_per_second_per_key: float = 100.0
    burst_per_key: int = 200
    console: bool = True


@dataclass(frozen=True)
class _CallHeaders:
    """The headers faceledger reads besides the signature's: each value received."""

    target: str | None
    purpose: list[str]
    case: list[str]


def create_app(service: FaceService, settings: ApiSettings | None = None) -> Starlette:
    settings = settings or ApiSettings()
    quick_workers = anyio.CapacityLimiter(settings.quick_threads)
    image_workers = ThreadPoolExecutor(
        settings.worker_threads, thread_name_prefix="faceledger-image", initializer=_lower_priority
    )
    admissions = {
        True: Admission(settings.worker_threads + settings.max_waiting),
        False: Admission(settings.quick_threads + settings.max_waiting),
    }
    # signature checks (key lookup, body hash, HMAC) run off the event loop, before admission
    verifiers = anyio.CapacityLimiter(settings.worker_threads + settings.quick_threads)
    budget = BodyBudget(settings.unauthenticated_body_bytes)
    replays = (
        ReplayCache(
            settings.replay_cache_entries,
            timedelta(seconds=2 * settings.clock_skew_seconds),
            shared=service.store.remember_signature,
        )
        if settings.auth and settings.refuse_replays
        else None
    )
    allowance = RefusalAllowance(settings.refusal_ledger_interval_seconds)
    refusals = _RefusalLedger(service, allowance)
    rates = KeyRateLimits(settings.requests_per_second_per_key, settings.burst_per_key)

    async def handle(request: Request) -> Response:
        started = time.perf_counter()
        record: dict[str, Any] = {"remote": request.client.host if request.client else None}
        body_read = False
        try:
            with budget.holding() as holding:
                body = await read_body(
                    request, limit=settings.max_body_bytes, timeout=settings.body_timeout_seconds, holding=holding
                )
                body_read = True
                record["bytes_in"] = len(body)
                headers = _CallHeaders(
                    request.headers.get("x-amz-target"),
                    request.headers.getlist(PURPOSE_HEADER),
                    request.headers.getlist(CASE_HEADER),
                )
                caller, verified = ANONYMOUS, None
                if settings.auth:
                    signed = _signed_request(request, body)
                    caller, verified = await anyio.to_thread.run_sync(
                        _authenticate, service, settings, signed, refusals, limiter=verifiers
                    )
            record["access_key_id"] = caller.access_key_id
            rates.take(caller.access_key_id)
            image = _analyses_an_image(headers.target)
            with admissions[image]:
                call = (_handle, service, caller, verified, headers, body, record, replays, refusals)
                if image:
                    result = await asyncio.get_running_loop().run_in_executor(image_workers, *call)
                else:
                    result = await anyio.to_thread.run_sync(*call, limiter=quick_workers)
            response = _success_response(result)
        except ClientDisconnect:  # gone before its body arrived: nobody to answer, nothing broke
            record["error"] = "ClientDisconnected"
            response = Response(status_code=DISCONNECTED_STATUS)
        except FaceledgerError as error:
            record["error"] = error.code
            response = _error_response(error, close=not body_read)
        except Exception:  # the envelope must hold whatever broke; the log keeps the traceback
            error_log.exception("unexpected failure in %s", record.get("operation"))
            record["error"] = InternalServerError.code
            response = _error_response(InternalServerError("Internal server error; nothing was changed."))
        record["status"] = response.status_code
        record["ms"] = round((time.perf_counter() - started) * 1000, 1)
        access_log.info(json.dumps(record, separators=(",", ":")))
        return response

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        image_workers.shutdown(wait=False)

    routes: list[BaseRoute] = [Route("/", handle, methods=["POST", "GET"])]
    if settings.console and settings.auth:
        limits = ConsoleLimits(settings.max_body_bytes, settings.body_timeout_seconds)
        routes += [
            Route("/console", lambda _: RedirectResponse("/console/", status_code=308)),
            Mount("/console", create_console(service, limits, budget, image_workers, allowance)),
        ]
    return Starlette(routes=routes, lifespan=lifespan)


def _handle(
    service: FaceService,
    caller: Caller,
    verified: sigv4.Verified | None,
    headers: _CallHeaders,
    body: bytes,
    record: dict[str, Any],
    replays: ReplayCache | None,
    refusals: _RefusalLedger,
) -> dict[str, Any]:
    with acting_as(RequestContext(caller)):
        operation = wire.operation_for(headers.target)
        record["operation"] = operation.name
        try:
            purpose = _declared(headers.purpose, "X-Faceledger-Purpose", validation.PURPOSE_MAX_CHARS)
            case_ref = _declared(headers.case, "X-Faceledger-Case", validation.CASE_MAX_CHARS)
        except FaceledgerError as error:
            service.record_failure(operation.name, error)  # ledgered without what was refused
            raise
    with acting_as(RequestContext(caller, purpose=purpose, case_ref=case_ref)):
        method = getattr(service, wire.method_name(operation))
        try:
            # the role first: a denied caller learns nothing of how its request would have fared
            service.access.authorize(caller, operation.name, None)
            arguments = wire.request_arguments(operation, wire.parse_body(body), method)
            # remembered only now, when it would run: a replay of a refused request is refused alike
            if replays is not None and verified is not None and changes_data(operation.name):
                replays.admit(verified)
        except ReplayedRequestException as error:
            refusals.record(caller.access_key_id, operation.name, error)
            raise
        except FaceledgerError as error:
            service.record_failure(operation.name, error)  # refused on the wire: still one entry
            raise
        return method(**arguments)  # authorised for the collection and ledgered by the service


def _lower_priority() -> None:
    """Run this thread (an image worker) below the others: on a machine whose cores image analysis
    keeps busy, cheap requests then get the CPU when they need it."""
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), IMAGE_WORKER_NICENESS)


def _analyses_an_image(target: str | None) -> bool:
    """Whether X-Amz-Target names an operation that analyses an image (one that names no operation
    is refused by _handle, cheaply)."""
    return target is not None and target.rpartition(".")[2] in IMAGE_OPERATIONS


def _declared(values: list[str], header: str, max_chars: int) -> str | None:
    """A declared purpose or case reference: one printable value (HTTP header text, ISO-8859-1)."""
    if len(values) > 1:
        raise InvalidParameterException(f"{header} must be sent once, not {len(values)} times.")
    return validation.declared(values[0] if values else None, header, max_chars)


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


def _authenticate(
    service: FaceService, settings: ApiSettings, signed: sigv4.SignedRequest, refusals: _RefusalLedger
) -> tuple[Caller, sigv4.Verified]:
    keys = service.access.keys
    found: dict[str, AccessKey] = {}

    def secret_for(access_key_id: str) -> str | None:
        key = keys.get(access_key_id)
        if key is None or not key.enabled:
            return None
        found[access_key_id] = key
        return service.access.secret(access_key_id)

    try:
        verified = sigv4.verify_request(signed, secret_for, max_skew=timedelta(seconds=settings.clock_skew_seconds))
    except FaceledgerError as error:
        refusals.failed_authentication(signed, error)
        raise
    return service.access.caller(found[verified.access_key_id]), verified


class _RefusalLedger:
    """Ledgers requests made in a key's name that the key's holder may not have made: failed
    authentications and refused replays, each name within its RefusalAllowance.

    Known keys are ledgered under the key and its role; unknown ones as ``unknown:<claimed id>``
    with no role, all of them sharing one allowance (made-up key ids cannot flood the ledger). An
    operation is named only when X-Amz-Target names one faceledger serves."""

    def __init__(self, service: FaceService, allowance: RefusalAllowance) -> None:
        self._service = service
        self._allowance = allowance

    def failed_authentication(self, signed: sigv4.SignedRequest, error: FaceledgerError) -> None:
        claimed = sigv4.claimed_access_key_id(signed)
        key = self._service.access.keys.get(claimed) if claimed else None
        try:
            operation = wire.operation_for(next(iter(signed.headers.get("x-amz-target", [])), None))
        except FaceledgerError:
            return
        if key is not None:
            caller, allowance = self._service.access.caller(key), key.access_key_id
        else:
            caller, allowance = unknown_caller(claimed), UNKNOWN_KEYS
        if self._allowance.due(allowance):
            with acting_as(RequestContext(caller)):
                self._service.record_failure(operation.name, error)

    def record(self, access_key_id: str, operation: str, error: FaceledgerError) -> None:
        """Ledger ``error`` for ``operation`` in the current request context, if due."""
        if self._allowance.due(access_key_id):
            self._service.record_failure(operation, error)


def _success_response(result: dict[str, Any]) -> Response:
    response = Response(wire.response_body(result), media_type=wire.CONTENT_TYPE)
    if "FaceledgerReview" in result:  # SDKs drop unmodelled members; a header reaches them
        response.headers[REVIEW_HEADER] = result["FaceledgerReview"]["CaseId"]
    if "FaceledgerThreshold" in result:  # what the threshold used means at this collection's size
        meaning = result["FaceledgerThreshold"]
        response.headers[THRESHOLD_HEADER] = f"{meaning['Threshold']:g}"
        expected = meaning["ExpectedFalseCandidatesUpper95"]
        response.headers[EXPECTED_FALSE_CANDIDATES_HEADER] = "unknown" if expected is None else f"{expected:.3g}"
        response.headers[THRESHOLD_STATUS_HEADER] = meaning["Status"]
    return response


def _error_response(error: FaceledgerError, *, close: bool = False) -> Response:
    """The AWS error envelope; ``close`` the connection when the body was not read to its end."""
    headers = {"x-amzn-ErrorType": error.code}
    if close:
        headers["connection"] = "close"
    return Response(
        wire.error_body(error), status_code=error.http_status, media_type=wire.CONTENT_TYPE, headers=headers
    )
