"""One transaction on the SQLite store: the store's contract as statements.

The connection is the standard library's; the statements and the conversion of rows to
records live in :mod:`pbtkit.store._sqlite_sql`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pbtkit._exceptions import ExperimentConflict, NotFound
from pbtkit.store._base import (
    EventRecord,
    ExperimentRecord,
    MemberRecord,
    ReportRecord,
    Transaction,
    TrialRecord,
    decode_metrics,
    encode_metrics,
    iter_chunks,
)
from pbtkit.store._rows import LazyJSON, nan_to_none, none_to_nan
from pbtkit.store._sqlite_sql import (
    _D_REPORTS,
    _EVENTS,
    _FIELDS_AFTER_ID,
    _I_EVENT,
    _I_EXPERIMENT,
    _I_MEMBER,
    _I_REPORT,
    _I_TRIAL,
    _Q_CHILDREN,
    _Q_COUNT,
    _Q_COUNT_EVENTS,
    _Q_COUNT_GEN,
    _Q_EXPERIMENT,
    _Q_EXPERIMENT_ID,
    _Q_EXPERIMENTS,
    _Q_MEMBERS,
    _Q_MEMBERS_SINCE,
    _Q_PENDING,
    _Q_SEQ,
    _Q_TRIAL,
    _REPORTS,
    _TRIALS,
    _U_EXPERIMENT_STATUS,
    _U_MEMBER,
    _U_SEQ,
    _U_TRIAL,
    _dumps,
    _event,
    _experiment,
    _in,
    _loads,
    _plain,
    _trial,
    _trial_values,
    _trials_sql,
)

__all__ = ["SQLiteTransaction"]


class SQLiteTransaction(Transaction):
    """A transaction of :class:`~pbtkit.store.SQLiteStore` on one connection (its caller
    began it and commits it)."""

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
