"""ClientRequestToken: a request retried with the same token has its effect once."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from faceledger.errors import IdempotentParameterMismatchException
from faceledger.service import validation
from faceledger.service.context import current_context
from faceledger.service.shapes import Response
from faceledger.store import Store

TOKEN_LIFETIME_SECONDS = 24 * 3600.0  # as Rekognition keeps them


def run_once(
    store: Store, operation: str, token: str | None, parameters: list[Any], perform: Callable[[], Response]
) -> Response:
    """Run ``perform`` once per ClientRequestToken of the calling key: a retry with the same token
    and parameters gets the recorded answer; the same token with other parameters is refused."""
    if token is None:
        return perform()
    validation.client_request_token(token)
    # a token is the caller's own: another key using the same one neither learns of it nor gets its answer
    operation = f"{operation}@{current_context().caller.access_key_id}"
    digest = hashlib.sha256(json.dumps({"parameters": parameters}, sort_keys=True, default=str).encode()).hexdigest()
    now = time.time()
    recorded = store.request_tokens.find(operation, token, now - TOKEN_LIFETIME_SECONDS)
    if recorded is not None:
        if recorded[0] != digest:
            raise IdempotentParameterMismatchException(f"ClientRequestToken {token!r} was used with other parameters.")
        return recorded[1]
    response = perform()
    store.request_tokens.record(operation, token, digest, response, now, now - TOKEN_LIFETIME_SECONDS)
    return response
