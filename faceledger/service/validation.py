"""Parameter checks with Rekognition's constraints, each failing as InvalidParameterException."""

from __future__ import annotations

import re

from faceledger.errors import InvalidParameterException
from faceledger.vision.quality import QualityFilter

MAX_PAGE_SIZE = 4096  # Rekognition's largest MaxResults / MaxFaces / FaceIds list
# longest declared purpose and case reference, in characters (they go into every ledger entry)
PURPOSE_MAX_CHARS = 256
CASE_MAX_CHARS = 128

_COLLECTION_ID = re.compile(r"[a-zA-Z0-9_.\-]{1,255}")
_EXTERNAL_IMAGE_ID = re.compile(r"[a-zA-Z0-9_.\-:]{1,255}")
_USER_ID = re.compile(r"[a-zA-Z0-9_.\-:]{1,128}")
FACE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
FACE_ID_PREFIX = re.compile(r"[0-9a-f][0-9a-f-]{3,34}")  # what the CLI takes for a face id, as git takes commits
_CLIENT_REQUEST_TOKEN = re.compile(r"[a-zA-Z0-9\-_]{1,64}")
_TAG_PUNCTUATION = frozenset("_.:/=+-@")


def _check(pattern: re.Pattern[str], value: object, name: str, rule: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidParameterException(f"{name} {value!r} is invalid: {rule}.")
    return value


def declared(value: str | None, name: str, max_chars: int) -> str | None:
    """A declared purpose or case reference: printable text (no tabs, line breaks, other control
    or formatting characters, which would reach the ledger and terminals that show it), at most
    ``max_chars`` long, stripped; empty is None."""
    if value is None:
        return None
    value = value.strip()
    if len(value) > max_chars:
        raise InvalidParameterException(f"{name} is {len(value):,} characters long; the limit is {max_chars}.")
    if not value.isprintable():
        raise InvalidParameterException(
            f"{name} must be printable text, without tabs, line breaks or other control characters."
        )
    return value or None


def collection_id(value: object) -> str:
    return _check(_COLLECTION_ID, value, "CollectionId", "1-255 characters of a-z, A-Z, 0-9, _ . -")


def external_image_id(value: object) -> str | None:
    if value is None:
        return None
    return _check(_EXTERNAL_IMAGE_ID, value, "ExternalImageId", "1-255 characters of a-z, A-Z, 0-9, _ . - :")


def user_id(value: object) -> str:
    return _check(_USER_ID, value, "UserId", "1-128 characters of a-z, A-Z, 0-9, _ . - :")


def face_id(value: object) -> str:
    return _check(FACE_ID, value, "FaceId", "a lower-case UUID")


def face_ids(values: object, *, maximum: int) -> list[str]:
    if not isinstance(values, (list, tuple)) or not 1 <= len(values) <= maximum:
        raise InvalidParameterException(f"FaceIds must be a list of 1 to {maximum} face ids.")
    return [face_id(value) for value in values]


def percent(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 100.0:
        raise InvalidParameterException(f"{name} must be a number from 0 to 100, not {value!r}.")
    return float(value)


def integer(value: object, name: str, minimum: int, maximum: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f"of at least {minimum}"
        raise InvalidParameterException(f"{name} must be a whole number {bound}, not {value!r}.")
    return value


def quality_filter(value: object) -> QualityFilter:
    try:
        return QualityFilter(value)
    except ValueError:
        choices = ", ".join(level.value for level in QualityFilter)
        raise InvalidParameterException(f"QualityFilter must be one of {choices}, not {value!r}.") from None


def client_request_token(value: object) -> str:
    return _check(_CLIENT_REQUEST_TOKEN, value, "ClientRequestToken", "1-64 characters of a-z, A-Z, 0-9, - _")


def _tag_text(value: object, name: str, minimum: int, maximum: int) -> str:
    # Rekognition's pattern: Unicode letters, separators and numbers, and _ . : / = + - @
    if (
        not isinstance(value, str)
        or not minimum <= len(value) <= maximum
        or not all(ch.isalnum() or ch.isspace() or ch in _TAG_PUNCTUATION for ch in value)
    ):
        raise InvalidParameterException(
            f"{name} {value!r} is invalid: {minimum}-{maximum} letters, digits, spaces or _ . : / = + - @."
        )
    return value


def tag_key(value: object) -> str:
    key = _tag_text(value, "Tag key", 1, 128)
    if key.lower().startswith("aws:"):
        raise InvalidParameterException("Tag keys starting with 'aws:' are reserved.")
    return key


def tags(value: object) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) > 200:
        raise InvalidParameterException("Tags must be a map of at most 200 keys to values.")
    for key, tag_value in value.items():
        tag_key(key)
        _tag_text(tag_value, "Tag value", 0, 256)
    return value
