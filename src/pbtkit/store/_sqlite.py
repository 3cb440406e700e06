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

import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pbtkit._exceptions import ExperimentConflict, NotFound, SchemaMismatch, StorageError
from pbtkit.store._base import (
    EventRecord,
    ExperimentRecord,
    MemberRecord,
    ReportRecord,
    Store,
    Transaction,
    TrialRecord,
    decode_metrics,
    encode_metrics,
    iter_chunks,
)
from pbtkit.store._ddl import SCHEMA_VERSION, SQLITE_CREATE, SQLITE_STAMP
from pbtkit.store._rows import LazyJSON, nan_to_none, none_to_nan

try:  # POSIX; elsewhere writers of several processes meet at SQLite's lock only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["SQLiteStore", "begin_immediate", "sqlite_path"]

_READ_BUSY_MS = 60_000
_WRITE_WAIT_S = 120.0

_TRIAL_COLUMNS = (
    "experiment_id, member, generation, hparams, parent_id, start_step, end_step, status, "
    "attempt, lease_owner, lease_expires, checkpoint, checkpoint_released, metrics, score, "
    "error, created_at, started_at, finished_at, priority, inherit, not_before, checkpoint_bad"
)
_TRIAL = f"SELECT id, {_TRIAL_COLUMNS} FROM pbt_trials"
_Q_TRIAL = f"{_TRIAL} WHERE id = ?"
_I_TRIAL = f"INSERT INTO pbt_trials ({_TRIAL_COLUMNS}) VALUES ({', '.join('?' * 23)})"
_U_TRIAL = (
    "UPDATE pbt_trials SET "
    + ", ".join(f"{c.strip()} = ?" for c in _TRIAL_COLUMNS.split(","))
    + " WHERE id = ? AND status = ?"
)
_PENDING = f"{_TRIAL} WHERE experiment_id = ? AND status = 'pending'"
_ORDER = " ORDER BY generation, priority, id LIMIT 1"
_DUE = " AND (not_before IS NULL OR not_before <= ?)"
#: (by member, by generation, due now) -> the statement
_Q_PENDING = {
    (member, generation, due): _PENDING
    + (" AND member = ?" if member else "")
    + (" AND generation = ?" if generation else "")
    + (_DUE if due else "")
    + _ORDER
    for member in (False, True)
    for generation in (False, True)
    for due in (False, True)
}
_EXPERIMENT = "SELECT id, name, config, status, created_at FROM pbt_experiments"
_Q_EXPERIMENT = f"{_EXPERIMENT} WHERE name = ?"
_Q_EXPERIMENTS = f"{_EXPERIMENT} ORDER BY id"
_I_EXPERIMENT = (
    "INSERT INTO pbt_experiments (name, config, status, created_at, seq) VALUES (?, ?, ?, ?, 0)"
)
_Q_EXPERIMENT_ID = "SELECT id FROM pbt_experiments WHERE id = ?"
_U_EXPERIMENT_STATUS = "UPDATE pbt_experiments SET status = ? WHERE id = ?"
_U_SEQ = "UPDATE pbt_experiments SET seq = seq + 1 WHERE id = ? RETURNING seq"
_Q_SEQ = "SELECT seq FROM pbt_experiments WHERE id = ?"
_MEMBER_VALUES = "status, latest_trial_id, step, score, hparams, checkpoint, seq, metrics"
_U_MEMBER = (
    "UPDATE pbt_members SET "
    + ", ".join(f"{c.strip()} = ?" for c in _MEMBER_VALUES.split(","))
    + " WHERE experiment_id = ? AND member = ?"
)
_I_MEMBER = (
    f"INSERT INTO pbt_members ({_MEMBER_VALUES}, experiment_id, member) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_MEMBERS = (
    "SELECT member, status, latest_trial_id, step, score, hparams, checkpoint, metrics "
    "FROM pbt_members WHERE experiment_id = ?"
)
_Q_MEMBERS = f"{_MEMBERS} ORDER BY member"
_Q_MEMBERS_SINCE = f"{_MEMBERS} AND seq > ? ORDER BY member"
_Q_CHILDREN = "SELECT count(*) FROM pbt_trials WHERE parent_id = ? AND status IN ({})"
_Q_COUNT = "SELECT count(*) FROM pbt_trials WHERE experiment_id = ? AND status IN ({})"
_Q_COUNT_GEN = _Q_COUNT + " AND generation = ?"
_Q_COUNT_EVENTS = "SELECT count(*) FROM pbt_events WHERE experiment_id = ? AND kind = ?"
_I_REPORT = (
    "INSERT INTO pbt_reports (experiment_id, trial_id, member, step, metrics) "
    "VALUES (?, ?, ?, ?, ?)"
)
_D_REPORTS = "DELETE FROM pbt_reports WHERE trial_id = ?"
_REPORTS = "SELECT trial_id, member, step, metrics FROM pbt_reports WHERE experiment_id = ?"
_EVENT_COLUMNS = (
    "experiment_id, member, kind, trial_id, donor_member, donor_trial, old_hparams, "
    "new_hparams, detail, at"
)
_I_EVENT = f"INSERT INTO pbt_events ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_EVENTS = f"SELECT id, {_EVENT_COLUMNS} FROM pbt_events WHERE experiment_id = ?"

# Statements whose shape depends on how many values an IN (...) holds, made once each.
_SHAPED: dict[tuple[str, int], str] = {}


def _in(template: str, count: int) -> str:
    sql = _SHAPED.get((template, count))
    if sql is None:
        sql = template.format(", ".join("?" * count))
        _SHAPED[(template, count)] = sql
    return sql


_TRIALS: dict[tuple[int, bool, bool], str] = {}


def _trials_sql(statuses: int, member: bool, generation: bool) -> str:
    return (
        f"{_TRIAL} WHERE experiment_id = ?"
        + (f" AND status IN ({', '.join('?' * statuses)})" if statuses >= 0 else "")
        + (" AND member = ?" if member else "")
        + (" AND generation = ?" if generation else "")
        + " ORDER BY id"
    )


_dumps = json.dumps
_loads = json.loads


def _json_or_none(text: str | None) -> Any:
    # JSON columns written by SQLAlchemy hold the text 'null' for None; others SQL NULL.
    return None if text is None else _loads(text)


def _trial(row: Sequence[Any]) -> TrialRecord:
    (
        trial_id, experiment_id, member, generation, hparams, parent_id, start_step, end_step,
        status, attempt, lease_owner, lease_expires, checkpoint, released, metrics, score,
        error, created_at, started_at, finished_at, priority, inherit, not_before, bad,
    ) = row  # fmt: skip
    return TrialRecord(
        trial_id,
        experiment_id,
        member,
        generation,
        _loads(hparams),
        parent_id,
        start_step,
        end_step,
        status,
        attempt,
        lease_owner,
        lease_expires,
        checkpoint,
        bool(released),
        decode_metrics(_loads(metrics) or {}),
        none_to_nan(score),
        error,
        created_at,
        started_at,
        finished_at,
        priority,
        _json_or_none(inherit),
        not_before,
        bool(bad),
    )


def _plain(mapping: Mapping[str, Any]) -> str:
    return _dumps(mapping if type(mapping) is dict else dict(mapping))


def _trial_values(t: TrialRecord) -> tuple[Any, ...]:
    return (
        t.experiment_id,
        t.member,
        t.generation,
        _plain(t.hparams),
        t.parent_id,
        t.start_step,
        t.end_step,
        t.status,
        t.attempt,
        t.lease_owner,
        t.lease_expires,
        t.checkpoint,
        bool(t.checkpoint_released),
        _dumps(encode_metrics(t.metrics)),
        nan_to_none(t.score),
        t.error,
        t.created_at,
        t.started_at,
        t.finished_at,
        t.priority,
        None if t.inherit is None else _plain(t.inherit),
        t.not_before,
        bool(t.checkpoint_bad),
    )


def _experiment(row: Sequence[Any]) -> ExperimentRecord:
    experiment_id, name, config, status, created_at = row
    return ExperimentRecord(experiment_id, name, _loads(config), status, created_at)


def _event(row: Sequence[Any]) -> EventRecord:
    (
        event_id, experiment_id, member, kind, trial_id, donor_member, donor_trial,
        old_hparams, new_hparams, detail, at,
    ) = row  # fmt: skip
    return EventRecord(
        experiment_id,
        member,
        kind,
        trial_id,
        donor_member,
        donor_trial,
        _json_or_none(old_hparams),
        _json_or_none(new_hparams),
        detail,
        at,
        event_id,
    )


class _SQLiteTransaction(Transaction):
    __slots__ = ("_c",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._c = conn

    def now(self) -> float:
        return time.time()  # one machine: the file's clock is this machine's

    # experiments -------------------------------------------------------------------
    def create_experiment(
        self, name: str, config: Mapping[str, Any], now: float
    ) -> ExperimentRecord:
        try:
            cursor = self._c.execute(_I_EXPERIMENT, (name, _plain(config), "running", now))
        except sqlite3.IntegrityError:
            raise ExperimentConflict(f"an experiment named {name!r} already exists") from None
        assert cursor.lastrowid is not None
        return ExperimentRecord(cursor.lastrowid, name, dict(config), "running", now)

    def get_experiment(self, name: str) -> ExperimentRecord | None:
        row = self._c.execute(_Q_EXPERIMENT, (name,)).fetchone()
        return None if row is None else _experiment(row)

    def list_experiments(self) -> list[ExperimentRecord]:
        return [_experiment(r) for r in self._c.execute(_Q_EXPERIMENTS)]

    def lock_experiment(self, experiment_id: int) -> None:
        # The transaction holds SQLite's write lock from BEGIN IMMEDIATE already.
        if self._c.execute(_Q_EXPERIMENT_ID, (experiment_id,)).fetchone() is None:
            raise NotFound(f"no experiment with id {experiment_id}")

    def set_experiment_status(self, experiment_id: int, status: str) -> None:
        self._c.execute(_U_EXPERIMENT_STATUS, (status, experiment_id))

    # members -----------------------------------------------------------------------
    def put_members(self, records: Iterable[MemberRecord]) -> None:
        taken: dict[int, int] = {}
        for m in records:
            seq = taken.get(m.experiment_id)
            if seq is None:
                row = self._c.execute(_U_SEQ, (m.experiment_id,)).fetchone()
                if row is None:
                    raise NotFound(f"no experiment with id {m.experiment_id}")
                seq = taken[m.experiment_id] = int(row[0])
            values = (
                m.status,
                m.latest_trial_id,
                m.step,
                nan_to_none(m.score),
                _plain(m.hparams),
                m.checkpoint,
                seq,
                _dumps(encode_metrics(m.metrics)) if m.metrics else None,
                m.experiment_id,
                m.member,
            )
            if self._c.execute(_U_MEMBER, values).rowcount == 0:
                self._c.execute(_I_MEMBER, values)

    def members(self, experiment_id: int) -> list[MemberRecord]:
        return self._member_rows(self._c.execute(_Q_MEMBERS, (experiment_id,)), experiment_id)

    def members_since(self, experiment_id: int, seq: int) -> tuple[int, list[MemberRecord]]:
        row = self._c.execute(_Q_SEQ, (experiment_id,)).fetchone()
        if row is None:
            raise NotFound(f"no experiment with id {experiment_id}")
        now = int(row[0])
        if now <= seq:
            return now, []
        rows = self._c.execute(_Q_MEMBERS_SINCE, (experiment_id, seq))
        return now, self._member_rows(rows, experiment_id)

    @staticmethod
    def _member_rows(rows: Iterable[Sequence[Any]], experiment_id: int) -> list[MemberRecord]:
        # The hot read of every decision: hyperparameters and metrics are decoded only for
        # the members a decision looks at.
        return [
            MemberRecord(
                experiment_id,
                member,
                status,
                latest,
                step,
                none_to_nan(score),
                LazyJSON(hparams),
                checkpoint,
                LazyJSON(metrics, decode_metrics) if metrics else {},
            )
            for member, status, latest, step, score, hparams, checkpoint, metrics in rows
        ]

    # trials ------------------------------------------------------------------------
    def insert_trial(self, trial: TrialRecord) -> TrialRecord:
        cursor = self._c.execute(_I_TRIAL, _trial_values(trial))
        assert cursor.lastrowid is not None
        return TrialRecord(cursor.lastrowid, *(getattr(trial, n) for n in _FIELDS_AFTER_ID))

    def get_trial(self, trial_id: int) -> TrialRecord:
        row = self._c.execute(_Q_TRIAL, (trial_id,)).fetchone()
        if row is None:
            raise NotFound(f"no trial with id {trial_id}")
        return _trial(row)

    def trials(
        self,
        experiment_id: int,
        *,
        statuses: Sequence[str] | None = None,
        member: int | None = None,
        generation: int | None = None,
    ) -> list[TrialRecord]:
        if statuses is not None and not statuses:
            return []
        params: list[Any] = [experiment_id]
        if statuses is not None:
            params.extend(statuses)
        if member is not None:
            params.append(member)
        if generation is not None:
            params.append(generation)
        shape = (
            -1 if statuses is None else len(statuses),
            member is not None,
            generation is not None,
        )
        sql = _TRIALS.get(shape)
        if sql is None:
            sql = _TRIALS[shape] = _trials_sql(*shape)
        return [_trial(r) for r in self._c.execute(sql, params)]

    def count_trials(
        self, experiment_id: int, statuses: Sequence[str], *, generation: int | None = None
    ) -> int:
        if not statuses:
            return 0
        if generation is None:
            sql = _in(_Q_COUNT, len(statuses))
            return int(self._c.execute(sql, (experiment_id, *statuses)).fetchone()[0])
        sql = _in(_Q_COUNT_GEN, len(statuses))
        return int(self._c.execute(sql, (experiment_id, *statuses, generation)).fetchone()[0])

    def next_pending(
        self,
        experiment_id: int,
        *,
        member: int | None = None,
        generation: int | None = None,
        claim: bool = False,
        now: float | None = None,
    ) -> TrialRecord | None:
        # ``claim`` needs nothing here: the write transaction holds the file's lock.
        params: list[Any] = [experiment_id]
        if member is not None:
            params.append(member)
            generation = None  # a member's next trial, whatever its generation
        if generation is not None:
            params.append(generation)
        if now is not None:
            params.append(now)
        sql = _Q_PENDING[(member is not None, generation is not None, now is not None)]
        row = self._c.execute(sql, params).fetchone()
        return None if row is None else _trial(row)

    def update_trial(self, trial: TrialRecord, *, expect_status: str) -> bool:
        params = (*_trial_values(trial), trial.id, expect_status)
        return self._c.execute(_U_TRIAL, params).rowcount == 1

    def children_count(self, trial_id: int, statuses: Sequence[str]) -> int:
        if not statuses:
            return 0
        sql = _in(_Q_CHILDREN, len(statuses))
        return int(self._c.execute(sql, (trial_id, *statuses)).fetchone()[0])

    # reports and events ------------------------------------------------------------
    def add_reports(self, experiment_id: int, records: Sequence[ReportRecord]) -> None:
        if records:
            self._c.executemany(
                _I_REPORT,
                [
                    (experiment_id, r.trial_id, r.member, r.step, _dumps(encode_metrics(r.metrics)))
                    for r in records
                ],
            )

    def delete_reports(self, trial_id: int) -> None:
        self._c.execute(_D_REPORTS, (trial_id,))

    def reports(
        self, experiment_id: int, *, member: int | None = None, trial_id: int | None = None
    ) -> list[ReportRecord]:
        sql, params = _REPORTS, [experiment_id]
        if member is not None:
            sql, params = sql + " AND member = ?", [*params, member]
        if trial_id is not None:
            sql, params = sql + " AND trial_id = ?", [*params, trial_id]
        rows = self._c.execute(sql + " ORDER BY id", params)
        return [ReportRecord(t, m, s, decode_metrics(_loads(v))) for t, m, s, v in rows]

    def add_events(self, records: Sequence[EventRecord]) -> None:
        if not records:
            return
        for chunk in iter_chunks(records, 500):
            self._c.executemany(
                _I_EVENT,
                [
                    (
                        e.experiment_id,
                        e.member,
                        e.kind,
                        e.trial_id,
                        e.donor_member,
                        e.donor_trial,
                        None if e.old_hparams is None else _plain(e.old_hparams),
                        None if e.new_hparams is None else _plain(e.new_hparams),
                        e.detail,
                        e.at,
                    )
                    for e in chunk
                ],
            )

    def events(self, experiment_id: int, *, kind: str | None = None) -> list[EventRecord]:
        if kind is None:
            rows = self._c.execute(_EVENTS + " ORDER BY id", (experiment_id,))
        else:
            rows = self._c.execute(_EVENTS + " AND kind = ? ORDER BY id", (experiment_id, kind))
        return [_event(r) for r in rows]

    def count_events(self, experiment_id: int, kind: str) -> int:
        return int(self._c.execute(_Q_COUNT_EVENTS, (experiment_id, kind)).fetchone()[0])


_FIELDS_AFTER_ID = TrialRecord.__slots__[1:]


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
            yield _SQLiteTransaction(conn)
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
