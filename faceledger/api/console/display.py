"""How the console shows numbers and times, and reads them back from its forms.

A similarity is shown with what it means, never alone: the false-match rate that the collection's
threshold table measured at that score (how often two *different* people score this high), and
the bound every promise rests on (the upper end of its 95% interval times the table's transfer
margin). A similarity is not the probability that two faces are one person.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment

from faceledger.errors import InvalidParameterException


def install(env: Environment) -> None:
    env.filters.update(
        when=when,
        one_in=one_in,
        jpeg_data_url=jpeg_data_url,
        pretty_json=pretty_json,
        short_id=short_id,
    )


def when(moment: float | None) -> str:
    """A time as UTC, to the second."""
    if moment is None:
        return "—"
    return datetime.fromtimestamp(moment, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def one_in(rate: float | None) -> str:
    """A rate as "1 in N" (how people read small rates; N to two significant figures), or what
    stands for none."""
    if rate is None:
        return "not measured"
    if rate <= 0:
        return "none measured"
    if rate >= 0.5:
        return f"{rate:.0%}"
    # two significant figures: the rates are estimates, and more digits would claim otherwise
    return f"1 in {float(f'{1 / rate:.2g}'):,.0f}"


def jpeg_data_url(crop: bytes | None) -> str | None:
    """A face crop as an inline image (the page's Content-Security-Policy allows data: images
    only: no URL that would fetch a face separately, unledgered)."""
    if crop is None:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(crop).decode()


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def short_id(value: str | None) -> str:
    return "—" if not value else value[:8]


def parse_time(text: str | None, label: str) -> float | None:
    """A UTC date and time from a form (``2026-12-06T08:30`` or ``2026-12-06``) as seconds
    since the epoch; empty: None."""
    if not text or not text.strip():
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidParameterException(f"{label} must be a date and time such as 2026-12-06T08:30 (UTC).") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def parse_date(text: str, label: str) -> float:
    """The end of a UTC day given as ``2026-12-31`` (a consent expiring on that day holds all of it)."""
    moment = parse_time(text, label)
    if moment is None:
        raise InvalidParameterException(f"{label} must be a date such as 2026-12-31.")
    return moment + 86_400 - 1
