"""``faceledger collection policy``, ``faceledger consent ...`` and ``faceledger purge``."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

import typer

from faceledger.cli import render
from faceledger.cli.common import CollectionOption, JsonOption, open_service, reports_errors

consent_app = typer.Typer(help="Consent records: required before indexing where a policy says so.", no_args_is_help=True)


def _show_policy(response: dict[str, Any]) -> None:
    render.table(f"Policy of {response['CollectionId']}", ("Demand", "Value"),
                 [[k, v] for k, v in response.items() if k != "CollectionId"])


@reports_errors
def collection_policy(
    collection_id: str,
    purpose_required: Annotated[bool, typer.Option(help="Searches must declare --purpose and --case.")] = False,
    min_threshold: Annotated[float | None, typer.Option(help="No search below this similarity.")] = None,
    max_results: Annotated[int | None, typer.Option(help="No search returns more matches.")] = None,
    retention_days: Annotated[int | None, typer.Option(help="Faces are erased this many days after indexing.")] = None,
    consent_required: Annotated[bool, typer.Option(help="Indexing needs a consent record for the ExternalImageId.")] = False,
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
                collection_id=collection_id, purpose_required=purpose_required, min_threshold=min_threshold,
                max_results=max_results, retention_days=retention_days, consent_required=consent_required,
                review_required=review_required,
            )
    render.emit(response, as_json, _show_policy)


def _timestamp(text: str | None) -> float | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


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
    with open_service() as service:
        response = service.record_consent(
            collection_id=collection, external_image_id=external_image_id, basis=basis, reference=reference,
            obtained_at=_timestamp(obtained_at), expires_at=_timestamp(expires_at),
        )
    render.emit(response, as_json, lambda r: render.console.print(f"Recorded consent {r['ConsentId']}"))


@consent_app.command("withdraw")
@reports_errors
def consent_withdraw(consent_id: str, collection: CollectionOption, as_json: JsonOption = False) -> None:
    """Withdraw a consent: every face it covered is erased now."""
    with open_service() as service:
        response = service.withdraw_consent(collection_id=collection, consent_id=consent_id)
    render.emit(response, as_json, lambda r: render.console.print(
        f"Withdrawn; erased {len(r['ErasedFaceIds'])} face(s)."))


@reports_errors
def purge(as_json: JsonOption = False) -> None:
    """Erase faces past their collection's retention or their consent's expiry (serve does this hourly)."""
    with open_service() as service:
        response = service.purge()
    render.emit(response, as_json, lambda r: render.console.print(
        f"Erased {len(r['ErasedFaceIds'])} face(s)" + "".join(
            f"\n  {x['CollectionId']}: {len(x['ErasedFaceIds'])} ({x['Reason']})" for x in r["Receipts"])))
