"""``faceledger collection policy``, ``faceledger consent ...`` and ``faceledger purge``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from faceledger.cli import render
from faceledger.cli.common import (
    AccessKeyOption,
    CollectionOption,
    JsonOption,
    all_pages,
    command_group,
    given,
    iso_time,
    open_service,
    reports_errors,
)
from faceledger.errors import InvalidParameterException
from faceledger.service.policy_operations import UNCHANGED
from faceledger.service.review_operations import MAX_CASES_PAGE

consent_app = command_group(
    help="Consent records: required before indexing where a policy says so.", no_args_is_help=True
)


def _show_policy(response: dict[str, Any]) -> None:
    for name, change in response.get("Changes", {}).items():
        render.console.print(f"{name}: {change['Before']} -> {change['After']}", highlight=False)
    if "Changes" in response and not response["Changes"]:
        render.console.print("Nothing changed.")
    render.table(
        f"Policy of {response['CollectionId']}",
        ("Demand", "Value"),
        [[k, v] for k, v in response.items() if k not in ("CollectionId", "Changes")],
    )


def _lift(lift: bool, value: Any, option: str) -> Any:
    """The change one numeric option pair asks: a value, None (--no-...: lift it), or unchanged."""
    if lift and value is not None:
        raise InvalidParameterException(f"Give --{option} or --no-{option}, not both.")
    return None if lift else (UNCHANGED if value is None else value)


def _flag(value: bool | None) -> Any:
    return UNCHANGED if value is None else value


@reports_errors
def collection_policy(
    collection_id: str,
    purpose_required: Annotated[
        bool | None,
        typer.Option("--purpose-required/--no-purpose-required", help="Searches must declare --purpose and --case."),
    ] = None,
    min_threshold: Annotated[float | None, typer.Option(help="No search below this similarity.")] = None,
    no_min_threshold: Annotated[bool, typer.Option("--no-min-threshold", help="Lift the similarity floor.")] = False,
    max_results: Annotated[int | None, typer.Option(help="No search returns more matches.")] = None,
    no_max_results: Annotated[bool, typer.Option("--no-max-results", help="Lift the cap on matches.")] = False,
    retention_days: Annotated[int | None, typer.Option(help="Faces are erased this many days after indexing.")] = None,
    no_retention_days: Annotated[
        bool, typer.Option("--no-retention-days", help="Keep faces until deleted (lift the retention period).")
    ] = False,
    consent_required: Annotated[
        bool | None,
        typer.Option(
            "--consent-required/--no-consent-required", help="Indexing needs a consent record for the ExternalImageId."
        ),
    ] = None,
    review_required: Annotated[
        bool | None,
        typer.Option(
            "--review-required/--no-review-required", help="Matches stay unverified until two reviewers confirm."
        ),
    ] = None,
    show: Annotated[
        bool, typer.Option("--show", hidden=True, help="Only show the policy (as no option does).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Show a collection's policy, or change the demands given (each option changes only its own
    demand; lifting one takes its --no- option). Every change is ledgered, before -> after."""
    asked = {
        "purpose_required": _flag(purpose_required),
        "min_threshold": _lift(no_min_threshold, min_threshold, "min-threshold"),
        "max_results": _lift(no_max_results, max_results, "max-results"),
        "retention_days": _lift(no_retention_days, retention_days, "retention-days"),
        "consent_required": _flag(consent_required),
        "review_required": _flag(review_required),
    }
    changes = {name: value for name, value in asked.items() if value is not UNCHANGED}
    if show and changes:
        raise InvalidParameterException("--show only shows the policy: give it alone.")
    with open_service() as service:
        if changes:
            response = service.update_collection_policy(collection_id=collection_id, **changes)
        else:
            response = service.get_collection_policy(collection_id=collection_id)
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


@consent_app.command("list")
@reports_errors
def consent_list(
    collection: CollectionOption,
    external_image_id: Annotated[str | None, typer.Option(help="Only the records of this ExternalImageId.")] = None,
    as_json: JsonOption = False,
) -> None:
    """A collection's consent records, oldest first, with their status now."""
    with open_service() as service:
        response = service.list_consents(collection_id=collection, **given(external_image_id=external_image_id))
    render.emit(
        response,
        as_json,
        lambda r: render.table(
            f"{len(r['Consents'])} consent record(s) in {collection}",
            ("ConsentId", "ExternalImageId", "Status", "Obtained", "Expires", "Basis", "Reference"),
            [
                [
                    c["ConsentId"],
                    c["ExternalImageId"],
                    c["Status"],
                    render.moment(c["ObtainedAt"]),
                    render.moment(c["ExpiresAt"]),
                    c["Basis"],
                    c["Reference"],
                ]
                for c in r["Consents"]
            ],
        ),
    )


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


review_app = command_group(help="Human review of matches in review_required collections.", no_args_is_help=True)


def _show_case(case: dict[str, Any]) -> None:
    """What a reviewer needs to decide: why and by whom the search was made, the probe, and each
    candidate with the image it came from."""
    render.console.print(
        f"Review case {case['CaseId']} ({case['Status']}) in {case['CollectionId']}\n"
        f"  {case['Operation']} by {case['OpenedBy']} at {render.moment(case['OpenedAt'])}\n"
        f"  purpose: {case['Purpose'] or '-'}; case: {case['CaseReference'] or '-'}\n"
        f"  probe: {case['Probe']} (the SHA-256 of the image searched with, or the face id searched with)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    render.table(
        None,
        ("FaceId", "ExternalImageId", "Similarity", "Status", "Decisions"),
        [
            [
                c["FaceId"],
                "(erased)" if c.get("Erased") else c.get("ExternalImageId"),
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
    status: Annotated[
        str | None, typer.Option("--status", help="OPEN (a candidate is still unverified) or CLOSED.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Review cases, oldest first."""
    with open_service() as service:
        response = all_pages(
            lambda token: service.list_review_cases(
                collection_id=collection, status=status, max_results=MAX_CASES_PAGE, next_token=token
            ),
            "Cases",
        )
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


def _decide(case_id: str, face_id: str, decision: str, note: str, as_json: bool, access_key_id: str | None) -> None:
    with open_service(access_key_id, operation="DecideReview") as service:
        response = service.decide_review(case_id=case_id, face_id=face_id, decision=decision, note=note)
    render.emit(response, as_json, _show_case)


NoteOption = Annotated[str, typer.Option("--note", help="Why: what you compared and saw.")]


@review_app.command("confirm")
@reports_errors
def review_confirm(
    case_id: str, face_id: str, note: NoteOption, access_key_id: AccessKeyOption = None, as_json: JsonOption = False
) -> None:
    """Confirm a candidate as the same person (it is verified once two different reviewers, neither
    of them the searcher, confirm). You review as your OS account, or as --access-key-id."""
    _decide(case_id, face_id, "confirm", note, as_json, access_key_id)


@review_app.command("reject")
@reports_errors
def review_reject(
    case_id: str, face_id: str, note: NoteOption, access_key_id: AccessKeyOption = None, as_json: JsonOption = False
) -> None:
    """Reject a candidate: it will not be verified. You review as your OS account, or as --access-key-id."""
    _decide(case_id, face_id, "reject", note, as_json, access_key_id)
