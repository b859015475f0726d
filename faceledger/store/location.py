"""Where a store lives: the path of an SQLite file, or a PostgreSQL URL (``postgresql://...``).

A URL's password is a secret like the keys: it is never written to a file faceledger makes nor
shown in a message; :func:`without_password` is the form that may be.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def is_postgresql_url(database: str) -> bool:
    return database.startswith(("postgresql://", "postgres://"))


def without_password(url: str) -> str:
    """The URL with any password removed (from its user part and from a ``password=`` parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def same_database(url: str, other: str) -> bool:
    """Whether two URLs name the same database (their passwords aside)."""
    return without_password(url) == without_password(other)
