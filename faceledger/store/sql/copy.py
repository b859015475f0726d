"""Copying a whole store into another database, row for row (``faceledger migrate --to``).

Every table of the schema is copied in the order the migrations create them (a table refers only
to tables made before it), each read in one snapshot of the source and written in batches of
``COPY_BATCH`` rows, each batch one transaction that skips rows already there (``ON CONFLICT DO
NOTHING``): a copy cut short is resumed by running it again. Nothing is decoded on the way: face
templates stay sealed under the template key, access key secrets under the secrets key, and the
ledger keeps its hashes and signatures, so its chain verifies in the target as it did in the
source. The source must not change meanwhile (the caller holds its data directory alone).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from faceledger.errors import ConflictException
from faceledger.store.sql.migrations import MIGRATIONS
from faceledger.store.sql.store import SQLStore

COPY_BATCH = 1000
# the one-row counter of changes (migration 9): the target takes the source's value, not its row
_COUNTER = "change_counter"
# names the store records about itself, not about its faces: copied like any row, but a target
# holding only these (a database just opened, before the copy's first batch) is empty
_STORE_FACTS = "store_meta"
# recorded in the target only: the source's last ledger entry when the copy began
MIGRATION_BEGAN = "migration_began_after_ledger_entry"


@dataclass(frozen=True)
class TableCopy:
    table: str
    source_rows: int
    target_rows: int


def schema_tables() -> list[tuple[str, str | None]]:
    """(table, its AUTOINCREMENT column if any), in the order the migrations create them."""
    tables = []
    for script in MIGRATIONS:
        for match in re.finditer(r"CREATE TABLE (\w+) \((.*?)\n    \);", script, re.S):
            counter = re.search(r"(\w+)\s+INTEGER PRIMARY KEY AUTOINCREMENT", match.group(2))
            tables.append((match.group(1), counter.group(1) if counter else None))
    return tables


def is_empty(store: SQLStore) -> bool:
    """Whether the store holds nothing but the facts of a database just opened."""
    db = store.database.connection()
    return all(
        db.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is None
        for table, _ in schema_tables()
        if table not in (_COUNTER, _STORE_FACTS)
    )


def store_facts(store: SQLStore) -> dict[str, str]:
    """Everything the store records about itself (store_meta)."""
    return dict(store.database.connection().execute(f"SELECT name, value FROM {_STORE_FACTS}").fetchall())


def operations_after(store: SQLStore, seq: int) -> set[str]:
    """The operations ledgered after entry ``seq``."""
    rows = store.database.connection().execute("SELECT DISTINCT operation FROM ledger WHERE seq > ?", (seq,))
    return {str(row[0]) for row in rows}


def copy_store(source: SQLStore, target: SQLStore, progress: Callable[[str, int], None] | None = None) -> None:
    """Copy every row of ``source`` that ``target`` lacks; ``progress(table, rows)`` after each batch."""
    for table, counter in schema_tables():
        with source.database.snapshot() as reading:
            if table == _COUNTER:
                (last,) = reading.execute(f"SELECT last_change FROM {_COUNTER}").fetchone()
                with target.database.write() as writing:
                    writing.execute(
                        f"UPDATE {_COUNTER} SET last_change = ? WHERE last_change < ?", (int(last), int(last))
                    )
                continue
            cursor = reading.execute(f"SELECT * FROM {table}")
            columns = [column[0] for column in cursor.description]  # type: ignore[attr-defined]
            insert = (
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
                " ON CONFLICT DO NOTHING"
            )
            copied = 0
            while rows := cursor.fetchmany(COPY_BATCH):  # type: ignore[attr-defined]
                with target.database.write() as writing:
                    writing.executemany(insert, [tuple(row) for row in rows])
                copied += len(rows)
                if progress is not None:
                    progress(table, copied)
        if counter is not None:
            with source.database.snapshot() as reading:
                high_water = source.database.identity_high_water(reading, table, counter)
            with target.database.write() as writing:
                target.database.continue_identity(writing, table, counter, high_water)


def compare_counts(source: SQLStore, target: SQLStore) -> list[TableCopy]:
    """Every table's row count in both stores."""
    counts = []
    for table, _ in schema_tables():
        count = f"SELECT COUNT(*) FROM {table}"
        if table == _STORE_FACTS:
            count += f" WHERE name <> '{MIGRATION_BEGAN}'"
        (mine,) = source.database.connection().execute(count).fetchone()
        (theirs,) = target.database.connection().execute(count).fetchone()
        counts.append(TableCopy(table, int(mine), int(theirs)))
    return counts


def require_same_counts(counts: list[TableCopy]) -> None:
    differing = [
        f"{c.table} ({c.source_rows} here, {c.target_rows} there)" for c in counts if c.source_rows != c.target_rows
    ]
    if differing:
        raise ConflictException(
            "The copy does not hold what the store holds: " + ", ".join(differing) + "; nothing was switched."
        )
