"""What the SQL store needs of an engine: a connection per thread, write transactions, units of
work and read snapshots. The transaction bookkeeping lives here once; an engine (store/sqlite/,
store/postgresql/) says how to connect, how to begin a write and a snapshot, and how many
parameters one statement may hold.

The store's SQL is written once, in the subset both engines speak (``?`` placeholders,
``ON CONFLICT``, ``RETURNING``); an engine whose driver spells placeholders otherwise translates
them in its :class:`Connection`.

Every write is one transaction begun by :meth:`Database.write`, and every engine gives it the
same guarantee: writers are serialised (SQLite's ``BEGIN IMMEDIATE``; on PostgreSQL a
transaction-level advisory lock), so a read made inside a write sees no other writer's change
until it commits. The store relies on that for the audit ledger's one hash chain, for
``add_image(unique=True)`` and for policy read-modify-write.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """A DB-API connection in autocommit mode, with ``?`` placeholders."""

    def execute(self, sql: str, parameters: Sequence[object] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> Any: ...

    def close(self) -> None: ...


class Database(ABC):
    """Connections (one per thread, opened on first use) and the transactions made on them."""

    # Whether a deleted row's bytes may outlive its transaction where faceledger cannot reach them
    # (PostgreSQL's dead rows, WAL, replicas, backups); SQLite overwrites them (secure_delete) and
    # empties its WAL (erase_traces).
    keeps_deleted_rows = False

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[Connection] = []
        self._all_lock = threading.Lock()

    # -- what an engine provides ----------------------------------------------------------

    @abstractmethod
    def _connect(self) -> Connection:
        """A new connection in autocommit mode."""

    @abstractmethod
    def _begin_write(self, connection: Connection) -> None:
        """Begin a transaction that holds the engine's writer lock (raises ThrottlingException
        when another writer holds it too long)."""

    @abstractmethod
    def _begin_snapshot(self, connection: Connection) -> None:
        """Begin a transaction in which every read sees one committed state."""

    @abstractmethod
    def max_parameters(self) -> int:
        """How many ``?`` one statement may hold."""

    @abstractmethod
    def erase_traces(self) -> None:
        """See Store.erase_traces."""

    @abstractmethod
    def describe(self) -> str:
        """Where the database is, for messages (never with a password)."""

    @abstractmethod
    def schema_version(self, connection: Connection) -> int:
        """The last migration applied (0: none)."""

    @abstractmethod
    def begin_migration(self, connection: Connection) -> None:
        """Begin a transaction that no other process migrating the same database runs beside."""

    @abstractmethod
    def set_schema_version(self, connection: Connection, version: int) -> None: ...

    def render_ddl(self, statement: str) -> str:
        """A migration statement (written in SQLite's types) in this engine's."""
        return statement

    def identity_high_water(self, connection: Connection, table: str, column: str) -> int:
        """The highest number ``column`` (an AUTOINCREMENT one) has given, deleted rows included:
        such numbers are never given again (a vector index may still hold one as removed)."""
        return int(connection.execute(f"SELECT COALESCE(MAX({column}), 0) FROM {table}").fetchone()[0])

    def continue_identity(self, connection: Connection, table: str, column: str, high_water: int) -> None:
        """After rows were copied in with their own ``column`` values (store/sql/copy.py), make
        the next row inserted without one number past them and past ``high_water``, the source's
        highest. (Only PostgreSQL is a migration's target.)"""
        return None

    def notify_change(self, connection: Connection, collection_id: str) -> None:
        """Inside a write: tell the processes watching (:meth:`watch`) that the collection's faces
        changed, once (and only if) the transaction commits. Engines that cannot push do nothing."""
        return None

    def watch(self, changed: Callable[[str | None], None]) -> Callable[[], None] | None:
        """Call ``changed(collection_id)`` after each change another process commits, and
        ``changed(None)`` when changes may have been missed (after a reconnection); returns a
        function that stops watching, or None where the engine cannot push changes."""
        return None

    def other_clients(self) -> int:
        """How many other faceledger processes are connected to this database now (an engine
        whose processes share a data directory, as SQLite's do, answers 0: the directory's lock
        tells)."""
        return 0

    @contextmanager
    def duty(self, name: str) -> Iterator[bool]:
        """Try to hold the named background duty (purge, ledger signing) alone among every
        process on this database for the enclosed block; yields whether this process holds it."""
        yield True

    # -- shared --------------------------------------------------------------------------

    def connection(self) -> Connection:
        """This thread's connection (autocommit mode; use :meth:`write` for transactions)."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
            with self._all_lock:
                self._all.append(connection)
        return connection

    def _forget_connection(self) -> None:
        """Drop this thread's connection (it was lost); the next call opens a new one."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            return
        self._local.connection = None
        with self._all_lock:
            if connection in self._all:
                self._all.remove(connection)
        try:
            connection.close()
        except Exception:  # noqa: BLE001 - a lost connection may fail to close; it is gone either way
            pass

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction; inside :meth:`unit_of_work` it joins the unit's transaction."""
        connection = self.connection()
        if getattr(self._local, "unit_depth", 0):
            if not self._local.unit_began:
                self._begin_write(connection)
                self._local.unit_began = True
            yield connection
            return
        self._begin_write(connection)
        try:
            yield connection
        except BaseException:
            self._end(connection, "ROLLBACK")
            raise
        self._end(connection, "COMMIT")

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
                self._end(self.connection(), "ROLLBACK")
            raise
        else:
            if local.unit_began:
                self._end(self.connection(), "COMMIT")
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
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction: every query inside sees the same committed state (inside a unit
        of work that has begun writing, its own transaction already gives that)."""
        connection = self.connection()
        if getattr(self._local, "unit_began", False):
            yield connection
            return
        self._begin_snapshot(connection)
        try:
            yield connection
        finally:
            self._end(connection, "COMMIT")

    def _end(self, connection: Connection, statement: str) -> None:
        connection.execute(statement)

    def close(self) -> None:
        """Close every thread's connection."""
        with self._all_lock:
            for connection in self._all:
                connection.close()
            self._all.clear()
        self._local = threading.local()
