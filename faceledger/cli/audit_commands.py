"""``faceledger audit ...``: verify, show, export and sign the audit ledger."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from faceledger.cli import render
from faceledger.cli.common import JsonOption, command_group, iso_time, open_service, reports_errors
from faceledger.errors import InvalidParameterException

audit_app = command_group(help="The tamper-evident audit ledger of every operation.", no_args_is_help=True)

SinceOption = Annotated[
    str | None,
    typer.Option(
        help="Only entries from this time: ISO 8601 (2026-11-29, 2026-11-29T08:00) or back from now (30m, 1h, 7d)."
    ),
]
UntilOption = Annotated[str | None, typer.Option(help="Only entries up to this time (ISO 8601).")]
KeyOption = Annotated[str | None, typer.Option("--key", help="Only this access key id (or local:USER).")]
CollectionFilter = Annotated[str | None, typer.Option("--collection", "-c", help="Only this collection.")]
CaseOption = Annotated[str | None, typer.Option("--case", help="Only this case reference.")]


def _filters(
    since: str | None, until: str | None, key: str | None, collection: str | None, case: str | None
) -> dict[str, Any]:
    return {
        "since": iso_time(since, "--since", relative=True),
        "until": iso_time(until, "--until", relative=True),
        "access_key_id": key,
        "collection_id": collection,
        "case_ref": case,
    }


AnchorOption = Annotated[
    Path | None, typer.Option("--anchor", help="Anchor file written by 'audit anchor': its heads must still be there.")
]


@audit_app.command("verify")
@reports_errors
def audit_verify(anchor: AnchorOption = None, as_json: JsonOption = False) -> None:
    """Check the whole chain and its signatures (and the heads anchored elsewhere); exit 8 and say
    where if anything was changed."""
    anchors = _read_anchors(anchor) if anchor is not None else None
    with open_service() as service:
        problems = service.ledger.verify(anchors)
        count = sum(1 for _ in service.ledger.entries())
    if as_json:
        render.print_json({"Entries": count, "Intact": not problems, "Problems": problems})
    elif problems:
        for problem in problems:
            render.errors.print(f"TAMPERED: {problem}", markup=False, highlight=False)
    else:
        render.console.print(f"Ledger intact: {count} entries, chain and signatures verified.")
    if problems:
        raise typer.Exit(8)


@reports_errors
def check(as_json: JsonOption = False) -> None:
    """Check the data directory: the ledger's chain and signatures, that every face template
    decrypts under the current key, that no file is readable by others, and (on PostgreSQL)
    erased templates still readable with the key in use. Exit 8 on any problem."""
    with open_service() as service:
        response = service.check_data_directory()
    problems = response["Problems"]
    if as_json:
        render.print_json(response)
    elif problems:
        for problem in problems:
            render.errors.print(f"PROBLEM: {problem}", markup=False, highlight=False, soft_wrap=True)
    else:
        render.console.print(f"No problem found ({response['Collections']} collection(s), ledger, file modes).")
    if not as_json:
        for residue in response["ErasureResidue"]:
            if residue["RetiredAt"] is None:
                render.console.print(
                    f"{residue['Faces']} erased face template(s) since {render.moment(residue['FirstErasedAt'])} "
                    f"may remain in the database as ciphertext under the template key in use "
                    f"({residue['TemplateKey']}) until it is retired (faceledger keys rotate-template-key).",
                    markup=False,
                )
    if problems:
        raise typer.Exit(8)


@audit_app.command("anchor")
@reports_errors
def audit_anchor(
    out: Annotated[
        Path, typer.Option("--out", help="File to append the anchor to (keep it outside the data directory).")
    ],
) -> None:
    """Sign the current head and append it to --out as one JSON line (sequence number, hash,
    signature, public key). Keep that file where whoever can change the data directory cannot
    (another machine, write-once storage); 'audit verify --anchor' then catches a rewrite even by
    someone holding the ledger key."""
    with open_service() as service:
        record = service.ledger.anchor()
    if record is None:
        raise InvalidParameterException("The ledger is empty: nothing to anchor yet.")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as handle:
        handle.write(render.to_json(record, indent=None, sort_keys=True) + "\n")
    render.console.print(f"Anchored head {record['seq']} in {out}.")


def _read_anchors(path: Path) -> list[dict]:
    try:
        lines = path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as exc:
        raise InvalidParameterException(f"{path} is not an anchor file written by 'audit anchor': {exc}") from None


@audit_app.command("show")
@reports_errors
def audit_show(
    since: SinceOption = None,
    until: UntilOption = None,
    key: KeyOption = None,
    collection: CollectionFilter = None,
    case: CaseOption = None,
    operation: Annotated[str | None, typer.Option(help="Only this operation, e.g. SearchFacesByImage.")] = None,
    outcome: Annotated[str | None, typer.Option(help="Only this outcome: ok, denied or error.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many entries.")] = 100,
    oldest_first: Annotated[
        bool, typer.Option("--oldest-first", help="Oldest entries first (default: newest).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Ledger entries, newest first, filtered by time, key, collection, case, operation or outcome."""
    filters = _filters(since, until, key, collection, case) | {"operation": operation, "outcome": outcome}
    with open_service() as service:
        entries = list(service.ledger.entries(**filters, limit=limit, newest_first=not oldest_first))
    if as_json:
        render.print_json([asdict(e) for e in entries])
        return
    render.table(
        None,
        ("#", "Time (UTC)", "Operation", "Key", "Collection", "Purpose / case", "Outcome", "Result"),
        [
            [
                e.seq,
                datetime.fromtimestamp(e.started_at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S"),
                e.operation,
                e.access_key_id,
                e.collection_id,
                " / ".join(p for p in (e.purpose, e.case_ref) if p) or None,
                e.outcome if e.error is None else f"{e.outcome}: {e.error}",
                render.to_json(e.result, indent=None)[:60],
            ]
            for e in entries
        ],
    )


@audit_app.command("export")
@reports_errors
def audit_export(
    out: Annotated[Path, typer.Option("--out", help="JSON Lines file to write.")],
    since: SinceOption = None,
    until: UntilOption = None,
    key: KeyOption = None,
    collection: CollectionFilter = None,
    case: CaseOption = None,
) -> None:
    """Write entries as JSON Lines (one entry per line); the export itself is ledgered."""
    filters = _filters(since, until, key, collection, case)  # a bad time must not truncate OUT
    with open_service() as service, _private_text_file(out) as handle:
        response = service.export_ledger(
            write=lambda entry: handle.write(entry.export_line() + "\n"),
            **filters,
        )
    render.console.print(f"Exported {response['ExportedCount']} entries to {out}")


@audit_app.command("sign")
@reports_errors
def audit_sign() -> None:
    """Sign the current head of the chain with the ledger key."""
    with open_service() as service:
        seq = service.ledger.sign_head()
    render.console.print("Ledger is empty." if seq is None else f"Signed the head at entry {seq}.")


def _private_text_file(path: Path) -> TextIO:
    """``path`` opened for writing, readable by its owner only (an export names who searched whom)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a file that existed keeps its mode otherwise
    return os.fdopen(descriptor, "w")
