"""Reading the audit ledger as operations (ListLedgerEntries, VerifyLedger), so that auditors who
use the HTTP API or the web console look at it under their own keys, and every look is itself
ledgered. An auditor scoped to some collections sees only their entries."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from faceledger.errors import InvalidParameterException
from faceledger.ledger.chain import Ledger
from faceledger.service import validation
from faceledger.service.pagination import decode_token, encode_token
from faceledger.service.results import Reply
from faceledger.service.validation import MAX_PAGE_SIZE
from faceledger.store import LedgerRepository

OUTCOMES = ("ok", "denied", "error")
_TEXT_FILTERS = ("access_key_id", "collection_id", "operation", "purpose", "case_ref")
_TEXT_FILTER_MAX_CHARS = 256


class LedgerOperations:
    def __init__(self, ledger: Ledger, rows: LedgerRepository) -> None:
        self._ledger = ledger
        self._rows = rows

    def list(
        self,
        filters: dict[str, Any],
        visible: tuple[str, ...] | None,
        next_token: str | None,
        max_results: int,
    ) -> Reply:
        """A page of entries matching ``filters``, newest first, among the ``visible``
        collections (None: every entry, those of no collection included)."""
        limit = validation.integer(max_results, "MaxResults", 1, MAX_PAGE_SIZE)
        checked = checked_filters(filters)
        before = decode_token("ledger", next_token)
        if before is not None and not isinstance(before, int):
            raise InvalidParameterException("NextToken is not valid for this request.")
        entries = list(
            self._rows.entries(**checked, collections=visible, before_seq=before, limit=limit + 1, newest_first=True)
        )
        page = entries[:limit]
        token = encode_token("ledger", page[-1].seq) if len(entries) > limit and page[-1].seq is not None else None
        return Reply(
            {"Entries": [asdict(entry) for entry in page], "NextToken": token},
            {"EntriesCount": len(page)},
        )

    def verify(self) -> Reply:
        """Whether the chain and its signatures are intact (else where they break), how many
        entries there are, and the last signed head."""
        problems = self._ledger.verify()
        head = self._rows.head()
        signed = self._rows.last_signed()
        response = {
            "Intact": not problems,
            "Problems": problems,
            "Entries": 0 if head is None else head[0],
            "LastSignedHead": None if signed is None else {"Seq": signed[0], "SignedAt": signed[1]},
        }
        return Reply(response, {"Intact": not problems, "ProblemsCount": len(problems)})


def checked_filters(filters: dict[str, Any]) -> dict[str, Any]:
    """The ledger filters (since, until: seconds since the epoch; outcome; the text ones), each
    checked, the unset ones dropped."""
    unknown = set(filters) - {"since", "until", "outcome", *_TEXT_FILTERS}
    if unknown:
        raise InvalidParameterException(f"Not ledger filters: {', '.join(sorted(unknown))}.")
    checked: dict[str, Any] = {}
    for name, value in filters.items():
        if value is None:
            continue
        if name in ("since", "until"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidParameterException(f"{name} must be a time in seconds since the Unix epoch.")
        elif name == "outcome":
            if value not in OUTCOMES:
                raise InvalidParameterException(f"outcome must be one of {', '.join(OUTCOMES)}, not {value!r}.")
        elif not isinstance(value, str) or len(value) > _TEXT_FILTER_MAX_CHARS or not value.isprintable():
            raise InvalidParameterException(
                f"{name} must be printable text of at most {_TEXT_FILTER_MAX_CHARS} characters."
            )
        checked[name] = value
    return checked
