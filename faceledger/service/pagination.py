"""Opaque NextToken values: which listing they belong to and where it stopped."""

from __future__ import annotations

import base64
import binascii
import json

from faceledger.errors import InvalidPaginationTokenException


def encode_token(listing: str, position: str | int) -> str:
    raw = json.dumps({"l": listing, "p": position}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(listing: str, token: str | None) -> str | int | None:
    """The position stored in ``token`` (None: start from the beginning)."""
    if token is None:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if payload["l"] != listing or not isinstance(payload["p"], (str, int)):
            raise ValueError("token is for another listing")
        return payload["p"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeError):
        raise InvalidPaginationTokenException("NextToken is not valid for this request.") from None
