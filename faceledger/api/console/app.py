"""The web console, served by ``faceledger serve`` under ``/console/``: review of matches, the
audit ledger, collections (policy, faces, users, consent, erasure) and search, for the people
who do them in a browser.

Every page runs the same service operations as the HTTP API, under the signed-in access key and
its role, so each is authorised and ledgered exactly as an API call would be; what a role may not
call is neither shown nor allowed. Pages are rendered on the server (Jinja2, autoescaped); the
browser runs no script but the console's own. security.py says how sessions and forms are kept
safe.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from faceledger.api.admission import BodyBudget, read_body
from faceledger.api.console import display
from faceledger.api.console.security import (
    CSRF_FIELD,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    SignInThrottle,
    clear_cookie,
    csrf_token,
    foreign_origin,
    new_sign_in_token,
    same_token,
    set_cookie,
)
from faceledger.api.rate import UNKNOWN_KEYS, RefusalAllowance
from faceledger.errors import AccessDeniedException, FaceledgerError, InvalidParameterException
from faceledger.ledger.chain import LedgerEntry
from faceledger.service import FaceService, validation
from faceledger.service.access import KEY_ID, PERMISSIONS, Caller, Role
from faceledger.service.console_sessions import LIFETIME_SECONDS
from faceledger.service.context import RequestContext, acting_as
from faceledger.service.review_operations import similarity_meaning

log = logging.getLogger("faceledger.console")
HERE = Path(__file__).parent
PAGE_SIZE = 50
# the review page's views: what the tab says, and the ListReviewCases filters it is
REVIEW_VIEWS: dict[str, tuple[str, dict[str, object]]] = {
    "waiting": ("Waiting for you", {"awaiting_my_decision": True}),
    "open": ("Open", {"status": "OPEN"}),
    "mine": ("Your own searches", {}),
    "closed": ("Closed", {"status": "CLOSED"}),
    "all": ("All cases", {}),
}
# where each role lands after signing in: the work it is there for
HOME = {
    Role.REVIEWER: "/console/reviews",
    Role.AUDITOR: "/console/audit",
    Role.SEARCHER: "/console/search",
    Role.INDEXER: "/console/collections",
    Role.ADMIN: "/console/collections",
}
_FORM_FIELD_MAX_CHARS = 4000
SIGN_IN_BODY_BYTES = 8 * 1024  # a key id, a secret and a token


@dataclass(frozen=True)
class ConsoleLimits:
    """``max_body_bytes``: the largest form (a photo to search with); ``body_timeout_seconds``:
    how long a form may take to arrive (the HTTP API's limits, ApiSettings)."""

    max_body_bytes: int
    body_timeout_seconds: float


@dataclass(frozen=True)
class Visitor:
    """The signed-in caller of one request and their session's CSRF token."""

    caller: Caller
    csrf: str

    def may(self, operation: str) -> bool:
        return self.caller.role is not None and operation in PERMISSIONS[self.caller.role]


Page = Callable[[Request, Visitor], Awaitable[Response]]


def create_console(
    service: FaceService,
    limits: ConsoleLimits,
    budget: BodyBudget,
    image_workers: Executor,
    refusals: RefusalAllowance,
) -> Starlette:
    """The console as an app to mount at ``/console`` (api/app.py). ``budget``: the API's budget
    of request bodies received and not yet authenticated, which console forms share;
    ``image_workers``: where the API runs image analysis (below other requests' CPU priority),
    where the console's searches run too; ``refusals``: the API's allowance for ledgering
    refusals, which failed sign-ins share."""
    console = Console(service, limits, budget, image_workers, refusals)
    routes = [
        Route("/", console.signed_in(console.home)),
        Route("/sign-in", console.sign_in_page, methods=["GET"]),
        Route("/sign-in", console.sign_in, methods=["POST"]),
        Route("/sign-out", console.signed_in(console.sign_out, form=True), methods=["POST"]),
        Route("/reviews", console.signed_in(console.reviews)),
        Route("/reviews/{case_id}", console.signed_in(console.review_case)),
        Route("/reviews/{case_id}/decide", console.signed_in(console.decide, form=True), methods=["POST"]),
        Route("/audit", console.signed_in(console.audit)),
        Route("/audit/verify", console.signed_in(console.verify)),
        Route("/audit/export", console.signed_in(console.export)),
        Route("/collections", console.signed_in(console.collections)),
        Route("/collections/{collection_id}", console.signed_in(console.collection)),
        Route(
            "/collections/{collection_id}/policy", console.signed_in(console.change_policy, form=True), methods=["POST"]
        ),
        Route(
            "/collections/{collection_id}/consents",
            console.signed_in(console.record_consent, form=True),
            methods=["POST"],
        ),
        Route(
            "/collections/{collection_id}/consents/{consent_id}/withdraw",
            console.signed_in(console.withdraw_consent, form=True),
            methods=["POST"],
        ),
        Route("/collections/{collection_id}/erase", console.signed_in(console.erase, form=True), methods=["POST"]),
        Route("/search", console.signed_in(console.search_page), methods=["GET"]),
        Route("/search", console.signed_in(console.search, form=True), methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: console.http_error})
    app.add_middleware(_SecurityHeaders)
    return app


class _SecurityHeaders:
    """Adds security.SECURITY_HEADERS to every response of the console (pure ASGI middleware)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class Console:
    def __init__(
        self,
        service: FaceService,
        limits: ConsoleLimits,
        budget: BodyBudget,
        image_workers: Executor,
        refusals: RefusalAllowance,
    ) -> None:
        self._service = service
        self._image_workers = image_workers
        self._refusals = refusals
        self._limits = limits
        self._budget = budget
        self._throttle = SignInThrottle()
        self._templates = Jinja2Templates(directory=HERE / "templates")
        display.install(self._templates.env)

    # -- plumbing ----------------------------------------------------------------------------

    def signed_in(self, page: Page, *, form: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """``page`` for a signed-in visitor only. ``form``: a state-changing POST, whose body is read
        within the limits, and which must come from the console's own page (Origin, CSRF token)."""

        async def endpoint(request: Request) -> Response:
            token = request.cookies.get(SESSION_COOKIE, "")
            caller = await run_in_threadpool(self._service.console_caller, token) if token else None
            if form and foreign_origin(request):
                return self._refused(request, "This form was sent from a page that is not the console's.")
            if caller is None:
                if request.method != "GET":
                    return self._refused(request, "Your console session has ended: sign in again.", status=401)
                return RedirectResponse("/console/sign-in", status_code=303)
            visitor = Visitor(caller, csrf_token(token))
            if form:
                try:
                    request = await self._with_body(request)
                    fields = await request.form(max_files=1, max_fields=50, max_part_size=self._limits.max_body_bytes)
                except ClientDisconnect:
                    return Response(status_code=499)
                except FaceledgerError as error:
                    return self._error(request, visitor, error)
                if not same_token(fields.get(CSRF_FIELD), visitor.csrf):
                    return self._refused(
                        request, "This form does not carry the console's token (CSRF): nothing was done."
                    )
                request.state.form = fields
            try:
                return await page(request, visitor)
            except FaceledgerError as error:
                return self._error(request, visitor, error)
            except Exception:  # the page must hold whatever broke; the log keeps the traceback
                log.exception("console page %s failed", request.url.path)
                return self._refused(request, "Internal error: the operation did not complete.", status=500)

        return endpoint

    async def _with_body(self, request: Request, limit: int | None = None) -> Request:
        """The request with its body read in full within the console's limits (``limit`` bytes,
        by default a photo's; counted against the API's budget of bodies not yet acted on)."""
        with self._budget.holding() as holding:
            body = await read_body(
                request,
                limit=limit or self._limits.max_body_bytes,
                timeout=self._limits.body_timeout_seconds,
                holding=holding,
            )
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return Request(request.scope, replay)

    async def _run(
        self,
        visitor: Visitor,
        method: Callable[..., Any],
        /,
        *,
        declared_purpose: str | None = None,
        declared_case: str | None = None,
        on: Executor | None = None,
        **arguments: Any,
    ) -> Any:
        """Run a service operation as the visitor, with the purpose and case reference declared
        (a search's), off the event loop: on the executor ``on`` (the API's image workers, for an
        operation that analyses a photo), else on a thread of Starlette's."""

        def call() -> Any:
            context = RequestContext(visitor.caller, purpose=declared_purpose, case_ref=declared_case)
            with acting_as(context):
                return method(**arguments)

        if on is not None:
            return await asyncio.get_running_loop().run_in_executor(on, call)
        return await run_in_threadpool(call)

    def _render(
        self, request: Request, visitor: Visitor | None, template: str, status: int = 200, **context: Any
    ) -> Response:
        return self._templates.TemplateResponse(
            request,
            template,
            {"visitor": visitor, "nav": _navigation(visitor), "csrf_field": CSRF_FIELD, **context},
            status_code=status,
        )

    def _error(self, request: Request, visitor: Visitor | None, error: FaceledgerError) -> Response:
        return self._render(request, visitor, "error.html", status=_status(error), error=error)

    def _refused(self, request: Request, message: str, status: int = 403) -> Response:
        return self._render(request, None, "refused.html", status=status, message=message)

    async def http_error(self, request: Request, error: Exception) -> Response:
        status = error.status_code if isinstance(error, HTTPException) else 500
        return self._render(request, None, "refused.html", status=status, message="There is no such page.")

    # -- signing in and out ------------------------------------------------------------------

    async def sign_in_page(self, request: Request, *, message: str | None = None, status: int = 200) -> Response:
        token = new_sign_in_token()
        response = self._render(request, None, "sign_in.html", status=status, sign_in_token=token, message=message)
        set_cookie(response, request, SIGN_IN_COOKIE, token, max_age=3600)
        return response

    async def sign_in(self, request: Request) -> Response:
        if foreign_origin(request):
            return self._refused(request, "This form was sent from a page that is not the console's.")
        try:
            fields = await (await self._with_body(request, SIGN_IN_BODY_BYTES)).form(
                max_files=0, max_fields=10, max_part_size=SIGN_IN_BODY_BYTES
            )
            if not same_token(fields.get("sign_in_token"), request.cookies.get(SIGN_IN_COOKIE, "")):
                return self._refused(request, "This sign-in form did not come from the console: nothing was done.")
            access_key_id = _text(fields, "access_key_id", 128) or ""
            secret = _text(fields, "secret", 256) or ""
        except ClientDisconnect:
            return Response(status_code=499)
        except FaceledgerError as error:
            return await self.sign_in_page(request, message=error.message, status=_status(error))
        address = request.client.host if request.client else "unknown"
        # what was typed as the id may be a secret in the wrong field: logged only if it is an id
        shown = access_key_id if KEY_ID.fullmatch(access_key_id) else "(not a key id)"
        wait = self._throttle.retry_after(access_key_id, address)
        if wait is not None:
            log.warning("console sign-in throttled for key %s from %s", shown, address)
            return await self.sign_in_page(
                request, message=f"Too many failed sign-ins: try again in {int(wait // 60) + 1} minutes.", status=429
            )
        known = await run_in_threadpool(self._service.access.keys.get, access_key_id)
        ledger_refusal = self._refusals.due(access_key_id if known is not None else UNKNOWN_KEYS)
        try:
            started = await run_in_threadpool(
                lambda: self._service.start_console_session(
                    access_key_id=access_key_id, secret=secret, ledger_refusal=ledger_refusal
                )
            )
        except AccessDeniedException:
            self._throttle.failed(access_key_id, address)
            log.warning("console sign-in failed for key %s from %s", shown, address)
            return await self.sign_in_page(
                request, message="That access key id and secret do not sign in here.", status=401
            )
        except FaceledgerError as error:
            return await self.sign_in_page(request, message=error.message, status=_status(error))
        response = RedirectResponse("/console/", status_code=303)
        set_cookie(response, request, SESSION_COOKIE, started["SessionToken"], max_age=int(LIFETIME_SECONDS))
        clear_cookie(response, request, SIGN_IN_COOKIE)
        return response

    async def sign_out(self, request: Request, visitor: Visitor) -> Response:
        token = request.cookies.get(SESSION_COOKIE, "")
        await self._run(visitor, self._service.end_console_session, session_token=token)
        response = RedirectResponse("/console/sign-in", status_code=303)
        clear_cookie(response, request, SESSION_COOKIE)
        return response

    async def home(self, request: Request, visitor: Visitor) -> Response:
        return RedirectResponse(HOME[visitor.caller.role or Role.SEARCHER], status_code=303)

    # -- review ------------------------------------------------------------------------------

    async def reviews(self, request: Request, visitor: Visitor) -> Response:
        """The review cases, one view at a time, a page of them oldest first: for a reviewer first
        the queue (others' open searches with a candidate they have not decided yet)."""
        deciding = visitor.may("DecideReview")
        hidden = set() if deciding else {"waiting"}
        if not (deciding and visitor.may("SearchFacesByImage")):  # only a key that also searches has its own
            hidden.add("mine")
        views = {key: view for key, view in REVIEW_VIEWS.items() if key not in hidden}
        show = request.query_params.get("show") or next(iter(views))
        if show not in views:
            raise InvalidParameterException(f"There is no review view {show!r}: one of {', '.join(views)}.")
        filters = dict(views[show][1])
        if show == "mine":
            filters["opened_by"] = visitor.caller.access_key_id
        page = await self._run(
            visitor,
            self._service.list_review_cases,
            **filters,
            next_token=request.query_params.get("next") or None,
            max_results=PAGE_SIZE,
        )
        return self._render(
            request,
            visitor,
            "reviews.html",
            cases=page["Cases"],
            next_token=page.get("NextToken"),
            views={k: label for k, (label, _) in views.items()},
            show=show,
            mine=visitor.caller.access_key_id,
            deciding=deciding,
        )

    async def review_case(self, request: Request, visitor: Visitor) -> Response:
        case = await self._run(
            visitor,
            self._service.get_review_case,
            case_id=request.path_params["case_id"],
            include_face_crops=True,
        )
        return self._render(
            request,
            visitor,
            "review_case.html",
            case=case,
            can_decide=visitor.may("DecideReview") and case["OpenedBy"] != visitor.caller.access_key_id,
            own_search=case["OpenedBy"] == visitor.caller.access_key_id,
        )

    async def decide(self, request: Request, visitor: Visitor) -> Response:
        fields: FormData = request.state.form
        case_id = request.path_params["case_id"]
        decision = _text(fields, "decision", 16)
        await self._run(
            visitor,
            self._service.decide_review,
            case_id=case_id,
            face_id=_text(fields, "face_id", 64) or "",
            decision=decision or "",
            note=_text(fields, "note", 2000) or "",
        )
        return RedirectResponse(f"/console/reviews/{case_id}", status_code=303)

    # -- audit -------------------------------------------------------------------------------

    async def audit(self, request: Request, visitor: Visitor) -> Response:
        filters = _ledger_filters(request)
        page = await self._run(
            visitor,
            self._service.list_ledger_entries,
            **filters,
            next_token=request.query_params.get("next") or None,
            max_results=PAGE_SIZE,
        )
        return self._render(
            request,
            visitor,
            "audit.html",
            entries=page["Entries"],
            next_token=page["NextToken"],
            query=_query_without(request, "next"),
            shown=_shown_filters(request),
        )

    async def verify(self, request: Request, visitor: Visitor) -> Response:
        result = await self._run(visitor, self._service.verify_ledger)
        return self._render(request, visitor, "verify.html", result=result)

    async def export(self, request: Request, visitor: Visitor) -> Response:
        filters = _ledger_filters(request)
        spool = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)

        def write(entry: LedgerEntry) -> None:
            spool.write((entry.export_line() + "\n").encode())

        await self._run(visitor, self._service.export_ledger, write=write, **filters)
        spool.seek(0)

        def chunks() -> Iterator[bytes]:
            with spool:
                while chunk := spool.read(64 * 1024):
                    yield chunk

        stamp = datetime.now(tz=UTC).strftime("%Y%m%dT%H%M%SZ")
        return StreamingResponse(
            chunks(),
            media_type="application/jsonl",
            headers={"Content-Disposition": f'attachment; filename="faceledger-ledger-{stamp}.jsonl"'},
        )

    # -- collections -------------------------------------------------------------------------

    async def collections(self, request: Request, visitor: Visitor) -> Response:
        listing = await self._run(
            visitor,
            self._service.list_collections,
            next_token=request.query_params.get("next") or None,
            max_results=PAGE_SIZE,
        )
        described = [
            await self._run(visitor, self._service.describe_collection, collection_id=collection_id)
            for collection_id in listing["CollectionIds"]
        ]
        return self._render(
            request,
            visitor,
            "collections.html",
            collections=list(zip(listing["CollectionIds"], described, strict=True)),
            next_token=listing.get("NextToken"),
        )

    async def collection(self, request: Request, visitor: Visitor) -> Response:
        return await self._collection_page(request, visitor, request.query_params.get("tab", "overview"))

    async def _collection_page(self, request: Request, visitor: Visitor, tab: str, **notices: Any) -> Response:
        """One tab of a collection's page (overview, faces, users, consents: one or two
        operations each), with what a form just did (``notices``)."""
        collection_id = request.path_params["collection_id"]
        next_token = request.query_params.get("next") if not notices else None
        context: dict[str, Any] = {"collection_id": collection_id, "tab": tab, **notices}
        # a tab the role may not open is refused by its operation (ledgered), as over the API
        listings = {"faces": self._service.list_faces, "users": self._service.list_users}
        if tab in listings:
            context["page"] = await self._run(
                visitor,
                listings[tab],
                collection_id=collection_id,
                next_token=next_token or None,
                max_results=PAGE_SIZE,
            )
        elif tab == "consents":
            listing = await self._run(visitor, self._service.list_consents, collection_id=collection_id)
            context["consents"] = listing["Consents"]
        else:
            context["tab"] = "overview"
            context["described"] = await self._run(
                visitor, self._service.describe_collection, collection_id=collection_id
            )
            context["policy"] = await self._run(
                visitor, self._service.get_collection_policy, collection_id=collection_id
            )
        return self._render(request, visitor, "collection.html", **context)

    async def change_policy(self, request: Request, visitor: Visitor) -> Response:
        fields: FormData = request.state.form
        collection_id = request.path_params["collection_id"]
        changed = await self._run(
            visitor,
            self._service.update_collection_policy,
            collection_id=collection_id,
            purpose_required=fields.get("purpose_required") == "on",
            consent_required=fields.get("consent_required") == "on",
            review_required=fields.get("review_required") == "on",
            min_threshold=_number(fields, "min_threshold", float, "Minimum threshold"),
            max_results=_number(fields, "max_results", int, "Maximum results"),
            retention_days=_number(fields, "retention_days", int, "Retention (days)"),
        )
        return await self._collection_page(request, visitor, "overview", changes=changed["Changes"])

    async def record_consent(self, request: Request, visitor: Visitor) -> Response:
        fields: FormData = request.state.form
        expires = _text(fields, "expires_on", 10)
        recorded = await self._run(
            visitor,
            self._service.record_consent,
            collection_id=request.path_params["collection_id"],
            external_image_id=_text(fields, "external_image_id", 255) or "",
            basis=_text(fields, "basis", 1000) or "",
            reference=_text(fields, "reference", 1000) or "",
            expires_at=display.parse_date(expires, "Expires on") if expires else None,
        )
        return await self._collection_page(request, visitor, "consents", recorded=recorded)

    async def withdraw_consent(self, request: Request, visitor: Visitor) -> Response:
        collection_id = request.path_params["collection_id"]
        receipt = await self._run(
            visitor,
            self._service.withdraw_consent,
            collection_id=collection_id,
            consent_id=request.path_params["consent_id"],
        )
        return await self._collection_page(
            request, visitor, "consents", receipt=receipt, receipt_of="Consent withdrawn"
        )

    async def erase(self, request: Request, visitor: Visitor) -> Response:
        fields: FormData = request.state.form
        face_id = _text(fields, "face_id", 64)
        external_image_id = _text(fields, "external_image_id", 255)
        receipt = await self._run(
            visitor,
            self._service.erase_faces,
            collection_id=request.path_params["collection_id"],
            face_ids=[face_id] if face_id else None,
            external_image_id=external_image_id,
        )
        what = f"face {face_id}" if face_id else f"every face of ExternalImageId {external_image_id!r}"
        return await self._collection_page(request, visitor, "faces", receipt=receipt, receipt_of=f"Erased {what}")

    # -- search ------------------------------------------------------------------------------

    async def search_page(self, request: Request, visitor: Visitor, status: int = 200, **outcome: Any) -> Response:
        collections = (await self._run(visitor, self._service.list_collections, max_results=1000))["CollectionIds"]
        return self._render(request, visitor, "search.html", status=status, collections=collections, **outcome)

    async def search(self, request: Request, visitor: Visitor) -> Response:
        fields: FormData = request.state.form
        photo = fields.get("photo")
        collection_id = _text(fields, "collection_id", 255) or ""
        purpose, case = _text(fields, "purpose", _FORM_FIELD_MAX_CHARS), _text(fields, "case", _FORM_FIELD_MAX_CHARS)
        searched = {"collection_id": collection_id, "purpose": purpose, "case": case}
        try:
            purpose = validation.declared(purpose, "Purpose", validation.PURPOSE_MAX_CHARS)
            case = validation.declared(case, "Case reference", validation.CASE_MAX_CHARS)
        except FaceledgerError as error:  # refused before it ran: ledgered as the API ledgers it
            await self._run(visitor, self._service.record_failure, operation="SearchFacesByImage", error=error)
            return await self.search_page(request, visitor, searched=searched, error=error, status=_status(error))
        try:
            if not isinstance(photo, UploadFile) or not photo.filename:
                raise InvalidParameterException("Choose a photo to search with.")
            image = await photo.read()
            result = await self._run(
                visitor,
                self._service.search_faces_by_image,
                declared_purpose=purpose,
                declared_case=case,
                on=self._image_workers,
                collection_id=collection_id,
                image=image,
            )
        except FaceledgerError as error:  # e.g. a purpose the policy demands: the form again, as filled in
            return await self.search_page(request, visitor, searched=searched, error=error, status=_status(error))
        table = await run_in_threadpool(self._service.threshold_table, collection_id)
        matches = [
            {**match, "Meaning": similarity_meaning(table, match["Similarity"])} for match in result["FaceMatches"]
        ]
        return await self.search_page(request, visitor, result=result, matches=matches, searched=searched)


def _status(error: FaceledgerError) -> int:
    """The HTTP status a browser is told: the wire answers AccessDeniedException with 400, as AWS
    does, a browser 403."""
    return 403 if isinstance(error, AccessDeniedException) else error.http_status


def _navigation(visitor: Visitor | None) -> list[tuple[str, str]]:
    """The sections the visitor's role may open: (label, path)."""
    if visitor is None:
        return []
    sections = [
        ("Review", "/console/reviews", "ListReviewCases"),
        ("Audit", "/console/audit", "ListLedgerEntries"),
        ("Collections", "/console/collections", "ListCollections"),
        ("Search", "/console/search", "SearchFacesByImage"),
    ]
    return [(label, path) for label, path, operation in sections if visitor.may(operation)]


def _text(fields: FormData, name: str, max_chars: int) -> str | None:
    """A text field, stripped; None when absent or empty. Longer than ``max_chars``: refused."""
    value = fields.get(name)
    if value is None or isinstance(value, UploadFile):
        return None
    value = value.strip()
    if len(value) > min(max_chars, _FORM_FIELD_MAX_CHARS):
        raise InvalidParameterException(f"{name} is longer than {max_chars} characters.")
    return value or None


def _number(fields: FormData, name: str, kind: type, label: str) -> Any:
    """A numeric field; empty lifts the demand (None)."""
    text = _text(fields, name, 32)
    if text is None:
        return None
    try:
        return kind(text)
    except ValueError:
        raise InvalidParameterException(f"{label} must be a {'whole ' if kind is int else ''}number.") from None


_LEDGER_TEXT_FILTERS = {
    "key": "access_key_id",
    "collection": "collection_id",
    "operation": "operation",
    "outcome": "outcome",
    "purpose": "purpose",
    "case": "case_ref",
}


def _ledger_filters(request: Request) -> dict[str, Any]:
    """ListLedgerEntries' filters from the audit page's query string (times as UTC dates and
    times, as the page's fields send them)."""
    query = request.query_params
    filters: dict[str, Any] = {
        name: (query.get(field) or "").strip() or None for field, name in _LEDGER_TEXT_FILTERS.items()
    }
    filters["since"] = display.parse_time(query.get("since"), "From")
    filters["until"] = display.parse_time(query.get("until"), "Until")
    return filters


def _shown_filters(request: Request) -> dict[str, str]:
    return {name: request.query_params.get(name, "") for name in (*_LEDGER_TEXT_FILTERS, "since", "until")}


def _query_without(request: Request, name: str) -> str:
    """The page's query string without ``name`` (to add the next page's token to)."""
    return urlencode([(k, v) for k, v in request.query_params.multi_items() if k != name and v])
