"""Verifying AWS Signature Version 4 on incoming requests.

Both forms an SDK produces are accepted: the ``Authorization`` header, and the query string of a
presigned URL (``X-Amz-Algorithm`` ... ``X-Amz-Signature``). The canonical request is rebuilt
from what actually arrived, including the SHA-256 of the received body, so a body changed on the
way no longer matches its signature. A request dated outside the allowed clock skew (or past its
``X-Amz-Expires``) is refused, so a captured request cannot be replayed later.

Error names are those AWS's JSON services answer with, so SDKs report them as usual.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
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


def verify_request(
    request: SignedRequest,
    secret_for: Callable[[str], str | None],
    *,
    now: datetime | None = None,
    max_skew: timedelta = timedelta(minutes=5),
) -> str:
    """Check the request's SigV4 signature; returns the access key id that signed it.

    ``secret_for(access_key_id)`` gives the key's secret, or None when the key is unknown or
    disabled.
    """
    now = now or datetime.now(timezone.utc)
    query = dict(request.query)
    if "X-Amz-Signature" in query:
        parts = _from_query(query)
        expires = parts.expires
    else:
        parts = _from_header(request.headers)
        expires = None
    access_key_id, scope_date, region, service, terminator = _credential(parts.credential)
    if service != SERVICE or terminator != "aws4_request":
        raise IncompleteSignatureException(
            f"Credential scope must be DATE/REGION/{SERVICE}/aws4_request, not .../{service}/{terminator}."
        )
    try:
        signed_at = datetime.strptime(parts.amz_date, _AMZ_DATE).replace(tzinfo=timezone.utc)
    except ValueError:
        raise IncompleteSignatureException("X-Amz-Date must look like 20240101T120000Z.") from None
    if scope_date != parts.amz_date[:8]:
        raise InvalidSignatureException("The credential scope date does not match X-Amz-Date.")
    if expires is not None:
        if signed_at - max_skew > now or now > signed_at + timedelta(seconds=expires):
            raise InvalidSignatureException("Signature expired: the presigned request is no longer valid.")
    elif abs(now - signed_at) > max_skew:
        raise InvalidSignatureException(
            f"Signature expired: {parts.amz_date} is outside {int(max_skew.total_seconds())} seconds "
            f"of the server time {now.strftime(_AMZ_DATE)}. Check the client's clock."
        )
    if "host" not in parts.signed_headers:
        raise IncompleteSignatureException("SignedHeaders must include host.")
    missing = [name for name in parts.signed_headers if name not in request.headers and name != "host"]
    if missing or "host" not in request.headers:
        raise IncompleteSignatureException(f"Signed headers missing from the request: {', '.join(missing or ['host'])}.")

    payload_hash = hashlib.sha256(request.body).hexdigest()
    declared = request.headers.get("x-amz-content-sha256")
    if declared and declared[0] != payload_hash:
        # UNSIGNED-PAYLOAD is refused too: the body carries the face images and must be signed.
        raise InvalidSignatureException("X-Amz-Content-SHA256 must be the SHA-256 of the request body.")

    canonical = "\n".join(
        [
            request.method.upper(),
            _canonical_path(request.raw_path),
            _canonical_query([(k, v) for k, v in request.query if k != "X-Amz-Signature"]),
            "".join(f"{name}:{_header_value(request.headers[name])}\n" for name in parts.signed_headers),
            ";".join(parts.signed_headers),
            payload_hash,
        ]
    )
    scope = f"{scope_date}/{region}/{service}/{terminator}"
    string_to_sign = "\n".join(
        [ALGORITHM, parts.amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    secret = secret_for(access_key_id)
    if secret is None:
        raise UnrecognizedClientException("The security token included in the request is invalid.")
    key = _signing_key(secret, scope_date, region, service)
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts.signature):
        raise InvalidSignatureException(
            "The request signature we calculated does not match the signature you provided. "
            "Check your secret access key and signing method."
        )
    return access_key_id


@dataclass(frozen=True)
class _Parts:
    credential: str
    signed_headers: list[str]
    signature: str
    amz_date: str
    expires: int | None = None


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
        query["X-Amz-Credential"], query["X-Amz-SignedHeaders"].split(";"), query["X-Amz-Signature"],
        query["X-Amz-Date"], expires,
    )


def _credential(credential: str) -> tuple[str, str, str, str, str]:
    fields = credential.split("/")
    if len(fields) != 5 or not all(fields):
        raise IncompleteSignatureException("Credential must be ACCESS_KEY/DATE/REGION/SERVICE/aws4_request.")
    return fields[0], fields[1], fields[2], fields[3], fields[4]


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
