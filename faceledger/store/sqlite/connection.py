"""One SQLite file in WAL mode, a connection per thread, and write transactions.

Every write is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), so a crash in the middle of
a write leaves either all of it or none. SQLite's WAL lets readers go on while one writer commits;
the 30-second busy timeout makes concurrent writers queue instead of failing.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from faceledger.errors import ThrottlingException
from faceledger.store.sqlite.migrations import migrate

BUSY_TIMEOUT_MS = 30_000  # how long a write waits for another writer


class Database:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # the owner's alone; SQLite gives its -wal and -shm files the database file's mode
        self.path.touch(mode=0o600, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        connection = self.connection()
        connection.execute("PRAGMA journal_mode = WAL")
        migrate(connection)
        _refuse_read_only(connection)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode; use :meth:`write` for transactions)."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
            )
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA synchronous = NORMAL")
            # deleted rows are overwritten with zeros, so an erased template leaves no trace
            connection.execute("PRAGMA secure_delete = ON")
            self._local.connection = connection
            with self._all_lock:
                self._all.append(connection)
        return connection

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; inside :meth:`unit_of_work` it joins the unit's transaction."""
        connection = self.connection()
        if getattr(self._local, "unit_depth", 0):
            if not self._local.unit_began:
                _begin(connection)
                self._local.unit_began = True
            yield connection
            return
        _begin(connection)
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    @contextmanager
    def unit_of_work(self) -> Iterator[None]:
        """One transaction around every write made inside (on this thread), begun at the first
        write so that work before it (decoding, embedding) holds no lock. Callbacks registered
        with :meth:`after_commit` run once it has committed; nothing runs if it rolls back.
        Nested units join the outermost one."""
        local = self._local
        if getattr(local, "unit_depth", 0):
            local.unit_depth += 1
            try:
                yield
            finally:
                local.unit_depth -= 1
            return
        local.unit_depth, local.unit_began, local.after_commit = 1, False, []
        try:
            yield
        except BaseException:
            if local.unit_began:
                self.connection().execute("ROLLBACK")
            raise
        else:
            if local.unit_began:
                self.connection().execute("COMMIT")
            for callback in local.after_commit:
                callback()
        finally:
            local.unit_depth, local.unit_began, local.after_commit = 0, False, []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the current unit of work commits (at once outside one)."""
        if getattr(self._local, "unit_depth", 0):
            self._local.after_commit.append(callback)
        else:
            callback()

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same committed state (inside a unit
        of work that has begun writing, its own transaction already gives that)."""
        connection = self.connection()
        if getattr(self._local, "unit_began", False):
            yield connection
            return
        connection.execute("BEGIN")
        try:
            yield connection
        finally:
            connection.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection."""
        with self._all_lock:
            for connection in self._all:
                connection.close()
            self._all.clear()
        self._local = threading.local()


def _begin(connection: sqlite3.Connection) -> None:
    """Take the write lock; another writer holding it past the busy timeout is ThrottlingException
    (try again), as SDKs and the CLI's exit code 75 understand it, not sqlite3's error."""
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        if "locked" in str(error) or "busy" in str(error):
            raise ThrottlingException(
                f"The database is busy: another process has been writing for {BUSY_TIMEOUT_MS // 1000} s; try again."
            ) from None
        raise


def _refuse_read_only(connection: sqlite3.Connection) -> None:
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
