"""An in-memory store for tests and for runs that need no persistence (``memory://``).

Records are immutable, so a transaction snapshots the top-level containers and restores
them if the block raises. One lock serialises transactions, which is what the SQL
backends promise too.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pbtkit._exceptions import ExperimentConflict, NotFound
from pbtkit.store._base import (
    EventRecord,
    ExperimentRecord,
    MemberRecord,
    ReportRecord,
    Store,
    Transaction,
    TrialRecord,
)

__all__ = ["MemoryStore"]


@dataclasses.dataclass
class _Data:
    experiments: dict[int, ExperimentRecord] = dataclasses.field(default_factory=dict)
    members: dict[tuple[int, int], MemberRecord] = dataclasses.field(default_factory=dict)
    trials: dict[int, TrialRecord] = dataclasses.field(default_factory=dict)
    reports: list[tuple[int, ReportRecord]] = dataclasses.field(default_factory=list)
    events: list[EventRecord] = dataclasses.field(default_factory=list)
    next_id: int = 1
    seq: dict[int, int] = dataclasses.field(default_factory=dict)
    member_seq: dict[tuple[int, int], int] = dataclasses.field(default_factory=dict)

    def snapshot(self) -> _Data:
        return _Data(
            dict(self.experiments),
            dict(self.members),
            dict(self.trials),
            list(self.reports),
            list(self.events),
            self.next_id,
            dict(self.seq),
            dict(self.member_seq),
        )


class _MemoryTransaction(Transaction):
    def __init__(self, data: _Data) -> None:
        self._d = data

    def _new_id(self) -> int:
        self._d.next_id += 1
        return self._d.next_id - 1

    def create_experiment(
        self, name: str, config: Mapping[str, Any], now: float
    ) -> ExperimentRecord:
        if self.get_experiment(name) is not None:
            raise ExperimentConflict(f"an experiment named {name!r} already exists")
        record = ExperimentRecord(self._new_id(), name, dict(config), "running", now)
        self._d.experiments[record.id] = record
        return record

    def get_experiment(self, name: str) -> ExperimentRecord | None:
        return next((e for e in self._d.experiments.values() if e.name == name), None)

    def list_experiments(self) -> list[ExperimentRecord]:
        return sorted(self._d.experiments.values(), key=lambda e: e.id)

    def lock_experiment(self, experiment_id: int) -> None:
        if experiment_id not in self._d.experiments:
            raise NotFound(f"no experiment with id {experiment_id}")

    def set_experiment_status(self, experiment_id: int, status: str) -> None:
        old = self._d.experiments[experiment_id]
        self._d.experiments[experiment_id] = dataclasses.replace(old, status=status)  # type: ignore[arg-type]

    def put_members(self, members: Iterable[MemberRecord]) -> None:
        taken: dict[int, int] = {}
        for m in members:
            if m.experiment_id not in taken:
                taken[m.experiment_id] = self._d.seq.get(m.experiment_id, 0) + 1
                self._d.seq[m.experiment_id] = taken[m.experiment_id]
            self._d.members[(m.experiment_id, m.member)] = m
            self._d.member_seq[(m.experiment_id, m.member)] = taken[m.experiment_id]

    def members_since(self, experiment_id: int, seq: int) -> tuple[int, list[MemberRecord]]:
        changed = [
            m
            for key, m in self._d.members.items()
            if key[0] == experiment_id and self._d.member_seq.get(key, 0) > seq
        ]
        return self._d.seq.get(experiment_id, 0), sorted(changed, key=lambda m: m.member)

    def members(self, experiment_id: int) -> list[MemberRecord]:
        found = [m for (e, _), m in self._d.members.items() if e == experiment_id]
        return sorted(found, key=lambda m: m.member)

    def insert_trial(self, trial: TrialRecord) -> TrialRecord:
        record = dataclasses.replace(trial, id=self._new_id())
        self._d.trials[record.id] = record
        return record

    def get_trial(self, trial_id: int) -> TrialRecord:
        try:
            return self._d.trials[trial_id]
        except KeyError:
            raise NotFound(f"no trial with id {trial_id}") from None

    def trials(
        self,
        experiment_id: int,
        *,
        statuses: Sequence[str] | None = None,
        member: int | None = None,
        generation: int | None = None,
    ) -> list[TrialRecord]:
        return [
            t
            for t in self._d.trials.values()
            if t.experiment_id == experiment_id
            and (statuses is None or t.status in statuses)
            and (member is None or t.member == member)
            and (generation is None or t.generation == generation)
        ]

    def count_trials(
        self, experiment_id: int, statuses: Sequence[str], *, generation: int | None = None
    ) -> int:
        return len(self.trials(experiment_id, statuses=statuses, generation=generation))

    def next_pending(
        self,
        experiment_id: int,
        *,
        member: int | None = None,
        generation: int | None = None,
        claim: bool = False,
        now: float | None = None,
    ) -> TrialRecord | None:
        del claim  # one lock serialises every transaction already
        pending = [
            t
            for t in self.trials(
                experiment_id, statuses=("pending",), member=member, generation=generation
            )
            if now is None or t.not_before is None or t.not_before <= now
        ]
        return min(pending, key=lambda t: (t.generation, t.priority, t.id), default=None)

    def now(self) -> float:
        return time.time()

    def update_trial(self, trial: TrialRecord, *, expect_status: str) -> bool:
        current = self.get_trial(trial.id)
        if current.status != expect_status:
            return False
        self._d.trials[trial.id] = trial
        return True

    def children_count(self, trial_id: int, statuses: Sequence[str]) -> int:
        return sum(
            1 for t in self._d.trials.values() if t.parent_id == trial_id and t.status in statuses
        )

    def add_reports(self, experiment_id: int, reports: Sequence[ReportRecord]) -> None:
        self._d.reports.extend((experiment_id, r) for r in reports)

    def delete_reports(self, trial_id: int) -> None:
        self._d.reports = [(e, r) for e, r in self._d.reports if r.trial_id != trial_id]

    def reports(
        self, experiment_id: int, *, member: int | None = None, trial_id: int | None = None
    ) -> list[ReportRecord]:
        return [
            r
            for e, r in self._d.reports
            if e == experiment_id
            and (member is None or r.member == member)
            and (trial_id is None or r.trial_id == trial_id)
        ]

    def add_events(self, events: Sequence[EventRecord]) -> None:
        for event in events:
            self._d.events.append(dataclasses.replace(event, id=self._new_id()))

    def events(self, experiment_id: int, *, kind: str | None = None) -> list[EventRecord]:
        return [
            e
            for e in self._d.events
            if e.experiment_id == experiment_id and (kind is None or e.kind == kind)
        ]

    def count_events(self, experiment_id: int, kind: str) -> int:
        return len(self.events(experiment_id, kind=kind))


class MemoryStore(Store):
    """Everything in this process's memory; gone when it exits. For tests and quick runs."""

    shared_between_processes = False

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._data = _Data()
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._lock:
            saved = self._data.snapshot()
            try:
                yield _MemoryTransaction(self._data)
            except BaseException:
                self._data = saved
                raise
