"""The SQLite store's statements, and its rows turned into records and back.

Every statement is a fixed string, so the driver prepares each once per connection and
keeps it in its statement cache; the few whose shape depends on how many values an
``IN (...)`` holds are built once per shape and kept here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pbtkit.store._base import (
    EventRecord,
    ExperimentRecord,
    TrialRecord,
    decode_metrics,
    encode_metrics,
)
from pbtkit.store._rows import nan_to_none, none_to_nan

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


_FIELDS_AFTER_ID = TrialRecord.__slots__[1:]
