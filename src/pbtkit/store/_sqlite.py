"""The default store: a SQLite file, through the standard library's driver.

No SQLAlchemy here: every statement is a fixed string that the driver prepares once per
connection and keeps in its statement cache, and rows become records directly. A trial's
life runs a dozen statements, and SQLAlchemy's Python around each one cost several times
SQLite's own work (and half a second of import in every worker process).

The file is opened in WAL mode, so readers (the progress display, ``pbtkit status``)
never block the writers. Writers queue twice:

- within a process, on a lock, so threads never race for SQLite's lock;
- between processes, on an OS file lock (``flock`` on ``<database>-pbtlock``), taken
  before ``BEGIN IMMEDIATE``. A waiting writer sleeps in the kernel and is woken the
  moment the holder commits, where SQLite's own busy handler would sleep 1, 2, 5, 10 ms
  and retry, long after the lock was free. ``BEGIN IMMEDIATE`` then normally succeeds at
  once; its short retry loop is left for writers that do not take the file lock (another
  program, an older pbtkit).

A new database is created from the statements of :mod:`pbtkit.store._ddl` and stamped
at the current schema version; an older one is refused until ``pbtkit db upgrade``
(Alembic, imported only there) brings it up to date.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pbtkit._exceptions import SchemaMismatch, StorageError
from pbtkit.store._base import Store, Transaction
from pbtkit.store._ddl import SCHEMA_VERSION, SQLITE_CREATE, SQLITE_STAMP
from pbtkit.store._sqlite_tx import SQLiteTransaction

try:  # POSIX; elsewhere writers of several processes meet at SQLite's lock only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["SQLiteStore", "begin_immediate", "sqlite_path"]

_READ_BUSY_MS = 60_000
_WRITE_WAIT_S = 120.0


def sqlite_path(url: str) -> Path | None:
    """The file of a plain ``sqlite:///path`` URL, or None for any other form (a URI
    filename, query options, a driver name), which :class:`~pbtkit.store.SQLStore`
    handles."""
    if not url.startswith("sqlite:///") or "?" in url:
        return None
    path = url[len("sqlite:///") :]
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path)


def begin_immediate(dbapi_conn: Any) -> None:
    """Take SQLite's write lock, retrying quickly while another writer holds it.

    Writers of pbtkit queue on the file lock first, so this normally succeeds at once;
    the loop waits for writers that do not take it. SQLite's own busy handler sleeps 1,
    2, 5, 10, ... ms between tries, far longer than a transaction holds the lock. Retrying
    BEGIN is safe: nothing of the transaction has run yet.
    """
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("BEGIN IMMEDIATE")
        return
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
    cursor.execute("PRAGMA busy_timeout=0")
    try:
        delay = 0.0001
        deadline = time.monotonic() + _WRITE_WAIT_S
        while True:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise StorageError(
                        f"the SQLite database stayed locked for {_WRITE_WAIT_S:.0f} s; another "
                        "process holds it (an open transaction in a shell?)"
                    ) from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 1.5, 0.005)
    finally:
        cursor.execute(f"PRAGMA busy_timeout={_READ_BUSY_MS}")
        cursor.close()


class _Writers:
    """The OS file lock that writers of every process take before ``BEGIN IMMEDIATE``.

    Re-entrant within the thread that holds the store's lock (its callers hold that).
    Where the lock file cannot be made (a read-only directory, no ``flock``), writers meet
    at SQLite's lock only, as before.
    """

    def __init__(self, path: Path) -> None:
        self._fd: int | None = None
        self._depth = 0
        if fcntl is None:
            return
        try:
            self._fd = os.open(f"{path}-pbtlock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            self._fd = None

    def __enter__(self) -> None:
        self._depth += 1
        if self._fd is None or self._depth > 1:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(self._fd, fcntl.LOCK_EX)  # asleep until the holder commits

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._fd is not None and self._depth == 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SQLiteStore(Store):
    """A store in a SQLite file, reached through the standard library's ``sqlite3``.

    Args:
        url: ``sqlite:///path/to/pbt.db`` (absolute, as :func:`normalize_url` makes it).
        create: Create the file and its tables when they are missing.

    Raises:
        StorageError: The file cannot be opened, or is not a database.
        SchemaMismatch: It was written by a pbtkit of another schema version, or holds
            tables pbtkit did not write.
    """

    def __init__(self, url: str, *, create: bool = True) -> None:
        path = sqlite_path(url)
        if path is None:
            raise StorageError(f"{url!r} is not a plain sqlite:///path URL")
        self.url = url
        self.path = path
        self._idle: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._closed = False
        # Writers of this process queue here; those of other processes at the file lock.
        self._write_lock = threading.RLock()
        self._writers = _Writers(path)
        try:
            self._prepare(create)
        except BaseException:
            self.close()
            raise

    # connections ---------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=_READ_BUSY_MS / 1000,
                isolation_level=None,  # we issue BEGIN ourselves
                check_same_thread=False,
                cached_statements=256,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            raise StorageError(
                f"cannot open storage {self.url!r}: {exc}. Check that the directory exists "
                "and is writable, and that the file is a pbtkit database"
            ) from exc
        return conn

    def _take(self) -> sqlite3.Connection:
        with self._pool_lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _give(self, conn: sqlite3.Connection) -> None:
        try:
            broken = conn.in_transaction  # left open by an error in COMMIT or ROLLBACK
        except sqlite3.ProgrammingError:  # closed after a failed ROLLBACK
            return
        if broken:
            conn.close()
            return
        with self._pool_lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    # transactions --------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._write_lock:
            conn = self._take()
            try:
                with self._writers:
                    try:
                        begin_immediate(conn)
                    except sqlite3.DatabaseError as exc:
                        raise self._error(exc) from exc
                    yield from self._run(conn)
            finally:
                self._give(conn)

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        conn = self._take()
        try:
            try:
                conn.execute("BEGIN DEFERRED")
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from exc
            yield from self._run(conn)
        finally:
            self._give(conn)

    def _run(self, conn: sqlite3.Connection) -> Iterator[Transaction]:
        try:
            yield SQLiteTransaction(conn)
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise self._error(exc) from exc
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise self._error(exc) from exc

    def _error(self, exc: sqlite3.DatabaseError) -> StorageError:
        return StorageError(f"the SQLite database {self.path} failed: {exc}")

    # opening -------------------------------------------------------------------------
    def _prepare(self, create: bool) -> None:
        conn = self._take()
        try:
            tables = self._tables(conn)
            if "pbt_meta" not in tables:
                if tables:
                    raise SchemaMismatch(
                        f"{self.url!r} holds tables that pbtkit did not write; "
                        "point storage at a new file or database"
                    )
                if not create:
                    raise StorageError(f"{self.url!r} holds no pbtkit database")
                self._create(conn)
                return
            version = self._version(conn)
            if version < SCHEMA_VERSION:
                raise SchemaMismatch(
                    f"{self.url!r} has pbtkit schema version {version}, this pbtkit "
                    f"uses {SCHEMA_VERSION}: run `pbtkit db upgrade --storage URL` (your data "
                    "is kept), then try again"
                )
            if version > SCHEMA_VERSION:
                raise SchemaMismatch(
                    f"{self.url!r} has pbtkit schema version {version}, newer than this "
                    f"pbtkit's {SCHEMA_VERSION}: upgrade pbtkit to use it"
                )
        finally:
            self._give(conn)

    def _tables(self, conn: sqlite3.Connection) -> set[str]:
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            return {name for (name,) in rows}
        except sqlite3.DatabaseError as exc:
            raise StorageError(
                f"cannot open storage {self.url!r}: {exc}. Check that the directory exists "
                "and is writable, and that the file is a pbtkit database"
            ) from exc

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM pbt_meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row and row[0] else 0

    def _create(self, conn: sqlite3.Connection) -> None:
        """The tables and the stamp, in one transaction under the write lock: of several
        processes opening a new file at once, one creates it and the others find it."""
        with self._write_lock, self._writers:
            begin_immediate(conn)
            try:
                tables = self._tables(conn)
                if "pbt_meta" not in tables and not tables:
                    for statement in (*SQLITE_CREATE, *SQLITE_STAMP):
                        conn.execute(statement)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # the rest of the contract --------------------------------------------------------
    @property
    def schema_version(self) -> int:
        """The schema version of the database."""
        conn = self._take()
        try:
            return self._version(conn)
        finally:
            self._give(conn)

    def close(self) -> None:
        with self._pool_lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for conn in idle:
            conn.close()
        self._writers.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"
