"""The data directory: the owner's alone, and known to be open.

It is created 0700 (its files are made 0600 where faceledger creates them). Every service that
opens it holds a shared advisory lock on ``faceledger.lock`` for as long as it is open; a step
that must be alone — re-encrypting every template under a new key, which a running server would
not see — takes the lock exclusively, and is refused while any other process (a server, another
command) has the directory open.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from faceledger.config import SQLITE_FILE
from faceledger.errors import DataDirectoryError
from faceledger.store import is_postgresql_url, same_database, without_password

LOCK_FILE = "faceledger.lock"
# the PostgreSQL database holding this directory's store, as a URL without its password
DATABASE_RECORD = "database.url"

log = logging.getLogger(__name__)


class DataDirectory:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_SH)  # waits only while a rotation runs

    @contextmanager
    def exclusive(self) -> Iterator[bool]:
        """Try to hold the directory alone for the enclosed block; yields whether it is (no other
        process has it open). The shared hold is restored after."""
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        try:
            yield alone
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_SH)

    def store_location(self, database: str | None, for_new: str | None) -> str | Path:
        """Where this directory's store is: its SQLite file, or the PostgreSQL database it
        records. A directory's store is fixed when it is first opened, so that its keys never
        meet another store's templates and ledger: ``database`` (--database) must name the one
        it has, and ``for_new`` (FACELEDGER_DATABASE_URL) only chooses for a directory that has
        none yet (faceledger migrate moves a store). A URL's password is taken from whichever of
        the two names the recorded database, and is never written here."""
        sqlite = self.path / SQLITE_FILE
        recorded_file = self.path / DATABASE_RECORD
        recorded = recorded_file.read_text().strip() if recorded_file.exists() else None
        has_sqlite = sqlite.exists()
        if database is not None and not is_postgresql_url(database):
            raise DataDirectoryError(f"--database takes a postgresql:// URL, not {database!r}.")
        given = database or for_new
        if recorded is None and not has_sqlite:
            if given is None:
                return sqlite
            if is_postgresql_url(given):
                self._record(without_password(given))
                return given
            raise DataDirectoryError(f"FACELEDGER_DATABASE_URL must be a postgresql:// URL, not {given!r}.")
        here = recorded if recorded is not None else sqlite
        for url in (database, for_new):
            if url is None:
                continue
            if recorded is not None and same_database(url, recorded):
                return url
            message = (
                f"{self.path} keeps its store in {_shown(here)}, not in {without_password(url)}; "
                "faceledger migrate --to moves a store."
            )
            if url is database:
                raise DataDirectoryError(message)
            log.warning("FACELEDGER_DATABASE_URL is set, but only chooses for a new data directory: %s", message)
        return here

    def switch_store(self, url: str) -> None:
        """Record that this directory's store is now the database at ``url`` (a migrated store)."""
        self._record(without_password(url))

    def _record(self, url: str) -> None:
        """Write the record whole and then rename it into place, so that another process opening
        the same new directory at once reads either no record or all of it."""
        partial = self.path / f".{DATABASE_RECORD}.{os.getpid()}"
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(url + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, self.path / DATABASE_RECORD)

    def loose_modes(self) -> list[str]:
        """Problems with who may read the directory and its files (anyone but the owner)."""
        problems = []
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            problems.append(f"{self.path} is mode {mode:o}: others may enter it (chmod 700)")
        for item in sorted(self.path.rglob("*")):
            if item.is_file() and stat.S_IMODE(item.stat().st_mode) & 0o077:
                problems.append(f"{item} is mode {stat.S_IMODE(item.stat().st_mode):o}: others may read it (chmod 600)")
        return problems

    def close(self) -> None:
        os.close(self._lock)


def _shown(store: str | Path) -> str:
    return f"the SQLite file {store}" if isinstance(store, Path) else without_password(store)
