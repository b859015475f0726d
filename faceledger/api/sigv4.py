"""Verifying AWS Signature Version 4 on incoming requests.

Both forms an SDK produces are accepted: the ``Authorization`` header, and the query string of a
presigned URL (``X-Amz-Algorithm`` ... ``X-Amz-Signature``). The canonical request is rebuilt
from what actually arrived, including the SHA-256 of the received body, so a body changed on the
way no longer matches its signature. A request dated outside the allowed clock skew (or past its
``X-Amz-Expires``) is refused, so a captured request cannot be replayed later (within the window,
the HTTP API refuses replays of requests that change data: api/replay.py).

What the operation is and who it is for must be under the signature: ``host``, ``x-amz-target``,
``content-type`` and every ``x-amz-*`` and ``x-faceledger-*`` header present must be in
SignedHeaders. Otherwise a captured DescribeCollection signed over ``host;x-amz-date`` only could
be sent again as DeleteCollection, or with another declared purpose.

Error names are those AWS's JSON services answer with, so SDKs report them as usual.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from faceledger.errors import FaceledgerError

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "rekognition"
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AUTH_HEADER = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)
_SPACES = re.compile(r"\s+")
# headers that name the operation or are read by faceledger: a request must sign those it carries
_MUST_SIGN = ("host", "x-amz-target", "content-type")
_MUST_SIGN_PREFIXES = ("x-amz-", "x-faceledger-")


class MissingAuthenticationTokenException(FaceledgerError):
    code = "MissingAuthenticationTokenException"
    http_status = 403


class IncompleteSignatureException(FaceledgerError):
    code = "IncompleteSignatureException"


class InvalidSignatureException(FaceledgerError):
    code = "InvalidSignatureException"


class UnrecognizedClientException(FaceledgerError):
    code = "UnrecognizedClientException"


@dataclass(frozen=True)
class SignedRequest:
    """What the verifier needs of an HTTP request, as received."""

    method: str
    raw_path: str  # the path exactly as sent, percent-encoding included
    query: Sequence[tuple[str, str]]
    headers: Mapping[str, list[str]]  # lower-case name -> every value received
    body: bytes


@dataclass(frozen=True)
class Verified:
    """A request whose signature checked out: the key that signed it, the signature (64 hex
    digits), and until when the server accepts it (X-Amz-Date + the clock skew allowed, or the end
    of a presigned URL's X-Amz-Expires)."""

    access_key_id: str
    signature: str
    valid_until: datetime


def verify_request(
    request: SignedRequest,
    secret_for: Callable[[str], str | None],
    *,
    now: datetime | None = None,
    max_skew: timedelta = timedelta(minutes=5),
) -> Verified:
    """Check the request's SigV4 signature; returns who signed it and until when it is valid.

    ``secret_for(access_key_id)`` gives the key's secret, or None when the key is unknown or
    disabled. ``max_skew`` is how far X-Amz-Date may be from ``now`` (default: the clock).
    The checks run in this order, so the error names the first thing wrong: the signature's
    parts, the credential scope, the date, the signed headers, the body's hash, the key, and
    last the signature itself.
    """
    parts = _signature_parts(request)
    scope = _scope(parts.credential)
    valid_until = _check_date(parts, scope, now or datetime.now(UTC), max_skew)
    _check_signed_headers(parts.signed_headers, request.headers)
    canonical = _canonical_request(request, parts.signed_headers, _payload_hash(request))
    secret = secret_for(scope.access_key_id)
    if secret is None:
        raise UnrecognizedClientException("The security token included in the request is invalid.")
    _check_signature(secret, scope, parts, canonical)
    return Verified(scope.access_key_id, parts.signature, valid_until)


def claimed_access_key_id(request: SignedRequest) -> str | None:
    """The access key id a request claims to be signed with, whether or not the signature holds
    (None when there is no readable credential)."""
    try:
        return _scope(_signature_parts(request).credential).access_key_id
    except FaceledgerError:
        return None


@dataclass(frozen=True)
class _Parts:
    """A signature as sent, from the Authorization header or a presigned URL's query string."""

    credential: str
    signed_headers: list[str]
    signature: str
    amz_date: str
    expires: int | None = None


@dataclass(frozen=True)
class _Scope:
    """The credential: ACCESS_KEY/DATE/REGION/SERVICE/aws4_request."""

    access_key_id: str
    date: str  # YYYYMMDD
    region: str
    service: str
    terminator: str

    @property
    def signed_scope(self) -> str:
        """The scope as the string to sign holds it (the access key left out)."""
        return f"{self.date}/{self.region}/{self.service}/{self.terminator}"


def _signature_parts(request: SignedRequest) -> _Parts:
    """The signature's parts, from a presigned URL's query string or else the Authorization header."""
    query = dict(request.query)
    if "X-Amz-Signature" in query:
        return _from_query(query)
    return _from_header(request.headers)


def _scope(credential: str) -> _Scope:
    fields = credential.split("/")
    if len(fields) != 5 or not all(fields):
        raise IncompleteSignatureException("Credential must be ACCESS_KEY/DATE/REGION/SERVICE/aws4_request.")
    scope = _Scope(*fields)
    if scope.service != SERVICE or scope.terminator != "aws4_request":
        raise IncompleteSignatureException(
            f"Credential scope must be DATE/REGION/{SERVICE}/aws4_request, not .../{scope.service}/{scope.terminator}."
        )
    return scope


def _check_date(parts: _Parts, scope: _Scope, now: datetime, max_skew: timedelta) -> datetime:
    """X-Amz-Date is well formed, is the scope's date, and is within ``max_skew`` of ``now``
    (a presigned request: from ``max_skew`` before its date until it expires). Returns the last
    moment the signature is accepted."""
    try:
        signed_at = datetime.strptime(parts.amz_date, _AMZ_DATE).replace(tzinfo=UTC)
    except ValueError:
        raise IncompleteSignatureException("X-Amz-Date must look like 20240101T120000Z.") from None
    if scope.date != parts.amz_date[:8]:
        raise InvalidSignatureException("The credential scope date does not match X-Amz-Date.")
    if parts.expires is not None:
        if signed_at - max_skew > now or now > signed_at + timedelta(seconds=parts.expires):
            raise InvalidSignatureException("Signature expired: the presigned request is no longer valid.")
        return signed_at + timedelta(seconds=parts.expires)
    if abs(now - signed_at) > max_skew:
        raise InvalidSignatureException(
            f"Signature expired: {parts.amz_date} is outside {int(max_skew.total_seconds())} seconds "
            f"of the server time {now.strftime(_AMZ_DATE)}. Check the client's clock."
        )
    return signed_at + max_skew


def _check_signed_headers(signed_headers: list[str], headers: Mapping[str, list[str]]) -> None:
    """Host is signed, so is every header that says what the request does (those the request
    carries of x-amz-target, content-type, x-amz-*, x-faceledger-*), and every signed header
    arrived."""
    if "host" not in signed_headers:
        raise IncompleteSignatureException("SignedHeaders must include host.")
    unsigned = sorted(
        name
        for name in headers
        if (name in _MUST_SIGN or name.startswith(_MUST_SIGN_PREFIXES)) and name not in signed_headers
    )
    if unsigned:
        raise IncompleteSignatureException(
            f"Headers present in the request were not signed: {', '.join(unsigned)}. SignedHeaders must "
            "include x-amz-target, content-type and every x-amz-* and x-faceledger-* header sent "
            "(AWS SDKs sign every header set before signing)."
        )
    missing = [name for name in signed_headers if name not in headers and name != "host"]
    if missing or "host" not in headers:
        raise IncompleteSignatureException(
            f"Signed headers missing from the request: {', '.join(missing or ['host'])}."
        )


def _payload_hash(request: SignedRequest) -> str:
    """The SHA-256 of the body as received; a declared X-Amz-Content-SHA256 must equal it."""
    payload_hash = hashlib.sha256(request.body).hexdigest()
    declared = request.headers.get("x-amz-content-sha256")
    if declared and declared[0] != payload_hash:
        # UNSIGNED-PAYLOAD is refused too: the body carries the face images and must be signed.
        raise InvalidSignatureException("X-Amz-Content-SHA256 must be the SHA-256 of the request body.")
    return payload_hash


def _canonical_request(request: SignedRequest, signed_headers: list[str], payload_hash: str) -> str:
    return "\n".join(
        [
            request.method.upper(),
            _canonical_path(request.raw_path),
            _canonical_query([(k, v) for k, v in request.query if k != "X-Amz-Signature"]),
            "".join(f"{name}:{_header_value(request.headers[name])}\n" for name in signed_headers),
            ";".join(signed_headers),
            payload_hash,
        ]
    )


def _check_signature(secret: str, scope: _Scope, parts: _Parts, canonical: str) -> None:
    """The signature the client sent is the one ``secret`` gives (compared in constant time)."""
    string_to_sign = "\n".join(
        [ALGORITHM, parts.amz_date, scope.signed_scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _signing_key(secret, scope.date, scope.region, scope.service)
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts.signature):
        raise InvalidSignatureException(
            "The request signature we calculated does not match the signature you provided. "
            "Check your secret access key and signing method."
        )


def _from_header(headers: Mapping[str, list[str]]) -> _Parts:
    authorization = headers.get("authorization")
    if not authorization:
        raise MissingAuthenticationTokenException("Missing Authentication Token")
    match = _AUTH_HEADER.match(authorization[0].strip())
    if match is None:
        raise IncompleteSignatureException(
            "Authorization header requires AWS4-HMAC-SHA256 with Credential, SignedHeaders and Signature."
        )
    amz_date = headers.get("x-amz-date")
    if not amz_date:
        raise IncompleteSignatureException("Authorization header requires an X-Amz-Date header.")
    signed = match["signed"].split(";")
    if "x-amz-date" not in signed:
        raise IncompleteSignatureException("SignedHeaders must include x-amz-date.")
    return _Parts(match["credential"], signed, match["signature"], amz_date[0].strip())


def _from_query(query: Mapping[str, str]) -> _Parts:
    needed = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Expires")
    missing = [name for name in needed if not query.get(name)]
    if missing:
        raise IncompleteSignatureException(f"Presigned request lacks {', '.join(missing)}.")
    if query["X-Amz-Algorithm"] != ALGORITHM:
        raise IncompleteSignatureException(f"X-Amz-Algorithm must be {ALGORITHM}.")
    try:
        expires = int(query["X-Amz-Expires"])
    except ValueError:
        raise IncompleteSignatureException("X-Amz-Expires must be a number of seconds.") from None
    if not 1 <= expires <= 604800:
        raise IncompleteSignatureException("X-Amz-Expires must be from 1 to 604800 seconds.")
    if not re.fullmatch(r"[0-9a-f]{64}", query["X-Amz-Signature"]):
        raise IncompleteSignatureException("X-Amz-Signature must be 64 hex digits.")
    return _Parts(
        query["X-Amz-Credential"],
        query["X-Amz-SignedHeaders"].split(";"),
        query["X-Amz-Signature"],
        query["X-Amz-Date"],
        expires,
    )


def _uri_encode(text: str) -> str:
    return quote(text, safe="-_.~")


def _canonical_path(raw_path: str) -> str:
    # Non-S3 services sign the path as sent (already percent-encoded) URI-encoded once more.
    return quote(raw_path or "/", safe="/~")


def _canonical_query(pairs: Sequence[tuple[str, str]]) -> str:
    encoded = sorted((_uri_encode(k), _uri_encode(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _header_value(values: list[str]) -> str:
    return ",".join(_SPACES.sub(" ", value.strip()) for value in values)


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key
