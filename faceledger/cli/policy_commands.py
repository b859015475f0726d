"""``faceledger collection policy``, ``faceledger consent ...`` and ``faceledger purge``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from faceledger.cli import render
from faceledger.cli.common import CollectionOption, JsonOption, iso_time, open_service, reports_errors

consent_app = typer.Typer(
    help="Consent records: required before indexing where a policy says so.", no_args_is_help=True
)


def _show_policy(response: dict[str, Any]) -> None:
    render.table(
        f"Policy of {response['CollectionId']}",
        ("Demand", "Value"),
        [[k, v] for k, v in response.items() if k != "CollectionId"],
    )


@reports_errors
def collection_policy(
    collection_id: str,
    purpose_required: Annotated[bool, typer.Option(help="Searches must declare --purpose and --case.")] = False,
    min_threshold: Annotated[float | None, typer.Option(help="No search below this similarity.")] = None,
    max_results: Annotated[int | None, typer.Option(help="No search returns more matches.")] = None,
    retention_days: Annotated[int | None, typer.Option(help="Faces are erased this many days after indexing.")] = None,
    consent_required: Annotated[
        bool, typer.Option(help="Indexing needs a consent record for the ExternalImageId.")
    ] = False,
    review_required: Annotated[bool, typer.Option(help="Matches stay unverified until two reviewers confirm.")] = False,
    show: Annotated[bool, typer.Option("--show", help="Only print the current policy.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Set (replace) a collection's policy, or --show it. Every change is ledgered."""
    with open_service() as service:
        if show:
            response = service.get_collection_policy(collection_id=collection_id)
        else:
            response = service.put_collection_policy(
                collection_id=collection_id,
                purpose_required=purpose_required,
                min_threshold=min_threshold,
                max_results=max_results,
                retention_days=retention_days,
                consent_required=consent_required,
                review_required=review_required,
            )
    render.emit(response, as_json, _show_policy)


@consent_app.command("record")
@reports_errors
def consent_record(
    external_image_id: str,
    collection: CollectionOption,
    basis: Annotated[str, typer.Option(help='Legal basis, e.g. "explicit consent, GDPR Art. 9(2)(a)".')],
    reference: Annotated[str, typer.Option(help="Where the signed consent is kept.")],
    obtained_at: Annotated[str | None, typer.Option(help="When it was given (ISO 8601; default now).")] = None,
    expires_at: Annotated[str | None, typer.Option(help="When it ends (ISO 8601); the purge erases after it.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Record the consent of the person shown in images indexed with EXTERNAL_IMAGE_ID."""
    obtained, expires = iso_time(obtained_at, "--obtained-at"), iso_time(expires_at, "--expires-at")
    with open_service() as service:
        response = service.record_consent(
            collection_id=collection,
            external_image_id=external_image_id,
            basis=basis,
            reference=reference,
            obtained_at=obtained,
            expires_at=expires,
        )
    render.emit(response, as_json, lambda r: render.console.print(f"Recorded consent {r['ConsentId']}"))


@consent_app.command("withdraw")
@reports_errors
def consent_withdraw(consent_id: str, collection: CollectionOption, as_json: JsonOption = False) -> None:
    """Withdraw a consent: every face it covered is erased now."""
    with open_service() as service:
        response = service.withdraw_consent(collection_id=collection, consent_id=consent_id)
    render.emit(
        response, as_json, lambda r: render.console.print(f"Withdrawn; erased {len(r['ErasedFaceIds'])} face(s).")
    )


@reports_errors
def purge(as_json: JsonOption = False) -> None:
    """Erase faces past their collection's retention or their consent's expiry (serve does this hourly)."""
    with open_service() as service:
        response = service.purge()
    render.emit(
        response,
        as_json,
        lambda r: render.console.print(
            f"Erased {len(r['ErasedFaceIds'])} face(s)"
            + "".join(f"\n  {x['CollectionId']}: {len(x['ErasedFaceIds'])} ({x['Reason']})" for x in r["Receipts"])
        ),
    )


review_app = typer.Typer(help="Human review of matches in review_required collections.", no_args_is_help=True)


def _show_case(case: dict[str, Any]) -> None:
    render.table(
        f"Review case {case['CaseId']} ({case['Status']}) in {case['CollectionId']}",
        ("FaceId", "Similarity", "Status", "Decisions"),
        [
            [
                c["FaceId"],
                c["Similarity"],
                c["Status"],
                "; ".join(f"{d['Reviewer']}: {d['Decision']} ({d['Note']})" for d in c["Decisions"]) or None,
            ]
            for c in case["Candidates"]
        ],
    )


@review_app.command("list")
@reports_errors
def review_list(
    collection: Annotated[str | None, typer.Option("--collection", "-c", help="Only this collection.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Review cases, oldest first."""
    with open_service() as service:
        response = service.list_review_cases(collection_id=collection)
    render.emit(
        response,
        as_json,
        lambda r: render.table(
            None,
            ("CaseId", "Collection", "Status", "Candidates"),
            [[c["CaseId"], c["CollectionId"], c["Status"], c["Candidates"]] for c in r["Cases"]],
        ),
    )


@review_app.command("show")
@reports_errors
def review_show(case_id: str, as_json: JsonOption = False) -> None:
    """A case's candidates, their status and every decision."""
    with open_service() as service:
        response = service.get_review_case(case_id=case_id)
    render.emit(response, as_json, _show_case)


def _decide(case_id: str, face_id: str, decision: str, note: str, as_json: bool) -> None:
    with open_service() as service:
        response = service.decide_review(case_id=case_id, face_id=face_id, decision=decision, note=note)
    render.emit(response, as_json, _show_case)


NoteOption = Annotated[str, typer.Option("--note", help="Why: what you compared and saw.")]


@review_app.command("confirm")
@reports_errors
def review_confirm(case_id: str, face_id: str, note: NoteOption, as_json: JsonOption = False) -> None:
    """Confirm a candidate as the same person (it is verified once two reviewers confirm)."""
    _decide(case_id, face_id, "confirm", note, as_json)


@review_app.command("reject")
@reports_errors
def review_reject(case_id: str, face_id: str, note: NoteOption, as_json: JsonOption = False) -> None:
    """Reject a candidate: it will not be verified."""
    _decide(case_id, face_id, "reject", note, as_json)
