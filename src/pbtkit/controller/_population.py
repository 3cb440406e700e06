"""The population as this process last read it, kept current by the store's change sequence.

Every decision looks at the whole population. Reading every member row for each decision
makes a decision cost grow with the population (tens of milliseconds at 10,000 members);
instead a controller keeps each experiment's members here, in columns, and before each
decision reads only the rows written since (``Transaction.members_since``), inside the
decision's own transaction and after taking the experiment's lock, so what it sees is
exactly what the database holds. The cache is an optimisation only: dropping it at any time
(a rolled-back transaction does) changes no decision.

It also remembers, for recent steps, the score each member had when it finished the trial
ending at that step, which is what the fairness rule of asynchronous decisions needs for
members that are ahead (:func:`comparable`).

:func:`comparable` is the population as a deciding member sees it: every other member
scored at the step both have reached, in the columns the strategies read.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np

from pbtkit._exceptions import PBTError
from pbtkit.controller._protocol import ACTIVE_STATUSES
from pbtkit.core.decisions import MemberView
from pbtkit.core.population import Population
from pbtkit.spec import ExperimentSpec
from pbtkit.store._base import MemberRecord, Transaction, TrialRecord

__all__ = ["Column", "PopulationCache", "comparable", "put_member"]

#: Steps whose per-member scores are remembered (the most recent ones).
_COLUMNS = 64


class PopulationCache:
    """One experiment's member rows, as a dict and as numpy columns indexed by member slot."""

    def __init__(self, experiment_id: int, size: int) -> None:
        self.experiment_id = experiment_id
        self.seq = -1
        self.records: dict[int, MemberRecord] = {}
        self.step = np.zeros(size, dtype=np.int64)
        self.score = np.full(size, np.nan)
        self.trial = np.full(size, -1, dtype=np.int64)
        self.has_checkpoint = np.zeros(size, dtype=bool)
        self.active = np.zeros(size, dtype=bool)
        self.failed = np.zeros(size, dtype=bool)
        self._history: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def refresh(self, tx: Transaction) -> None:
        """Read the rows written since the last refresh (everything the first time)."""
        seq, changed = tx.members_since(self.experiment_id, self.seq)
        if seq < self.seq:  # the database went back in time (restored): start over
            seq, changed = tx.members_since(self.experiment_id, -1)
        for record in changed:
            self.put(record)
        self.seq = seq

    def put(self, record: MemberRecord) -> None:
        """Take a row as written (by this transaction or read from the store)."""
        m = record.member
        if m >= len(self.step):
            self._grow(m + 1)
        self.records[m] = record
        self.step[m] = record.step
        self.score[m] = record.score if math.isfinite(record.score) else math.nan
        self.trial[m] = -1 if record.latest_trial_id is None else record.latest_trial_id
        self.has_checkpoint[m] = record.checkpoint is not None
        self.active[m] = record.status == "active"
        self.failed[m] = record.status == "failed"
        if record.latest_trial_id is not None:
            scores, known = self._column(record.step)
            scores[m] = self.score[m]
            known[m] = True

    def scores_at(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Each member's score from its trial that ended at ``step``, and where it is known."""
        return self._column(step)

    def _column(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        column = self._history.get(step)
        if column is None:
            if len(self._history) >= _COLUMNS:
                del self._history[min(self._history)]
            column = (np.full(len(self.step), np.nan), np.zeros(len(self.step), dtype=bool))
            self._history[step] = column
        return column

    def _grow(self, size: int) -> None:
        def grown(array: np.ndarray, fill: Any) -> np.ndarray:
            out = np.full(size, fill, dtype=array.dtype)
            out[: len(array)] = array
            return out

        self.step = grown(self.step, 0)
        self.score = grown(self.score, np.nan)
        self.trial = grown(self.trial, -1)
        self.has_checkpoint = grown(self.has_checkpoint, False)
        self.active = grown(self.active, False)
        self.failed = grown(self.failed, False)
        self._history = {
            step: (grown(scores, np.nan), grown(known, False))
            for step, (scores, known) in self._history.items()
        }


class Column(Sequence[Any]):
    """A read-only column of one field of the cached records, for the given member slots.

    Built in O(1); each element is looked up on use, so a decision that reads the
    hyperparameters of two members never builds a list of ten thousand.
    """

    __slots__ = ("_field", "_records", "_rows")

    def __init__(self, records: Mapping[int, MemberRecord], rows: np.ndarray, field: str) -> None:
        self._records = records
        self._rows = rows
        self._field = field

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [getattr(self._records[int(r)], self._field) for r in self._rows[index]]
        return getattr(self._records[int(self._rows[index])], self._field)

    def __iter__(self) -> Iterator[Any]:
        return (getattr(self._records[int(r)], self._field) for r in self._rows)


def comparable(
    tx: Transaction,
    spec: ExperimentSpec,
    latest: TrialRecord,
    cache: PopulationCache,
    rows: np.ndarray,
    shared: dict[int, Population],
) -> Population:
    """The population as the deciding member can fairly compare itself with it.

    Members finish their trials at different times (more members than workers, or
    glass-box clients of different speeds), and a score grows with training. So each
    other member is compared at the latest step both have reached: one that is ahead
    is scored by its result at this member's step; one that is behind, at step s, by
    its score shifted by how much this member improved since s, so that ranking it
    against this member is exactly comparing the two at step s. As donors, members
    still hand over their latest checkpoints.

    The work is a few numpy passes over the cached columns; the store is read only
    for scores at this step that this process has not seen yet (once per step) and
    for this member's own past scores.
    """
    step = latest.end_step
    steps = cache.step[rows]
    level = bool((steps == step).all())
    if level and step in shared:
        return shared[step]
    scores = cache.score[rows].copy()
    if not level:
        ahead = rows[steps > step]
        if len(ahead):
            at_step, known = cache.scores_at(step)
            if not known[ahead].all():
                for t in tx.trials(
                    latest.experiment_id, statuses=("done",), generation=latest.generation
                ):
                    if t.end_step == step:
                        at_step[t.member] = t.score if math.isfinite(t.score) else math.nan
                        known[t.member] = True
            fair = np.where(known[ahead], at_step[ahead], cache.score[ahead])
            scores[steps > step] = fair
        behind = steps < step
        if behind.any():
            mine = {
                t.end_step: t.score
                for t in tx.trials(latest.experiment_id, statuses=("done",), member=latest.member)
            }
            # few distinct steps: look each up once
            past, where = np.unique(steps[behind], return_inverse=True)
            then = np.array([mine.get(int(s), math.nan) for s in past])[where]
            gained = latest.score - then
            scores[behind] += np.where(np.isfinite(gained), gained, 0.0)
        scores[rows == latest.member] = cache.score[latest.member]
    population = Population(
        members=rows,
        trial_ids=cache.trial[rows],
        steps=steps,
        scores=scores,
        # A member that finished its budget donates no more: its copy would have no
        # step left to train (steps follow the weights).
        has_checkpoint=cache.has_checkpoint[rows] & (steps < spec.policy.total_steps),
        hparams=Column(cache.records, rows, "hparams"),
        metrics=Column(cache.records, rows, "metrics"),
        history=lambda member, k: history(tx, spec, latest.experiment_id, member, k),
        recent=lambda generations: recent(tx, latest, generations, spec.policy.total_steps),
        pending=lambda: [
            t.hparams for t in tx.trials(latest.experiment_id, statuses=ACTIVE_STATUSES)
        ],
    )
    if level:
        shared[step] = population
    return population


def history(
    tx: Transaction, spec: ExperimentSpec, experiment_id: int, member: int, k: int
) -> list[float]:
    """A member's last ``k`` values of the objective, oldest first: from its reports that
    carry every metric the objective needs."""
    values: list[float] = []
    for report in reversed(tx.reports(experiment_id, member=member)):
        if len(values) >= k:
            break
        try:
            values.append(spec.policy.objective.score(report.metrics))
        except PBTError:  # a report of other metrics only
            continue
    return values[::-1]


def recent(
    tx: Transaction, latest: TrialRecord, generations: int, total_steps: int
) -> list[MemberView]:
    """The finished trials of the last ``generations`` generations up to ``latest``'s, with
    each one's gain (its score minus its parent's); one at the budget donates nothing."""
    first = max(latest.generation - generations + 1, 0)
    loaded: dict[int, TrialRecord] = {}
    for generation in range(max(first - 1, 0), latest.generation + 1):
        for t in tx.trials(latest.experiment_id, statuses=("done",), generation=generation):
            loaded[t.id] = t
    views = []
    for t in loaded.values():
        if t.generation < first:
            continue
        parent = loaded.get(t.parent_id) if t.parent_id is not None else None
        if parent is None and t.parent_id is not None:
            parent = tx.get_trial(t.parent_id)
        gain = t.score - parent.score if parent is not None else math.nan
        views.append(
            MemberView(
                member=t.member,
                trial_id=t.id,
                step=t.end_step,
                score=t.score,
                hparams=t.hparams,
                has_checkpoint=(
                    t.checkpoint is not None
                    and not t.checkpoint_released
                    and not t.checkpoint_bad
                    and t.end_step < total_steps
                ),
                metrics=t.metrics,
                gain=gain,
                generation=t.generation,
            )
        )
    return views


def put_member(tx: Transaction, cache: PopulationCache, record: MemberRecord) -> None:
    """Write a member row and keep the cache in step with it."""
    tx.put_members([record])
    cache.put(record)
