"""The ``faceledger`` command: every face operation, tables for people and ``--json`` for scripts.

Errors are printed as one line ``error: <RekognitionErrorName>: <message>`` on stderr with the
error's exit code (see faceledger.errors); never a traceback.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Annotated, Any

import typer

from faceledger.cli import render
from faceledger.cli.audit_commands import audit_app, check
from faceledger.cli.common import (
    CaseOption,
    CliState,
    CollectionOption,
    ImageArgument,
    JsonOption,
    PurposeOption,
    ThresholdOption,
    all_pages,
    command_group,
    declare,
    given,
    naming,
    open_service,
    read_image,
    reports_errors,
)
from faceledger.cli.eval_commands import calibrate, eval_app, thresholds
from faceledger.cli.index_command import index
from faceledger.cli.model_commands import models_app
from faceledger.cli.policy_commands import collection_policy, consent_app, purge, review_app
from faceledger.cli.server import keys_app, migrate, serve
from faceledger.cli.video_commands import video_app
from faceledger.config import DATA_DIR_ENV, DATABASE_URL_ENV
from faceledger.errors import InvalidParameterException, NoUsableFaceException, ResourceNotFoundException
from faceledger.service.context import RequestContext, local_caller

app = command_group(help="Self-hosted face detection, comparison and search.", no_args_is_help=True)
collection_app = command_group(help="Create, describe, list and delete collections.", no_args_is_help=True)
faces_app = command_group(help="List and delete indexed faces.", no_args_is_help=True)
users_app = command_group(help="Users: identities that group faces of one person.", no_args_is_help=True)
app.add_typer(collection_app, name="collection")
app.add_typer(faces_app, name="faces")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")
app.add_typer(eval_app, name="eval")
app.add_typer(audit_app, name="audit")
app.add_typer(consent_app, name="consent")
app.add_typer(review_app, name="review")
app.add_typer(video_app, name="video")
app.command("purge")(purge)
app.command("check")(check)
collection_app.command("policy")(collection_policy)
app.command("serve")(serve)
app.command("migrate")(migrate)
app.command("calibrate")(calibrate)
app.command("thresholds")(thresholds)


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"faceledger {importlib.metadata.version('faceledger')}")
        raise typer.Exit()


@app.callback()
def main(
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help=f"Data directory (default ${DATA_DIR_ENV} or ~/.local/share/faceledger)."),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            "--database",
            help="PostgreSQL URL of the data directory's store (postgresql://...; default: the store the directory"
            f" has, or ${DATABASE_URL_ENV} for a new one, else an SQLite file inside it).",
        ),
    ] = None,
    purpose: PurposeOption = None,
    case: CaseOption = None,
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit.")
    ] = False,
) -> None:
    CliState.data_dir = data_dir
    CliState.database = database
    # every operation this command runs is ledgered as the local operator, with this purpose
    CliState.context = RequestContext(local_caller(), purpose=purpose, case_ref=case)


# -- collections ---------------------------------------------------------------------------


@collection_app.command("create")
@reports_errors
def collection_create(
    collection_id: str,
    model: Annotated[str | None, typer.Option("--model", help="Face model (see 'faceledger models list').")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create an empty collection (of the default face model, or of --model)."""
    with open_service() as service:
        response = service.create_collection(collection_id=collection_id, face_model=model)
    render.emit(response, as_json, lambda r: render.console.print(f"Created collection {r['CollectionArn']}"))


@collection_app.command("migrate")
@reports_errors
def collection_migrate(
    collection_id: str,
    model: Annotated[str, typer.Option("--model", help="The face model to move to (see 'faceledger models list').")],
    from_folder: Annotated[
        Path | None, typer.Option("--from-folder", help="The folder its images were indexed from (if not stored).")
    ] = None,
    drop_unavailable: Annotated[
        bool,
        typer.Option("--drop-unavailable", help="Erase the faces of images found neither stored nor in the folder."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Move a collection to another face model, keeping its face ids, users and consents."""
    with open_service() as service:
        response = service.migrate_collection(
            collection_id=collection_id,
            face_model=model,
            source_root=str(from_folder) if from_folder is not None else None,
            drop_unavailable=drop_unavailable,
        )
    render.emit(
        response,
        as_json,
        lambda r: render.console.print(
            f"Moved {r['MovedFaces']} face(s) of {collection_id} to {r['FaceModelVersion']}; "
            f"erased {len(r['ErasedFaceIds'])}. Calibrate it for this model before searching it."
        ),
    )


@collection_app.command("describe")
@reports_errors
def collection_describe(collection_id: str, as_json: JsonOption = False) -> None:
    """Face and user counts of a collection."""
    with open_service() as service:
        response = service.describe_collection(collection_id=collection_id)
    render.emit(
        response,
        as_json,
        lambda r: render.table(
            collection_id,
            ("Faces", "Users", "Model", "Cohort", "Created"),
            [
                [
                    r["FaceCount"],
                    r["UserCount"],
                    r["FaceModelVersion"],
                    r["FaceledgerCohortCollectionId"] or "none",
                    r["CreationTimestamp"].isoformat(),
                ]
            ],
        ),
    )


@collection_app.command("cohort")
@reports_errors
def collection_cohort(
    collection_id: str,
    cohort: Annotated[
        str | None,
        typer.Option(
            "--cohort",
            help="Score searches by AS-norm against this collection's faces: people never searched for, who agreed "
            "to serve as a cohort (same face model, at least 800 faces).",
        ),
    ] = None,
    none: Annotated[bool, typer.Option("--none", help="Stop scoring searches against a cohort.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show, set (--cohort) or end (--none) the cohort a collection's searches are normalised
    against; its threshold table then is one measured with a cohort (see docs/accuracy.md)."""
    if cohort is not None and none:
        raise InvalidParameterException("Give --cohort or --none, not both.")
    with open_service() as service:
        if cohort is None and not none:
            response = service.get_collection_cohort(collection_id=collection_id)
        else:
            response = service.put_collection_cohort(collection_id=collection_id, cohort_collection_id=cohort)

    def show(r: dict[str, Any]) -> None:
        if "Changes" in r:
            render.console.print(
                f"{collection_id}: cohort {r['Changes']['Before'] or 'none'} -> {r['Changes']['After'] or 'none'}"
            )
        else:
            render.console.print(f"{collection_id}: cohort {r['CohortCollectionId'] or 'none'}")

    render.emit(response, as_json, show)


@collection_app.command("list")
@reports_errors
def collection_list(as_json: JsonOption = False) -> None:
    """All collections."""
    with open_service() as service:
        response = all_pages(
            lambda token: service.list_collections(next_token=token), "CollectionIds", "FaceModelVersions"
        )
    render.emit(
        response,
        as_json,
        lambda r: render.table(
            None, ("Collection", "Model"), list(zip(r["CollectionIds"], r["FaceModelVersions"], strict=True))
        ),
    )


@collection_app.command("delete")
@reports_errors
def collection_delete(
    collection_id: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete a collection with all its faces and users."""
    if not yes and not typer.confirm(f"Delete collection {collection_id} and every face in it?"):
        raise typer.Exit(1)
    with open_service() as service:
        response = service.delete_collection(collection_id=collection_id)
    render.emit(response, as_json, lambda r: render.console.print(f"Deleted collection {collection_id}"))


# -- images --------------------------------------------------------------------------------


@app.command("detect")
@reports_errors
def detect(
    image: ImageArgument, purpose: PurposeOption = None, case: CaseOption = None, as_json: JsonOption = False
) -> None:
    """Find faces: box, confidence, landmarks, pose and quality (never age, gender or emotion)."""
    declare(purpose, case)
    with open_service() as service, naming(image):
        response = service.detect_faces(image=read_image(image))

    def human(r: dict[str, Any]) -> None:
        render.table(
            f"{len(r['FaceDetails'])} face(s) in {image.name}",
            ("#", "Box (% of image)", "Confidence", "Yaw", "Pitch", "Roll", "Sharpness", "Brightness"),
            [
                [
                    n + 1,
                    render.box_text(f["BoundingBox"]),
                    f["Confidence"],
                    f["Pose"]["Yaw"],
                    f["Pose"]["Pitch"],
                    f["Pose"]["Roll"],
                    f["Quality"]["Sharpness"],
                    f["Quality"]["Brightness"],
                ]
                for n, f in enumerate(r["FaceDetails"])
            ],
        )

    render.emit(response, as_json, human)


@app.command("compare")
@reports_errors
def compare(
    source: ImageArgument,
    target: ImageArgument,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Least similarity (0-100) for a match (default: 80, dlib's distance 0.6)."),
    ] = None,
    purpose: PurposeOption = None,
    case: CaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compare the largest face of SOURCE with every face in TARGET."""
    declare(purpose, case)
    with open_service() as service, naming(source, target, members=("SourceImage", "TargetImage")):
        response = service.compare_faces(
            source_image=read_image(source), target_image=read_image(target), **given(similarity_threshold=threshold)
        )

    def human(r: dict[str, Any]) -> None:
        rows = [["match", m["Similarity"], render.box_text(m["Face"]["BoundingBox"])] for m in r["FaceMatches"]]
        rows += [["no match", None, render.box_text(f["BoundingBox"])] for f in r["UnmatchedFaces"]]
        if rows:
            render.table(f"{source.name} vs {target.name}", ("Result", "Similarity", "Face in target"), rows)

    render.emit(response, as_json, human)
    if not response["FaceMatches"] and not response["UnmatchedFaces"]:
        # the API answers an empty comparison; a person (or a script's exit status) needs to know why
        render.error_line(f"error: no face found in {target}: nothing to compare with.")
        raise typer.Exit(NoUsableFaceException.exit_code)


app.command("index")(index)  # in faceledger/cli/index_command.py; registered here to keep its place in --help


@app.command("search")
@reports_errors
def search(
    collection: CollectionOption,
    image: Annotated[Path | None, typer.Argument(help="Search with the largest face of this image.")] = None,
    face_id: Annotated[str | None, typer.Option(help="Search with this indexed face instead.")] = None,
    threshold: ThresholdOption = None,
    max_faces: Annotated[
        int | None,
        typer.Option(help="Report at most this many matches (default: 100, or the collection policy's cap if lower)."),
    ] = None,
    all_faces: Annotated[
        bool, typer.Option("--all-faces", help="Search with every face of IMAGE, each with its matches.")
    ] = False,
    purpose: PurposeOption = None,
    case: CaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search a collection with the largest face of IMAGE (SearchFacesByImage), with every face
    of IMAGE (--all-faces: SearchAllFacesByImage, faceledger's extension) or with one of its own
    faces, --face-id (SearchFaces)."""
    declare(purpose, case)
    if (image is None) == (face_id is None):
        raise InvalidParameterException("Give either an IMAGE or --face-id.")
    if all_faces and image is None:
        raise InvalidParameterException("--all-faces searches the faces of an IMAGE.")
    with open_service() as service, naming(*([image] if image is not None else [])):
        if image is not None and all_faces:
            response = service.search_all_faces_by_image(
                collection_id=collection,
                image=read_image(image),
                **given(face_match_threshold=threshold, max_faces=max_faces),
            )
            render.emit(response, as_json, render.all_face_matches)
            return
        if image is not None:
            response = service.search_faces_by_image(
                collection_id=collection,
                image=read_image(image),
                **given(face_match_threshold=threshold, max_faces=max_faces),
            )
        else:
            (face_id,) = service.resolve_face_ids(collection_id=collection, face_ids=[face_id])
            response = service.search_faces(
                collection_id=collection, face_id=face_id, **given(face_match_threshold=threshold, max_faces=max_faces)
            )
    render.emit(response, as_json, render.matches)


# -- faces ---------------------------------------------------------------------------------


@faces_app.command("list")
@reports_errors
def faces_list(
    collection: CollectionOption,
    user_id: Annotated[str | None, typer.Option(help="Only faces of this user.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every face of a collection."""
    with open_service() as service:
        response = all_pages(
            lambda token: service.list_faces(collection_id=collection, next_token=token, user_id=user_id), "Faces"
        )
    faces = response["Faces"]
    render.emit(
        response,
        as_json,
        lambda r: render.table(f"{len(faces)} face(s) in {collection}", render.FACE_COLUMNS, render.face_rows(faces)),
    )


@faces_app.command("delete")
@reports_errors
def faces_delete(face_ids: list[str], collection: CollectionOption, as_json: JsonOption = False) -> None:
    """Delete faces from a collection (store and index)."""
    with open_service() as service:
        face_ids = service.resolve_face_ids(collection_id=collection, face_ids=face_ids)
        response = service.delete_faces(collection_id=collection, face_ids=face_ids)

    def human(r: dict[str, Any]) -> None:
        render.console.print(f"Deleted {len(r['DeletedFaces'])} face(s).")
        for failure in r["UnsuccessfulFaceDeletions"]:
            render.error_line(f"not deleted: {failure['FaceId']}: {', '.join(failure['Reasons'])}")

    render.emit(response, as_json, human)
    exit_if_none_done(response["DeletedFaces"], response["UnsuccessfulFaceDeletions"])


# -- users ---------------------------------------------------------------------------------


@users_app.command("create")
@reports_errors
def users_create(user_id: str, collection: CollectionOption, as_json: JsonOption = False) -> None:
    """Create a user in a collection."""
    with open_service() as service:
        response = service.create_user(collection_id=collection, user_id=user_id)
    render.emit(response, as_json, lambda r: render.console.print(f"Created user {user_id}"))


@users_app.command("delete")
@reports_errors
def users_delete(user_id: str, collection: CollectionOption, as_json: JsonOption = False) -> None:
    """Delete a user (its faces stay indexed, unassociated)."""
    with open_service() as service:
        response = service.delete_user(collection_id=collection, user_id=user_id)
    render.emit(response, as_json, lambda r: render.console.print(f"Deleted user {user_id}"))


@users_app.command("list")
@reports_errors
def users_list(collection: CollectionOption, as_json: JsonOption = False) -> None:
    """Every user of a collection."""
    with open_service() as service:
        response = all_pages(lambda token: service.list_users(collection_id=collection, next_token=token), "Users")
    render.emit(
        response,
        as_json,
        lambda r: render.table(None, ("UserId", "Status"), [[u["UserId"], u["UserStatus"]] for u in r["Users"]]),
    )


@users_app.command("associate")
@reports_errors
def users_associate(
    user_id: str,
    face_ids: list[str],
    collection: CollectionOption,
    threshold: Annotated[
        float | None, typer.Option(help="Least similarity to the user's faces (0-100; default: 75).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Associate faces with a user."""
    with open_service() as service:
        face_ids = service.resolve_face_ids(collection_id=collection, face_ids=face_ids)
        response = service.associate_faces(
            collection_id=collection, user_id=user_id, face_ids=face_ids, **given(user_match_threshold=threshold)
        )
    render.emit(response, as_json, lambda r: _association_report(r, "AssociatedFaces", "UnsuccessfulFaceAssociations"))
    exit_if_none_done(response["AssociatedFaces"], response["UnsuccessfulFaceAssociations"])


@users_app.command("disassociate")
@reports_errors
def users_disassociate(
    user_id: str, face_ids: list[str], collection: CollectionOption, as_json: JsonOption = False
) -> None:
    """Remove faces from a user."""
    with open_service() as service:
        face_ids = service.resolve_face_ids(collection_id=collection, face_ids=face_ids)
        response = service.disassociate_faces(collection_id=collection, user_id=user_id, face_ids=face_ids)
    render.emit(
        response, as_json, lambda r: _association_report(r, "DisassociatedFaces", "UnsuccessfulFaceDisassociations")
    )
    exit_if_none_done(response["DisassociatedFaces"], response["UnsuccessfulFaceDisassociations"])


def _association_report(response: dict[str, Any], done_key: str, failed_key: str) -> None:
    render.console.print(f"{len(response[done_key])} face(s) done; user is {response['UserStatus']}.")
    for failure in response[failed_key]:
        render.error_line(f"not done: {failure['FaceId']}: {', '.join(failure['Reasons'])}")


def exit_if_none_done(done: list[Any], failures: list[dict[str, Any]]) -> None:
    """Exit non-zero when every face asked for failed: 4 when none of them exists (as the
    API's ResourceNotFound would), else 2."""
    if failures and not done:
        missing = all(f.get("Reasons") == ["FACE_NOT_FOUND"] for f in failures)
        render.error_line(
            "error: " + ("no such face in the collection" if missing else "nothing was done") + " (see above)."
        )
        raise typer.Exit(ResourceNotFoundException.exit_code if missing else InvalidParameterException.exit_code)


@users_app.command("search")
@reports_errors
def users_search(
    collection: CollectionOption,
    image: Annotated[Path | None, typer.Option(help="Search with the largest face of this image.")] = None,
    user_id: Annotated[str | None, typer.Option(help="Search with the faces of this user.")] = None,
    face_id: Annotated[str | None, typer.Option(help="Search with this indexed face.")] = None,
    threshold: ThresholdOption = None,
    purpose: PurposeOption = None,
    case: CaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Users matching an image (SearchUsersByImage), a user or a face (SearchUsers)."""
    declare(purpose, case)
    with open_service() as service, naming(*([image] if image is not None else [])):
        if image is not None:
            response = service.search_users_by_image(
                collection_id=collection, image=read_image(image), **given(user_match_threshold=threshold)
            )
        else:
            if face_id is not None:
                (face_id,) = service.resolve_face_ids(collection_id=collection, face_ids=[face_id])
            response = service.search_users(
                collection_id=collection, user_id=user_id, face_id=face_id, **given(user_match_threshold=threshold)
            )

    def human(r: dict[str, Any]) -> None:
        render.threshold_meaning(r.get("FaceledgerThreshold"))
        render.table(None, ("Similarity", "UserId"), [[m["Similarity"], m["User"]["UserId"]] for m in r["UserMatches"]])

    render.emit(response, as_json, human)
