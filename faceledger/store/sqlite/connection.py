"""The embedded engine: one SQLite file in WAL mode, a connection per thread.

Every write is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), so a crash in the middle of
a write leaves either all of it or none. SQLite's WAL lets readers go on while one writer commits;
the 30-second busy timeout makes concurrent writers queue instead of failing.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from faceledger.errors import ThrottlingException
from faceledger.store.sql.database import Connection, Database
from faceledger.store.sql.migrations import migrate

BUSY_TIMEOUT_MS = 30_000  # how long a write waits for another writer


class SQLiteDatabase(Database):
    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self._writers = threading.Lock()  # this process's writers, in turn (see _begin_write)
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # the owner's alone; SQLite gives its -wal and -shm files the database file's mode
        self.path.touch(mode=0o600, exist_ok=True)
        connection = self.connection()
        _use_wal(connection)
        migrate(self, connection)
        _refuse_read_only(connection)

    def _connect(self) -> Connection:
        connection = sqlite3.connect(
            self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
        )
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute("PRAGMA synchronous = NORMAL")
        # deleted rows are overwritten with zeros, so an erased template leaves no trace
        connection.execute("PRAGMA secure_delete = ON")
        return connection

    def _begin_write(self, connection: Connection) -> None:
        """Take the write lock; another writer holding it past the busy timeout is
        ThrottlingException (try again), as SDKs and the CLI's exit code 75 understand it, not
        sqlite3's error.

        Writers of this process first queue on a lock of its own: SQLite's busy handler polls,
        sleeping up to 100 ms between tries, so threads of one server meeting at the database
        waited hundreds of milliseconds for a lock held a millisecond (a search's ledger entry
        behind another's). Across processes the busy handler still decides."""
        if not self._writers.acquire(timeout=BUSY_TIMEOUT_MS / 1000):
            raise ThrottlingException(
                f"The database is busy: this process has been writing for {BUSY_TIMEOUT_MS // 1000} s; try again."
            )
        try:
            connection.execute("BEGIN IMMEDIATE")
        except BaseException as error:
            self._writers.release()
            if isinstance(error, sqlite3.OperationalError) and ("locked" in str(error) or "busy" in str(error)):
                raise ThrottlingException(
                    f"The database is busy: another process has been writing for {BUSY_TIMEOUT_MS // 1000} s; "
                    "try again."
                ) from None
            raise
        self._local.writing = True

    def _end(self, connection: Connection, statement: str) -> None:
        try:
            connection.execute(statement)
        finally:
            if getattr(self._local, "writing", False):
                self._local.writing = False
                self._writers.release()

    def _begin_snapshot(self, connection: Connection) -> None:
        connection.execute("BEGIN")

    def max_parameters(self) -> int:
        """SQLite builds cap the variables of a statement: 999 in old ones, 32,766 since 3.32."""
        return self.connection().getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)  # type: ignore[attr-defined]

    def erase_traces(self) -> None:
        """Fold the write-ahead log into the database file and empty it, so that pages
        overwritten by a deletion (``secure_delete`` zeroes them) survive nowhere."""
        self.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def describe(self) -> str:
        return str(self.path)

    def identity_high_water(self, connection: Connection, table: str, column: str) -> int:
        """AUTOINCREMENT's counter (``sqlite_sequence``) outlives the rows it numbered."""
        counted = connection.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        return max(super().identity_high_water(connection, table, column), int(counted[0]) if counted else 0)

    @contextmanager
    def duty(self, name: str) -> Iterator[bool]:
        """An advisory lock on a file beside the database, tried without waiting (processes
        sharing an SQLite file share its machine)."""
        lock = os.open(self.path.with_name(f"{self.path.name}-{name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
            except BlockingIOError:
                held = False
            yield held
        finally:
            os.close(lock)  # releases the lock

    def schema_version(self, connection: Connection) -> int:
        return int(connection.execute("PRAGMA user_version").fetchone()[0])

    def begin_migration(self, connection: Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")

    def set_schema_version(self, connection: Connection, version: int) -> None:
        connection.execute(f"PRAGMA user_version = {int(version)}")


def _use_wal(connection: Connection) -> None:
    """Turn the file to WAL mode (a no-op once it is). On a new file the pragma reads the header
    and then upgrades to a write; of two processes doing so at once SQLite refuses one at once,
    without its busy handler (to avoid a deadlock between upgrades), 'database is locked': try
    again, within the busy timeout, until the other's change is seen."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def _refuse_read_only(connection: Connection) -> None:
    """SQLite opens a file it may not write read-only and says so only at the first write (here,
    the first ledger entry): make a write that changes nothing, and roll it back, so that such a
    store is refused when it opens. Without waiting: a database another process is writing is
    busy, and so writable."""
    connection.execute("PRAGMA busy_timeout = 0")
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute(f"PRAGMA user_version = {int(version)}")
        finally:
            connection.execute("ROLLBACK")
    except sqlite3.OperationalError as error:
        if "locked" not in str(error) and "busy" not in str(error):
            raise
    finally:
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
