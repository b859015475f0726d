"""``faceledger index``: index a folder of images with a progress bar; resumable after Ctrl-C."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from faceledger.cli import render
from faceledger.cli.common import (
    CaseOption,
    CollectionOption,
    JsonOption,
    PurposeOption,
    declare,
    given,
    open_service,
    reports_errors,
)
from faceledger.errors import InvalidParameterException
from faceledger.service import FileResult, Outcome, find_image_files, index_files

# Starting a worker process costs one to two seconds: below this many files, one process is faster.
_FILES_WORTH_WORKERS = 32
NOTHING_INDEXED = 9  # exit status when no image could be indexed (none found, or none accepted)


@reports_errors
def index(
    path: Annotated[Path, typer.Argument(help="Image file or folder (searched recursively).")],
    collection: CollectionOption,
    quality_filter: Annotated[str | None, typer.Option(help="NONE, AUTO, LOW, MEDIUM or HIGH (default: AUTO).")] = None,
    max_faces: Annotated[int | None, typer.Option(help="Index at most this many faces per image.")] = None,
    keep_images: Annotated[bool, typer.Option(help="Also store the image bytes (off: only faces).")] = False,
    workers: Annotated[
        int, typer.Option(help="Processes decoding and detecting (0: one per CPU core, or one for under 32 files).")
    ] = 0,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude", help="Skip files whose path below PATH matches this glob (e.g. '_test/*'); repeatable."
        ),
    ] = None,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray", help="Decode and detect on Ray actors (a local Ray started for this run; --workers actors)."
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(help="Run on this Ray cluster instead ('auto', or ray://HOST:PORT); implies --ray."),
    ] = None,
    purpose: PurposeOption = None,
    case: CaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Index every image under PATH; files already indexed (same SHA-256) are skipped, so an
    interrupted run resumes when started again."""
    declare(purpose, case)
    try:
        found = path.exists()
    except OSError as error:  # a folder on the way that this account may not enter
        raise InvalidParameterException(f"Cannot read {path}: {error.strerror or error}.") from None
    if not found:
        raise InvalidParameterException(f"{path} does not exist.")
    tally = IndexTally()
    started = time.monotonic()
    with open_service() as service:
        files = find_image_files(path, exclude or ())
        results = index_files(
            service,
            collection,
            path if path.is_dir() else path.parent,
            files,
            store_images=keep_images,
            # on Ray, 0 workers means one actor per CPU the cluster offers
            workers=workers if ray or ray_address else workers or _default_workers(len(files)),
            ray=ray,
            ray_address=ray_address,
            **given(quality_filter=quality_filter, max_faces=max_faces),
        )
        _tally_with_progress(results, len(files), tally, visible=not as_json)
    elapsed = time.monotonic() - started
    render.emit(tally.summary(len(files), elapsed), as_json, lambda s: _show_summary(s, collection, elapsed))
    if tally.interrupted:
        raise typer.Exit(130)
    if not tally.counts[Outcome.INDEXED] and not tally.counts[Outcome.SKIPPED]:
        render.error_line(f"error: nothing was indexed: {tally.nothing_indexed(path)}")
        raise typer.Exit(NOTHING_INDEXED)


def _default_workers(files: int) -> int:
    return (os.cpu_count() or 1) if files >= _FILES_WORTH_WORKERS else 1


@dataclass
class IndexTally:
    """What a run did so far, file by file: outcome counts, faces indexed, the files that
    could not be read or were refused (with why), and whether Ctrl-C stopped it."""

    counts: dict[Outcome, int] = field(default_factory=lambda: {outcome: 0 for outcome in Outcome})
    faces_indexed: int = 0
    unreadable: list[dict[str, str]] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    interrupted: bool = False

    def add(self, result: FileResult) -> None:
        self.counts[result.outcome] += 1
        self.faces_indexed += result.faces_indexed
        if result.outcome is Outcome.UNREADABLE:
            self.unreadable.append({"path": str(result.path), "error": result.error or ""})
        elif result.outcome is Outcome.REFUSED:
            self.refused.append({"path": str(result.path), "error": result.error or ""})

    def nothing_indexed(self, path: Path) -> str:
        """Why a run indexed nothing, for its last line."""
        if not sum(self.counts.values()):
            return f"no image files (JPEG, PNG, WebP, BMP, TIFF) under {path}."
        reasons = [
            f"{count} {label}"
            for count, label in (
                (len(self.unreadable), "unreadable"),
                (len(self.refused), "refused"),
                (self.counts[Outcome.NO_FACE], "without a face"),
            )
            if count
        ]
        return ", ".join(reasons) + " (see the lines above)."

    def summary(self, images: int, seconds: float) -> dict[str, Any]:
        """The run's summary as ``--json`` prints it (``seconds``: wall time of the run)."""
        return {
            "Images": images,
            "ImagesIndexed": self.counts[Outcome.INDEXED],
            "ImagesWithoutFaces": self.counts[Outcome.NO_FACE],
            "ImagesSkipped": self.counts[Outcome.SKIPPED],
            "UnreadableFiles": self.unreadable,
            "RefusedFiles": self.refused,
            "FacesIndexed": self.faces_indexed,
            "Seconds": round(seconds, 2),
            "Interrupted": self.interrupted,
        }


def _tally_with_progress(results: Iterable[FileResult], total: int, tally: IndexTally, *, visible: bool) -> None:
    """Add each file's outcome to ``tally`` as it arrives, with a progress bar on stderr.
    Ctrl-C ends the run early and marks the tally interrupted: what was indexed is kept."""
    progress = _progress_bar(visible)
    try:
        with progress:
            task = progress.add_task("indexing", total=total, faces=0)
            for result in results:
                tally.add(result)
                progress.update(task, advance=1, faces=tally.faces_indexed)
    except KeyboardInterrupt:
        tally.interrupted = True


def _progress_bar(visible: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _FacesPerSecond(),
        TimeRemainingColumn(),
        console=render.errors,
        disable=not visible,
    )


class _FacesPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        faces = task.fields.get("faces", 0)
        rate = faces / elapsed if elapsed > 0 else 0.0
        return Text(f"{faces} faces, {rate:.1f} faces/s", style="progress.data.speed")


def _show_summary(summary: dict[str, Any], collection: str, seconds: float) -> None:
    """The summary as a table; each unreadable or refused file on a line of stderr."""
    faces = summary["FacesIndexed"]
    render.table(
        f"Indexed into {collection}",
        ("Files found", "Indexed", "Without faces", "Already indexed", "Unreadable", "Refused", "Faces", "Faces/s"),
        [
            [
                summary["Images"],
                summary["ImagesIndexed"],
                summary["ImagesWithoutFaces"],
                summary["ImagesSkipped"],
                len(summary["UnreadableFiles"]),
                len(summary["RefusedFiles"]),
                faces,
                f"{faces / seconds:.2f}" if seconds else "-",
            ]
        ],
    )
    for label, items in (("unreadable", summary["UnreadableFiles"]), ("refused", summary["RefusedFiles"])):
        for item in items:
            render.error_line(f"{label}: {item['path']}: {item['error']}")
    if summary["Interrupted"]:
        render.errors.print("Interrupted: what was indexed is kept; run the same command to resume.")
