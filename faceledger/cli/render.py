"""Turning service responses into rich tables (default) or JSON (``--json``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()
errors = Console(stderr=True)


def to_json(value: object, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """``value`` as JSON text, the one serialiser of every command's JSON output: datetimes
    as ISO 8601 text, numpy numbers and arrays as JSON numbers and lists. ``indent=None``
    gives one line (JSON Lines). Anything else that JSON cannot hold raises TypeError.

    (The HTTP API writes datetimes as epoch seconds instead, as AWS JSON 1.1 wants; that is
    faceledger.api.wire's business.)"""
    return json.dumps(value, default=_json_default, indent=indent, sort_keys=sort_keys)


def print_json(value: object) -> None:
    sys.stdout.write(to_json(value) + "\n")


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def moment(epoch_seconds: float | None) -> str | None:
    """A Unix time as an ISO 8601 UTC time to the second (None stays None)."""
    if epoch_seconds is None:
        return None
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="seconds")


def error_line(text: str) -> None:
    """One line on stderr, however long (so that it can be grepped), printed as it is."""
    errors.print(text, markup=False, highlight=False, soft_wrap=True)


def emit(response: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], None]) -> None:
    """Print ``response`` as JSON (``--json``) or with ``human`` (tables for people)."""
    if as_json:
        print_json(response)
    else:
        human(response)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Rows under ``columns``. Identifiers (columns named ``...Id``) are never cut or wrapped,
    since people copy them into the next command: when they would not fit the terminal, each row
    is printed as lines of ``column : value`` instead (as psql's expanded display does); other
    tables wrap their cells to fit."""
    cells = [[_cell(value) for value in row] for row in rows]
    identifiers = [column.endswith("Id") for column in columns]
    # each column: its widest text, a space either side, and one border before it (one more at the end)
    natural = sum(max([len(c), *(len(row[n]) for row in cells)]) + 3 for n, c in enumerate(columns)) + 1
    if natural > console.width and any(identifiers):
        if title:
            console.print(title, markup=False, highlight=False)
        width = max(len(column) for column in columns)
        for n, row in enumerate(cells, 1):
            console.print(f"-[ {n} ]-", style="dim", highlight=False)
            for column, value in zip(columns, row, strict=True):
                console.print(f"{column.ljust(width)} : {value}", markup=False, highlight=False, soft_wrap=True)
        return
    grid = Table(title=Text(title) if title else None, show_lines=False)
    for column, identifier in zip(columns, identifiers, strict=True):
        grid.add_column(column, no_wrap=identifier, overflow="fold")
    for row in cells:
        grid.add_row(*(Text(cell) for cell in row))  # as written: a note or a version with [..] is no markup
    console.print(grid)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def box_text(box: dict[str, float]) -> str:
    """A relative bounding box as 'left,top widthxheight' percentages of the image."""
    return f"{box['Left'] * 100:.0f}%,{box['Top'] * 100:.0f}% {box['Width'] * 100:.0f}%x{box['Height'] * 100:.0f}%"


def face_rows(faces: Sequence[dict[str, Any]]) -> list[list[object]]:
    return [
        [
            face["FaceId"],
            face.get("ExternalImageId"),
            face.get("UserId"),
            box_text(face["BoundingBox"]),
            face["Confidence"],
        ]
        for face in faces
    ]


FACE_COLUMNS = ("FaceId", "ExternalImageId", "UserId", "Box (% of image)", "Confidence")


def threshold_meaning(meaning: dict[str, Any] | None) -> None:
    """One line on what the search's threshold means at the collection's size."""
    if meaning is None:
        return
    expected = meaning["ExpectedFalseCandidatesUpper95"]
    said = {
        "WITHIN_TARGET": "within the 1% target",
        "ABOVE_TARGET": "more than the 1% target",
        "TARGET_NOT_MEASURABLE": "the calibration cannot show the 1% target at this size",
        "NOT_MEASURED": "below the calibrated range: nothing is known of its false matches",
    }[meaning["Status"]]
    bound = "unknown" if expected is None else f"at most {expected:.2g}"
    console.print(
        f"Threshold {meaning['Threshold']:g} over {meaning['TemplatesCompared']:,} face(s): expected false "
        f"candidates per search {bound} (95%), {said}.",
        highlight=False,
    )


def all_face_matches(response: dict[str, Any]) -> None:
    """SearchAllFacesByImage: each searched face (by its box) with its matches."""
    threshold_meaning(response.get("FaceledgerThreshold"))
    rows = []
    for number, searched in enumerate(response["SearchedFaces"], start=1):
        where = box_text(searched["FaceDetail"]["BoundingBox"])
        if not searched["FaceMatches"]:
            rows.append([number, where, None, None, None])
        for match in searched["FaceMatches"]:
            rows.append(
                [number, where, match["Similarity"], match["Face"]["FaceId"], match["Face"].get("ExternalImageId")]
            )
    table(None, ("Face", "Box", "Similarity", "FaceId", "ExternalImageId"), rows)
    for searched in response["SearchedFaces"]:
        review = searched.get("FaceledgerReview")
        if review is not None and searched["FaceMatches"]:
            console.print(
                f"[bold]UNVERIFIED candidates[/bold] of face {box_text(searched['FaceDetail']['BoundingBox'])}: review case {review['CaseId']}."
            )
    for unsearched in response["UnsearchedFaces"]:
        console.print(
            f"Not searched: face {box_text(unsearched['FaceDetails']['BoundingBox'])} ({', '.join(unsearched['Reasons'])})."
        )
    console.print(
        "[dim]Each face searched is a search of its own: the more faces, the more false candidates to expect "
        "(the threshold's meaning above counts them all). A match is a lead for a person to check.[/dim]"
    )


def matches(response: dict[str, Any]) -> None:
    rows = [
        [
            match["Similarity"],
            match["Face"]["FaceId"],
            match["Face"].get("ExternalImageId"),
            match["Face"].get("UserId"),
        ]
        for match in response["FaceMatches"]
    ]
    threshold_meaning(response.get("FaceledgerThreshold"))
    if not rows:
        console.print("No face in the collection reaches the threshold.")
        return
    table(None, ("Similarity", "FaceId", "ExternalImageId", "UserId"), rows)
    review = response.get("FaceledgerReview")
    if review is not None:
        console.print(
            f"[bold]UNVERIFIED candidates[/bold]: review case {review['CaseId']}; none counts as a match "
            "until two different reviewers confirm it (faceledger review ...)."
        )
    console.print(
        "[dim]Similarity is 0-100 (80 = dlib's published decision distance 0.6); it is not a "
        "probability of identity. A match is a lead for a person to check, not a verdict.[/dim]"
    )
