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
members that are ahead (``Controller._comparable``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, overload

import numpy as np

from pbtkit.store import MemberRecord, Transaction

__all__ = ["PopulationCache"]

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
