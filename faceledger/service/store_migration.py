"""Moving a data directory's store to PostgreSQL (``faceledger migrate --to``).

The whole store is copied row for row (store/sql/copy.py): collections, faces with their
templates still sealed, users, policies, consent, reviews, access keys and the ledger with its
hashes and signatures. The copy is verified before anything is switched: every table's row count
equal in both, and the ledger's chain and signatures verifying in the target with the data
directory's ledger key, up to the same head. Only then does the data directory record the new
database, and the SQLite files go (``keep_sqlite``: kept aside, renamed, for an operator who wants
a copy; erasures made from then on do not reach it).

The source must not change meanwhile, so the data directory must be held alone (no server, no
other command). The target must be empty, or hold a copy of this same store cut short (the store's
``store_id``, recorded in the target before its first row): running the migration again resumes it.
The migration is ledgered in the source before the copy, so the target's ledger holds it too.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

from faceledger.config import SQLITE_FILE
from faceledger.errors import ConflictException, InvalidParameterException, ResourceAlreadyExistsException
from faceledger.ledger.chain import Ledger
from faceledger.service.data_directory import DataDirectory
from faceledger.service.operations import changes_data
from faceledger.service.results import Reply
from faceledger.store import is_postgresql_url, open_store, same_database, without_password
from faceledger.store.sql.copy import (
    MIGRATION_BEGAN,
    TableCopy,
    compare_counts,
    copy_store,
    is_empty,
    operations_after,
    require_same_counts,
    store_facts,
)
from faceledger.store.sql.store import SQLStore

KEPT_SQLITE_SUFFIX = ".before-migration"


class StoreMigration:
    def __init__(self, store: SQLStore, data_directory: DataDirectory, ledger_key: Path) -> None:
        self._store = store
        self._directory = data_directory
        self._ledger_key = ledger_key

    def check_target(self, url: str) -> None:
        """Refuse a target that is not a PostgreSQL database other than this directory's store."""
        if not is_postgresql_url(url):
            raise InvalidParameterException(f"migrate --to takes a postgresql:// URL, not {url!r}.")
        here = getattr(self._store.database, "url", None)
        if here is not None and same_database(here, url):
            raise InvalidParameterException(f"This data directory's store is {without_password(url)} already.")

    def announce(self, url: str) -> Reply:
        """The ledger entry of the migration (in the source, so the copy holds it)."""
        shown = without_password(url)
        return Reply({"To": shown}, {"To": shown})

    def copy(self, url: str, progress: Callable[[str, int], None] | None = None) -> list[TableCopy]:
        """Copy the store into the database at ``url`` and verify the copy; every table's counts.
        Nothing is switched yet (see :meth:`switch`)."""
        store_id = self._store.store_fact("store_id") or self._store.record_store_fact("store_id", str(uuid.uuid4()))
        head = self._store.ledger.head()
        target = open_store(url)
        try:
            assert isinstance(target, SQLStore)
            self._require_target_of_this_store(target, store_id, url)
            # where this store's ledger stood when the copy began: a resumed copy is refused if the
            # store changed meanwhile (rows already copied would be stale, erased faces back)
            began = int(target.record_store_fact(MIGRATION_BEGAN, str(head[0] if head else 0)))
            changed = {operation for operation in operations_after(self._store, began) if changes_data(operation)}
            changed.discard("MigrateStore")
            if changed:
                raise ConflictException(
                    f"The store changed since the interrupted migration into {without_password(url)} began "
                    f"({', '.join(sorted(changed))}): its copy there is stale; migrate into an empty database."
                )
            copy_store(self._store, target, progress)
            counts = compare_counts(self._store, target)
            require_same_counts(counts)
            self._require_same_ledger(target)
        finally:
            target.close()
        return counts

    def switch(self, url: str, keep_sqlite: bool) -> Path | None:
        """Make the data directory use the database at ``url`` (its store closed first); the
        SQLite files are removed, or with ``keep_sqlite`` the database is kept aside (returned)."""
        self._directory.switch_store(url)
        database = self._directory.path / SQLITE_FILE
        kept = None
        if keep_sqlite and database.exists():
            with sqlite3.connect(database) as connection:  # the write-ahead log folded in, emptied
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            kept = database.with_name(database.name + KEPT_SQLITE_SUFFIX)
            database.replace(kept)
        for path in self._directory.path.glob(SQLITE_FILE + "*"):
            if path != kept:
                path.unlink()
        return kept

    def _require_target_of_this_store(self, target: SQLStore, store_id: str, url: str) -> None:
        """The target must be empty, or this store's copy; and what it records about itself (the
        fingerprints of the keys a node opened it with) must be this store's."""
        theirs = target.store_fact("store_id")
        if theirs not in (None, store_id) or (theirs is None and not is_empty(target)):
            raise ResourceAlreadyExistsException(
                f"{without_password(url)} holds another store: migrate into an empty database."
            )
        mine = store_facts(self._store)
        foreign = sorted(
            name
            for name, value in store_facts(target).items()
            if name not in ("store_id", MIGRATION_BEGAN) and mine.get(name) != value
        )
        if foreign:
            raise ResourceAlreadyExistsException(
                f"{without_password(url)} was opened with other keys than this store's ({', '.join(foreign)}): "
                "migrate into an empty database."
            )
        target.record_store_fact("store_id", store_id)

    def _require_same_ledger(self, target: SQLStore) -> None:
        problems = Ledger(target.ledger, self._ledger_key).verify()
        if problems:
            raise ConflictException(f"The copied ledger does not verify ({problems[0]}); nothing was switched.")
        if target.ledger.head() != self._store.ledger.head():
            raise ConflictException("The copied ledger ends elsewhere than the store's; nothing was switched.")
