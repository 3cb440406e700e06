"""The relational store (SQLAlchemy Core): SQLite by default, any SQLAlchemy URL in principle.

SQLite is opened in WAL mode so that readers (the progress display, ``pbtkit status``)
never block the workers, and every write transaction starts with ``BEGIN IMMEDIATE`` so
that writers queue for the lock instead of failing half-way with "database is locked".
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import (
    DatabaseError,
    IntegrityError,
    ProgrammingError,
    SQLAlchemyError,
)

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
    display_url,
    encode_metrics,
    iter_chunks,
)
from pbtkit.store._codec import (
    event_from_json,
    event_to_json,
    experiment_from_json,
    trial_from_json,
    trial_to_json,
)
from pbtkit.store._schema import (
    SCHEMA_VERSION,
    _configure_sqlite,
    _connect_args,
    _migrate,
    _version,
    events,
    experiments,
    members,
    meta_table,
    reports,
    trials,
)

__all__ = ["SQLStore"]


# Statements are built once: constructing SQLAlchemy expressions costs more than running
# them on SQLite, and a worker runs a dozen per trial.
_TRIAL_COLUMNS = [c.name for c in trials.columns if c.name != "id"]
_MEMBER_VALUES = (
    "status",
    "latest_trial_id",
    "step",
    "score",
    "hparams",
    "checkpoint",
    "seq",
    "metrics",
)
_Q_EXPERIMENT = sa.select(experiments).where(experiments.c.name == sa.bindparam("name"))
_Q_TRIAL = sa.select(trials).where(trials.c.id == sa.bindparam("id"))
_Q_PENDING = (
    sa.select(trials)
    .where(trials.c.experiment_id == sa.bindparam("eid"), trials.c.status == "pending")
    .order_by(trials.c.generation, trials.c.priority, trials.c.id)
    .limit(1)
)
_Q_PENDING_MEMBER = _Q_PENDING.where(trials.c.member == sa.bindparam("member"))
_Q_PENDING_GENERATION = _Q_PENDING.where(trials.c.generation == sa.bindparam("generation"))
_DUE = sa.or_(trials.c.not_before.is_(None), trials.c.not_before <= sa.bindparam("now"))
_DUE_QUERIES = {
    query: query.where(_DUE) for query in (_Q_PENDING, _Q_PENDING_MEMBER, _Q_PENDING_GENERATION)
}
_CLAIMING = {
    query: query.with_for_update(skip_locked=True)
    for query in (
        _Q_PENDING,
        _Q_PENDING_MEMBER,
        _Q_PENDING_GENERATION,
        *_DUE_QUERIES.values(),
    )
}
_Q_NOW = sa.select(sa.func.extract("epoch", sa.func.clock_timestamp()))
_U_TRIAL = (
    trials.update()
    .where(trials.c.id == sa.bindparam("b_id"), trials.c.status == sa.bindparam("b_expect"))
    .values({name: sa.bindparam(name) for name in _TRIAL_COLUMNS})
)
_I_TRIAL = trials.insert()
_Q_MEMBERS = (
    sa.select(members)
    .where(members.c.experiment_id == sa.bindparam("eid"))
    .order_by(members.c.member)
)
_U_MEMBER = (
    members.update()
    .where(
        members.c.experiment_id == sa.bindparam("b_eid"),
        members.c.member == sa.bindparam("b_member"),
    )
    .values({name: sa.bindparam(name) for name in _MEMBER_VALUES})
)
_I_MEMBER = members.insert()
_U_SEQ = (
    experiments.update()
    .where(experiments.c.id == sa.bindparam("b_eid"))
    .values(seq=experiments.c.seq + 1)
    .returning(experiments.c.seq)
)
_Q_SEQ = sa.select(experiments.c.seq).where(experiments.c.id == sa.bindparam("eid"))
_Q_CHILDREN = (
    sa.select(sa.func.count())
    .select_from(trials)
    .where(
        trials.c.parent_id == sa.bindparam("parent"),
        trials.c.status.in_(sa.bindparam("statuses", expanding=True)),
    )
)
_Q_COUNT = (
    sa.select(sa.func.count())
    .select_from(trials)
    .where(
        trials.c.experiment_id == sa.bindparam("eid"),
        trials.c.status.in_(sa.bindparam("statuses", expanding=True)),
    )
)
_Q_COUNT_GEN = _Q_COUNT.where(trials.c.generation == sa.bindparam("generation"))
_Q_COUNT_EVENTS = (
    sa.select(sa.func.count())
    .select_from(events)
    .where(events.c.experiment_id == sa.bindparam("eid"), events.c.kind == sa.bindparam("kind"))
)
_I_REPORT = reports.insert()
_I_EVENT = events.insert()


_MEMBERS_SQL = (
    "SELECT member, status, latest_trial_id, step, score, hparams, checkpoint, metrics "
    "FROM pbt_members WHERE experiment_id = {} ORDER BY member"
)
_MEMBERS_SINCE_SQL = (
    "SELECT member, status, latest_trial_id, step, score, hparams, checkpoint, metrics "
    "FROM pbt_members WHERE experiment_id = {} AND seq > {} ORDER BY member"
)
_PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s", "numeric": ":1", "named": ":p"}


class _LazyJSON(Mapping[str, Any]):
    """A JSON object decoded on first use (most members' values are never looked at)."""

    __slots__ = ("_data", "_decode", "_text")

    def __init__(
        self,
        text: str | dict[str, Any],
        decode: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    ) -> None:
        self._text = text if isinstance(text, str) else None
        self._decode = decode
        self._data: dict[str, Any] | None = None
        if isinstance(text, dict):
            self._data = dict(decode(text)) if decode else text

    def _decoded(self) -> dict[str, Any]:
        if self._data is None:
            data = json.loads(self._text or "{}") or {}  # JSON null: nothing stored
            self._data = dict(self._decode(data)) if self._decode else data
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return repr(self._decoded())


def _nan_to_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _none_to_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _trial_from_row(row: Any) -> TrialRecord:
    return trial_from_json(row._mapping)


def _trial_values(trial: TrialRecord) -> dict[str, Any]:
    values = trial_to_json(trial)
    del values["id"]  # assigned by the database
    return values


def _experiment_from_row(row: Any) -> ExperimentRecord:
    return experiment_from_json(row._mapping)


def _event_from_row(row: Any) -> EventRecord:
    return event_from_json(row._mapping)


class _SQLTransaction(Transaction):
    def __init__(self, conn: Connection) -> None:
        self._c = conn
        self._sqlite = conn.dialect.name == "sqlite"

    def now(self) -> float:
        if self._sqlite:
            return time.time()  # one machine: the file's clock is this machine's
        return float(self._c.execute(_Q_NOW).scalar_one())

    def create_experiment(
        self, name: str, config: Mapping[str, Any], now: float
    ) -> ExperimentRecord:
        try:
            with self._c.begin_nested():
                result = self._c.execute(
                    experiments.insert().values(
                        name=name, config=dict(config), status="running", created_at=now
                    )
                )
        except IntegrityError:
            raise ExperimentConflict(f"an experiment named {name!r} already exists") from None
        key = result.inserted_primary_key
        assert key is not None
        return ExperimentRecord(int(key[0]), name, dict(config), "running", now)

    def get_experiment(self, name: str) -> ExperimentRecord | None:
        row = self._c.execute(_Q_EXPERIMENT, {"name": name}).first()
        return None if row is None else _experiment_from_row(row)

    def list_experiments(self) -> list[ExperimentRecord]:
        rows = self._c.execute(sa.select(experiments).order_by(experiments.c.id))
        return [_experiment_from_row(r) for r in rows]

    def lock_experiment(self, experiment_id: int) -> None:
        # SQLite ignores FOR UPDATE (its BEGIN IMMEDIATE already serialises writers);
        # PostgreSQL takes the row lock.
        row = self._c.execute(
            sa.select(experiments.c.id).where(experiments.c.id == experiment_id).with_for_update()
        ).first()
        if row is None:
            raise NotFound(f"no experiment with id {experiment_id}")

    def set_experiment_status(self, experiment_id: int, status: str) -> None:
        self._c.execute(
            experiments.update().where(experiments.c.id == experiment_id).values(status=status)
        )

    def put_members(self, records: Iterable[MemberRecord]) -> None:
        taken: dict[int, int] = {}
        for m in records:
            if m.experiment_id not in taken:
                # The experiment row's lock orders the writers, so sequences commit in order.
                taken[m.experiment_id] = int(
                    self._c.execute(_U_SEQ, {"b_eid": m.experiment_id}).scalar_one()
                )
            values = {
                "status": m.status,
                "latest_trial_id": m.latest_trial_id,
                "step": m.step,
                "score": _nan_to_none(m.score),
                "hparams": dict(m.hparams),
                "checkpoint": m.checkpoint,
                "seq": taken[m.experiment_id],
                "metrics": encode_metrics(m.metrics) if m.metrics else None,
            }
            updated = self._c.execute(
                _U_MEMBER, {"b_eid": m.experiment_id, "b_member": m.member, **values}
            )
            if updated.rowcount == 0:
                self._c.execute(
                    _I_MEMBER, {"experiment_id": m.experiment_id, "member": m.member, **values}
                )

    def members(self, experiment_id: int) -> list[MemberRecord]:
        # The hot read of every decision: rows come straight from the driver and the
        # hyperparameters are decoded only for the members a decision looks at.
        return self._member_rows(_MEMBERS_SQL, experiment_id)

    def members_since(self, experiment_id: int, seq: int) -> tuple[int, list[MemberRecord]]:
        now = self._c.execute(_Q_SEQ, {"eid": experiment_id}).scalar_one_or_none()
        if now is None:
            raise NotFound(f"no experiment with id {experiment_id}")
        if int(now) <= seq:
            return int(now), []
        return int(now), self._member_rows(_MEMBERS_SINCE_SQL, experiment_id, seq)

    def _member_rows(self, sql: str, *params: int) -> list[MemberRecord]:
        paramstyle = self._c.dialect.paramstyle
        if paramstyle == "named":
            names = [f":p{i}" for i in range(len(params))]
            bound: Any = {f"p{i}": value for i, value in enumerate(params)}
        else:
            names = [_PLACEHOLDER[paramstyle]] * len(params)
            bound = tuple(params)
        rows = self._c.exec_driver_sql(sql.format(*names), bound)
        experiment_id = params[0]
        return [
            MemberRecord(
                experiment_id=experiment_id,
                member=member,
                status=status,
                latest_trial_id=latest,
                step=step,
                score=_none_to_nan(score),
                hparams=_LazyJSON(hparams),
                checkpoint=checkpoint,
                metrics=_LazyJSON(metrics, decode_metrics) if metrics else {},
            )
            for member, status, latest, step, score, hparams, checkpoint, metrics in rows
        ]

    def insert_trial(self, trial: TrialRecord) -> TrialRecord:
        result = self._c.execute(_I_TRIAL, _trial_values(trial))
        key = result.inserted_primary_key
        assert key is not None
        return TrialRecord(**{**_as_dict(trial), "id": int(key[0])})

    def get_trial(self, trial_id: int) -> TrialRecord:
        row = self._c.execute(_Q_TRIAL, {"id": trial_id}).first()
        if row is None:
            raise NotFound(f"no trial with id {trial_id}")
        return _trial_from_row(row)

    def trials(
        self,
        experiment_id: int,
        *,
        statuses: Sequence[str] | None = None,
        member: int | None = None,
        generation: int | None = None,
    ) -> list[TrialRecord]:
        query = sa.select(trials).where(trials.c.experiment_id == experiment_id)
        if statuses is not None:
            query = query.where(trials.c.status.in_(list(statuses)))
        if member is not None:
            query = query.where(trials.c.member == member)
        if generation is not None:
            query = query.where(trials.c.generation == generation)
        return [_trial_from_row(r) for r in self._c.execute(query.order_by(trials.c.id))]

    def count_trials(
        self, experiment_id: int, statuses: Sequence[str], *, generation: int | None = None
    ) -> int:
        params: dict[str, Any] = {"eid": experiment_id, "statuses": list(statuses)}
        if generation is None:
            return int(self._c.execute(_Q_COUNT, params).scalar_one())
        params["generation"] = generation
        return int(self._c.execute(_Q_COUNT_GEN, params).scalar_one())

    def next_pending(
        self,
        experiment_id: int,
        *,
        member: int | None = None,
        generation: int | None = None,
        claim: bool = False,
        now: float | None = None,
    ) -> TrialRecord | None:
        query = _Q_PENDING
        params: dict[str, Any] = {"eid": experiment_id}
        if member is not None:
            query, params["member"] = _Q_PENDING_MEMBER, member
        elif generation is not None:
            query, params["generation"] = _Q_PENDING_GENERATION, generation
        if now is not None:
            query, params["now"] = _DUE_QUERIES[query], now
        if claim and not self._sqlite:
            query = _CLAIMING[query]
        row = self._c.execute(query, params).first()
        return None if row is None else _trial_from_row(row)

    def update_trial(self, trial: TrialRecord, *, expect_status: str) -> bool:
        params = {"b_id": trial.id, "b_expect": expect_status, **_trial_values(trial)}
        return bool(self._c.execute(_U_TRIAL, params).rowcount == 1)

    def children_count(self, trial_id: int, statuses: Sequence[str]) -> int:
        params = {"parent": trial_id, "statuses": list(statuses)}
        return int(self._c.execute(_Q_CHILDREN, params).scalar_one())

    def add_reports(self, experiment_id: int, records: Sequence[ReportRecord]) -> None:
        if not records:
            return
        for chunk in iter_chunks(records, 500):
            self._c.execute(
                _I_REPORT,
                [
                    {
                        "experiment_id": experiment_id,
                        "trial_id": r.trial_id,
                        "member": r.member,
                        "step": r.step,
                        "metrics": encode_metrics(r.metrics),
                    }
                    for r in chunk
                ],
            )

    def delete_reports(self, trial_id: int) -> None:
        self._c.execute(reports.delete().where(reports.c.trial_id == trial_id))

    def reports(
        self, experiment_id: int, *, member: int | None = None, trial_id: int | None = None
    ) -> list[ReportRecord]:
        query = sa.select(reports).where(reports.c.experiment_id == experiment_id)
        if member is not None:
            query = query.where(reports.c.member == member)
        if trial_id is not None:
            query = query.where(reports.c.trial_id == trial_id)
        rows = self._c.execute(query.order_by(reports.c.id))
        return [ReportRecord(r.trial_id, r.member, r.step, decode_metrics(r.metrics)) for r in rows]

    def add_events(self, records: Sequence[EventRecord]) -> None:
        if not records:
            return
        rows = [event_to_json(e) for e in records]
        for row in rows:
            del row["id"]  # assigned by the database
        self._c.execute(_I_EVENT, rows)

    def events(self, experiment_id: int, *, kind: str | None = None) -> list[EventRecord]:
        query = sa.select(events).where(events.c.experiment_id == experiment_id)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        return [_event_from_row(r) for r in self._c.execute(query.order_by(events.c.id))]

    def count_events(self, experiment_id: int, kind: str) -> int:
        params = {"eid": experiment_id, "kind": kind}
        return int(self._c.execute(_Q_COUNT_EVENTS, params).scalar_one())


def _as_dict(trial: TrialRecord) -> dict[str, Any]:
    return {name: getattr(trial, name) for name in TrialRecord.__slots__}


class SQLStore(Store):
    """A store in a relational database reached through SQLAlchemy.

    Args:
        url: A SQLAlchemy URL such as ``sqlite:///pbt.db``.
        create: Create the tables when the database is empty.

    Raises:
        StorageError: The database cannot be opened.
        SchemaMismatch: It was written by a pbtkit of another schema version.
    """

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # Writers of this process queue here instead of spinning on SQLite's lock;
        # BEGIN IMMEDIATE's retry loop is left for writers in other processes.
        self._write_lock = threading.RLock()
        try:
            self._engine = sa.create_engine(
                url, connect_args=self._connect_args(), pool_size=40, max_overflow=20
            )
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StorageError(
                f"cannot open storage {display_url(url)!r}: {exc}. Use a URL like "
                "sqlite:///path/to/pbt.db"
            ) from exc
        if self.is_sqlite:
            _configure_sqlite(self._engine)
        try:
            self._prepare(create)
        except DatabaseError as exc:
            self._engine.dispose()
            raise StorageError(
                f"cannot open storage {display_url(url)!r}: {exc.orig}. Check that the directory "
                "exists and is writable, and that the file is a pbtkit database"
            ) from exc

    def _connect_args(self) -> dict[str, Any]:
        return _connect_args(self.url)

    def _prepare(self, create: bool) -> None:
        for attempt in range(50):
            try:
                self._create_or_check(create)
                return
            except (IntegrityError, ProgrammingError):
                # Another process created the schema at the same moment; look again.
                time.sleep(0.01 * (attempt + 1))
        self._create_or_check(create)

    def _create_or_check(self, create: bool) -> None:
        with self._engine.begin() as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table(meta_table.name):
                if inspector.get_table_names():
                    raise SchemaMismatch(
                        f"{self.display_url!r} holds tables that pbtkit did not write; "
                        "point storage at a new file or database"
                    )
                if not create:
                    raise StorageError(f"{self.display_url!r} holds no pbtkit database")
                _migrate(conn, "head")
                return
            version = _version(conn)
            if version < SCHEMA_VERSION:
                raise SchemaMismatch(
                    f"{self.display_url!r} has pbtkit schema version {version}, this pbtkit "
                    f"uses {SCHEMA_VERSION}: run `pbtkit db upgrade --storage URL` (your data "
                    "is kept), then try again"
                )
            if version > SCHEMA_VERSION:
                raise SchemaMismatch(
                    f"{self.display_url!r} has pbtkit schema version {version}, newer than this "
                    f"pbtkit's {SCHEMA_VERSION}: upgrade pbtkit to use it"
                )

    @property
    def display_url(self) -> str:
        """The URL with any password hidden."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def schema_version(self) -> int:
        """The schema version of the database."""
        with self._engine.begin() as conn:
            return _version(conn)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        lock = self._write_lock if self.is_sqlite else contextlib.nullcontext()
        with lock, self._engine.begin() as conn:
            yield _SQLTransaction(conn)

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        connection = self._engine.connect().execution_options(pbtkit_begin="DEFERRED")
        with connection as conn, conn.begin():
            yield _SQLTransaction(conn)

    def close(self) -> None:
        self._engine.dispose()
