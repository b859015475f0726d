"""Who is calling, and why: the request context every operation is ledgered under.

The HTTP API sets it per request from the authenticated access key and the purpose and case
headers; the CLI sets it from the OS account and ``--purpose``/``--case``; a Python caller that
sets nothing acts as the local operator.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from faceledger.service.access import Caller, Role


@dataclass(frozen=True)
class RequestContext:
    """Who is calling, and the declared purpose and case reference of the call."""

    caller: Caller
    purpose: str | None = None
    case_ref: str | None = None


def local_caller() -> Caller:
    """The operator at this machine (CLI, Python API): full rights, named by the OS account of
    the process (its uid; never $USER or $LOGNAME, which anyone can set, so one account cannot
    pass for two reviewers)."""
    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no account name (containers)
        user = f"uid{uid}"
    return Caller(f"local:{user}", Role.ADMIN, None)


_context: ContextVar[RequestContext | None] = ContextVar("faceledger_request", default=None)


def current_context() -> RequestContext:
    return _context.get() or RequestContext(local_caller())


@contextmanager
def acting_as(context: RequestContext) -> Iterator[None]:
    """Run the enclosed operations on behalf of ``context`` (the API sets this per request)."""
    token = _context.set(context)
    try:
        yield
    finally:
        _context.reset(token)
