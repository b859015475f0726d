"""``faceledger video ...``: stored-video face search on a file of this machine, with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from faceledger.cli import render
from faceledger.cli.common import (
    CaseOption,
    CollectionOption,
    JsonOption,
    PurposeOption,
    ThresholdOption,
    command_group,
    declare,
    given,
    open_service,
    reports_errors,
)
from faceledger.service.video_operations import worker_name

video_app = command_group(help="Faces in stored videos (StartFaceSearch, run on this machine).", no_args_is_help=True)


@video_app.command("search")
@reports_errors
def video_search(
    video: Annotated[Path, typer.Argument(help="Video file (MP4, MOV, MKV, WebM, AVI: what FFmpeg reads).")],
    collection: CollectionOption,
    threshold: ThresholdOption = None,
    purpose: PurposeOption = None,
    case: CaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search COLLECTION for the people of VIDEO: each face is followed while it is visible (one
    person, one Index) and searched when it appears and every 2 s; prints who was matched when.
    The job and its end are ledgered, as StartFaceSearch over the API."""
    declare(purpose, case)
    worker = worker_name()
    with open_service() as service:
        job_id = service.start_face_search(
            video=video.expanduser(),
            collection_id=collection,
            held_by=worker,  # run here, at once: no server on the same store takes it first
            **given(face_match_threshold=threshold),
        )["JobId"]
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[done]}"),
            TimeRemainingColumn(),
            console=render.errors,
            disable=as_json,
            transient=True,
        ) as progress:
            task = progress.add_task("searching", total=None, done="")

            def advance(done_ms: int, total_ms: int) -> None:
                progress.update(task, completed=done_ms, total=total_ms or None, done=f"{done_ms / 1000:.1f} s")

            service.run_video_job(job_id=job_id, worker=worker, progress=advance)
        pages = [service.get_face_search(job_id=job_id, sort_by="INDEX")]
        while "NextToken" in pages[-1]:
            pages.append(service.get_face_search(job_id=job_id, sort_by="INDEX", next_token=pages[-1]["NextToken"]))
    response = {**pages[-1], "Persons": [p for page in pages for p in page["Persons"]]}
    response.pop("NextToken", None)
    render.emit(response, as_json, _people)
    if response["JobStatus"] != "SUCCEEDED":
        raise typer.Exit(1)


def _people(response: dict[str, Any]) -> None:
    """One row per tracked person: when seen, and the best match of each face matched."""
    if response["JobStatus"] != "SUCCEEDED":
        render.error_line(f"error: the job {response['JobStatus']}: {response.get('StatusMessage')}")
        return
    seen: dict[int, dict[str, Any]] = {}
    for item in response["Persons"]:
        person = seen.setdefault(item["Person"]["Index"], {"first": item["Timestamp"], "last": 0, "best": {}})
        person["last"] = item["Timestamp"]
        for match in item["FaceMatches"]:
            face = match["Face"]
            best = person["best"].get(face["FaceId"])
            if best is None or match["Similarity"] > best[0]:
                person["best"][face["FaceId"]] = (match["Similarity"], face.get("ExternalImageId"))
    rows = []
    for index, person in sorted(seen.items()):
        when = f"{person['first'] / 1000:.1f}-{person['last'] / 1000:.1f} s"
        matches = sorted(person["best"].items(), key=lambda item: item[1][0], reverse=True)
        if not matches:
            rows.append([index, when, None, None, None])
        for face_id, (similarity, external) in matches:
            rows.append([index, when, similarity, face_id, external])
    render.table(None, ("Person", "Seen", "Similarity", "FaceId", "ExternalImageId"), rows)
    metadata = response.get("VideoMetadata", {})
    render.console.print(
        f"{len(seen)} person(s) in {metadata.get('DurationMillis', 0) / 1000:.1f} s of video. A person is a face "
        "followed from frame to frame; a match is a lead for a person to check, not a verdict."
    )
