"""What every CLI command shares: global options, opening the service, error reporting."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from faceledger.cli import render
from faceledger.config import Settings, default_data_dir
from faceledger.errors import (
    AccessDeniedException,
    FaceledgerError,
    ImageTooLargeException,
    InvalidImageFormatException,
    InvalidParameterException,
    NoUsableFaceException,
)
from faceledger.service import FaceService
from faceledger.service.context import RequestContext, acting_as, local_caller

F = TypeVar("F", bound=Callable[..., Any])

JsonOption = Annotated[bool, typer.Option("--json", help="Print the response as JSON (Rekognition's shape).")]
CollectionOption = Annotated[str, typer.Option("--collection", "-c", help="Collection id.")]
ImageArgument = Annotated[Path, typer.Argument(help="Image file (JPEG, PNG, WebP, BMP, TIFF).")]
ThresholdOption = Annotated[
    float | None,
    typer.Option(
        "--threshold",
        help="Least similarity (0-100). Default: the collection's calibrated threshold (see 'faceledger thresholds').",
    ),
]


def command_group(**options: Any) -> typer.Typer:
    """A Typer app (or group of subcommands) of this CLI: help in click's plain layout, which
    shows flags as ``--x / --no-x`` and arguments by name rather than Typer's ``<bool>`` and
    ``<str>`` placeholders."""
    return typer.Typer(rich_markup_mode=None, **options)


class CliState:
    """Global options, set by the top-level callback before any command runs."""

    data_dir: Path | None = None
    database: str | None = None
    context: RequestContext | None = None


PurposeOption = Annotated[
    str | None, typer.Option("--purpose", help="Declared purpose of this use, recorded in the audit ledger.")
]
CaseOption = Annotated[
    str | None, typer.Option("--case", help="Case reference of this use, recorded in the audit ledger.")
]


def declare(purpose: str | None, case: str | None) -> None:
    """A command's own --purpose and --case (given after the command), over any given before it."""
    context = CliState.context or RequestContext(local_caller())
    CliState.context = dataclasses.replace(
        context,
        purpose=purpose if purpose is not None else context.purpose,
        case_ref=case if case is not None else context.case_ref,
    )


SECRET_ENV = "FACELEDGER_SECRET_ACCESS_KEY"
AccessKeyOption = Annotated[
    str | None,
    typer.Option(
        "--access-key-id",
        envvar="FACELEDGER_ACCESS_KEY_ID",
        help=f"Act as this access key (its secret from ${SECRET_ENV}, else asked for) instead of your OS account.",
    ),
]


@contextmanager
def open_service(access_key_id: str | None = None, operation: str | None = None) -> Iterator[FaceService]:
    """The service on the chosen data directory, acting as the local operator (with the
    command's --purpose and --case) for the ledger; or, with ``access_key_id``, as that access
    key once its secret is given: a reviewer's own key, which ``$USER`` cannot stand in for. (Who
    owns the data directory can create keys, so two-person review is as strong as the separation
    of that account from the reviewers; the ledger names the keys.) A refused secret is ledgered
    as a refusal of ``operation``."""
    service = FaceService(Settings(data_dir=CliState.data_dir or default_data_dir(), database_url=CliState.database))
    try:
        context = CliState.context or RequestContext(local_caller())
        if access_key_id is not None:
            secret = os.environ.get(SECRET_ENV) or typer.prompt(f"Secret of {access_key_id}", hide_input=True)
            try:
                context = dataclasses.replace(context, caller=service.access.verify(access_key_id, secret))
            except AccessDeniedException as refused:
                if operation is not None:
                    with acting_as(context):
                        service.record_failure(operation, refused)
                raise
        with acting_as(context):
            yield service
    finally:
        service.close()


def read_image(path: Path) -> bytes:
    try:
        if not path.exists():
            raise InvalidParameterException(f"{path} does not exist.")
        if path.is_dir():
            raise InvalidParameterException(
                f"{path} is a folder, not an image file ('faceledger index' takes folders)."
            )
        return path.read_bytes()
    except OSError as exc:  # e.g. a folder on the way that this account may not enter
        raise InvalidImageFormatException(f"Cannot read {path}: {exc.strerror or exc}.") from None


@contextmanager
def naming(*images: Path, members: tuple[str, ...] = ()) -> Iterator[None]:
    """Errors inside name the image file they are about: the one file given, or, for an
    operation of several images, the file in place of the request member (``members``, e.g.
    SourceImage, TargetImage) the service names."""
    try:
        yield
    except (InvalidImageFormatException, ImageTooLargeException, NoUsableFaceException) as error:
        for member, path in zip(members, images, strict=False):  # no members: one image
            if error.message.startswith(f"{member}: "):
                raise type(error)(f"{path}: {error.message[len(member) + 2 :]}") from None
        if len(images) == 1 and not error.message.startswith(str(images[0])):
            raise error.about(str(images[0])) from None
        raise


_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def iso_time(text: str | None, option: str, *, relative: bool = False) -> float | None:
    """The Unix time (seconds) of an ISO 8601 time given to ``option``; a time without an
    offset is UTC. With ``relative``, also a span back from now: ``90s``, ``30m``, ``1h``,
    ``7d``, ``2w``. None stays None (the option was not given)."""
    if text is None:
        return None
    ago = _AGO.fullmatch(text.strip()) if relative else None
    if ago is not None:
        return time.time() - float(ago.group(1)) * _SECONDS[ago.group(2)]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        spans = " or a span back from now (30m, 1h, 7d)" if relative else ""
        raise InvalidParameterException(
            f"{option} {text!r} is not an ISO 8601 time (e.g. 2026-11-29T08:00, UTC unless an offset is given){spans}."
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def given(**options: Any) -> dict[str, Any]:
    """The keyword arguments of the options the user gave: one left out (None) is not passed,
    so the service applies its own default rather than a copy of it kept here."""
    return {name: value for name, value in options.items() if value is not None}


def all_pages(fetch: Callable[[str | None], dict[str, Any]], *members: str) -> dict[str, Any]:
    """A paginated listing as one response: ``fetch(next_token)`` until no NextToken comes back,
    the lists ``members`` of every page joined, everything else as the API answers it (so that
    ``--json`` prints what one call for everything would)."""
    pages = [fetch(None)]
    while pages[-1].get("NextToken") is not None:
        pages.append(fetch(pages[-1]["NextToken"]))
    response = {key: value for key, value in pages[-1].items() if key != "NextToken"}
    for member in members:
        response[member] = [item for page in pages for item in page[member]]
    return response


def reports_errors(command: F) -> F:
    """Turn FaceledgerError into a one-line message and the error's exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FaceledgerError as exc:
            render.error_line(f"error: {exc.code}: {exc.message}")
            raise typer.Exit(exc.exit_code) from None

    return wrapper  # type: ignore[return-value]
