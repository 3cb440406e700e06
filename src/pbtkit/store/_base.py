"""The storage seam: records and the one abstract :class:`Store` every backend implements.

A store is deliberately dumb: it keeps experiments, members, trials, reports and events,
and offers transactions. All PBT logic lives in :mod:`pbtkit.controller`, which runs every
state change inside one :meth:`Store.transaction`. Concurrency is handled in the store by
serialising writers (SQLite takes the write lock at ``BEGIN IMMEDIATE``; PostgreSQL locks
the experiment row in :meth:`Transaction.lock_experiment`) and by compare-and-set updates
(:meth:`Transaction.update_trial` only writes when the trial is still in the status the
caller read), so two workers never run the same trial.

Contract (tested for every backend by :mod:`pbtkit.store.testing`):

- ids are positive integers assigned by the store, increasing in insertion order;
- :meth:`Transaction.next_pending` returns the pending trial with the lowest
  ``(generation, priority, id)``, so members take turns;
- a transaction that raises leaves no trace;
- records come back equal to what was written (floats, NaN in metrics included).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "EventRecord",
    "ExperimentRecord",
    "MemberRecord",
    "MemberStatus",
    "Measurement",
    "ReportRecord",
    "Store",
    "Transaction",
    "TrialRecord",
    "TrialStatus",
    "decode_metrics",
    "display_url",
    "encode_metrics",
]

TrialStatus = Literal["pending", "running", "done", "failed"]
MemberStatus = Literal["active", "done", "failed"]
TRIAL_STATUSES: tuple[str, ...] = ("pending", "running", "done", "failed")


@dataclass(frozen=True, slots=True)
class ExperimentRecord:
    """One experiment: its unique name and its settings (a JSON object).

    ``status`` is ``running``, ``finished`` (every member done or given up on, at least one
    done), or ``failed`` (every member given up on, or stopped early because its first
    trials all failed the same way); a failed experiment resumes when run again.
    """

    id: int
    name: str
    config: Mapping[str, Any]
    status: Literal["running", "finished", "failed"]
    created_at: float


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """One slot of the population and where it stands (its latest finished trial)."""

    experiment_id: int
    member: int
    status: MemberStatus = "active"
    latest_trial_id: int | None = None
    step: int = 0
    score: float = math.nan
    hparams: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrialRecord:
    """One training segment of one member; see DESIGN.md, *The data*.

    ``id`` is 0 for a record not yet inserted. ``metrics`` holds the last reported value
    of each metric; ``score`` the objective's value (NaN when not finite or not reported).
    ``priority`` orders the pending trials of one generation (lowest first), so that no
    member is always the first of a round to finish. ``inherit`` is set on an exploit's
    trial whose weights are not taken as they are: ``{"mode": "shrink_perturb", "shrink":
    s, "noise": n}``. ``not_before`` holds a pending trial back until that time (a retry
    backing off); ``checkpoint_bad`` marks a checkpoint that failed verification, which is
    never a parent again.
    """

    id: int
    experiment_id: int
    member: int
    generation: int
    hparams: Mapping[str, Any]
    parent_id: int | None
    start_step: int
    end_step: int
    status: TrialStatus = "pending"
    attempt: int = 0
    lease_owner: str | None = None
    lease_expires: float | None = None
    checkpoint: str | None = None
    checkpoint_released: bool = False
    metrics: Mapping[str, float] = field(default_factory=dict)
    score: float = math.nan
    error: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    priority: float = 0.0
    inherit: Mapping[str, Any] | None = None
    not_before: float | None = None
    checkpoint_bad: bool = False

    def __post_init__(self) -> None:
        if self.status not in TRIAL_STATUSES:
            raise ValueError(f"unknown trial status {self.status!r}")
        if self.end_step < self.start_step:
            raise ValueError(f"trial ends ({self.end_step}) before it starts ({self.start_step})")


@dataclass(frozen=True, slots=True)
class Measurement:
    """Metric values a trial reports at one step, as a worker sends them: the trial (and
    its member) is the one the heartbeat or finish is for, so they are not repeated here;
    the controller stores each as a :class:`ReportRecord`."""

    step: int
    metrics: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class ReportRecord:
    """Metrics a trial reported at one step, as stored."""

    trial_id: int
    member: int
    step: int
    metrics: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One decision or incident, so that a run can be explained and replayed.

    ``kind`` is one of ``continue``, ``exploit``, ``stop``, ``retry``, ``failed``.
    ``trial_id`` is the trial the event concerns (the new trial for continue/exploit).
    """

    experiment_id: int
    member: int
    kind: str
    trial_id: int | None = None
    donor_member: int | None = None
    donor_trial: int | None = None
    old_hparams: Mapping[str, Any] | None = None
    new_hparams: Mapping[str, Any] | None = None
    detail: str | None = None
    at: float = 0.0
    id: int = 0


class Transaction(abc.ABC):
    """The operations a controller may perform inside one atomic unit of work."""

    # experiments -------------------------------------------------------------------
    @abc.abstractmethod
    def create_experiment(
        self, name: str, config: Mapping[str, Any], now: float
    ) -> ExperimentRecord:
        """Insert a new experiment. Raises ExperimentConflict if the name is taken."""

    @abc.abstractmethod
    def get_experiment(self, name: str) -> ExperimentRecord | None:
        """The experiment of that name, or None."""

    @abc.abstractmethod
    def list_experiments(self) -> list[ExperimentRecord]:
        """Every experiment, oldest first."""

    @abc.abstractmethod
    def lock_experiment(self, experiment_id: int) -> None:
        """Serialise this transaction with every other one that locks the same experiment."""

    @abc.abstractmethod
    def set_experiment_status(self, experiment_id: int, status: str) -> None:
        """Mark an experiment running or finished."""

    # members -----------------------------------------------------------------------
    @abc.abstractmethod
    def put_members(self, members: Iterable[MemberRecord]) -> None:
        """Insert or replace members (keyed by experiment and member index)."""

    @abc.abstractmethod
    def members(self, experiment_id: int) -> list[MemberRecord]:
        """All members of an experiment ordered by index."""

    @abc.abstractmethod
    def members_since(self, experiment_id: int, seq: int) -> tuple[int, list[MemberRecord]]:
        """The experiment's change sequence now, and its member rows written after ``seq``.

        Every :meth:`put_members` call takes the next value of its experiment's sequence,
        so a reader that remembers the sequence reads only what changed since; ``seq=-1``
        reads every member.
        """

    # trials ------------------------------------------------------------------------
    @abc.abstractmethod
    def insert_trial(self, trial: TrialRecord) -> TrialRecord:
        """Insert a trial (its ``id`` is ignored) and return it with the assigned id."""

    @abc.abstractmethod
    def get_trial(self, trial_id: int) -> TrialRecord:
        """The trial with that id. Raises NotFound."""

    @abc.abstractmethod
    def trials(
        self,
        experiment_id: int,
        *,
        statuses: Sequence[str] | None = None,
        member: int | None = None,
        generation: int | None = None,
    ) -> list[TrialRecord]:
        """Trials of an experiment matching every filter given, ordered by id."""

    @abc.abstractmethod
    def count_trials(
        self, experiment_id: int, statuses: Sequence[str], *, generation: int | None = None
    ) -> int:
        """How many trials of an experiment are in these statuses (optionally one generation)."""

    @abc.abstractmethod
    def next_pending(
        self,
        experiment_id: int,
        *,
        member: int | None = None,
        generation: int | None = None,
        claim: bool = False,
        now: float | None = None,
    ) -> TrialRecord | None:
        """The pending trial with the lowest ``(generation, priority, id)``, or None.

        ``member`` and ``generation`` restrict the choice to one member or generation;
        ``now`` to trials whose ``not_before`` has passed (None: any pending trial).
        ``claim`` locks the row for this transaction, skipping rows other transactions
        hold (``FOR UPDATE SKIP LOCKED``), where the backend needs that to hand different
        trials to concurrent workers.
        """

    @abc.abstractmethod
    def now(self) -> float:
        """The store's clock, in seconds since the epoch (the database server's, for a
        server database, so that every worker agrees on when a lease expires)."""

    @abc.abstractmethod
    def update_trial(self, trial: TrialRecord, *, expect_status: str) -> bool:
        """Write ``trial`` over the stored one if that one's status is still ``expect_status``.

        Returns False (and writes nothing) when another writer changed the status first.
        """

    @abc.abstractmethod
    def children_count(self, trial_id: int, statuses: Sequence[str]) -> int:
        """How many trials in these statuses name ``trial_id`` as their parent."""

    # reports and events ------------------------------------------------------------
    @abc.abstractmethod
    def add_reports(self, experiment_id: int, reports: Sequence[ReportRecord]) -> None:
        """Append reports."""

    @abc.abstractmethod
    def delete_reports(self, trial_id: int) -> None:
        """Drop a trial's reports (those of an attempt that failed and will run again)."""

    @abc.abstractmethod
    def reports(
        self, experiment_id: int, *, member: int | None = None, trial_id: int | None = None
    ) -> list[ReportRecord]:
        """Reports in insertion order, optionally of one member or one trial."""

    @abc.abstractmethod
    def add_events(self, events: Sequence[EventRecord]) -> None:
        """Append events."""

    @abc.abstractmethod
    def events(self, experiment_id: int, *, kind: str | None = None) -> list[EventRecord]:
        """Events in insertion order, optionally of one kind."""

    @abc.abstractmethod
    def count_events(self, experiment_id: int, kind: str) -> int:
        """How many events of this kind an experiment has."""


class Store(abc.ABC):
    """A place where experiments live; open one with :func:`pbtkit.store.open_store`."""

    url: str
    #: Whether several processes can share this store (False for the in-memory one).
    shared_between_processes: bool = True

    @property
    def display_url(self) -> str:
        """The URL with any password hidden, fit for messages and logs."""
        return self.url

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[Transaction]:
        """A read-write transaction; commits on success, rolls back if the block raises."""

    def read(self) -> AbstractContextManager[Transaction]:
        """A transaction for reading only; backends may make it cheaper than a write."""
        return self.transaction()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def display_url(url: str) -> str:
    """A storage URL fit to print: its password, if any, replaced by ``***``.

    Every message, title and log line that shows a storage URL goes through here.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a storage URL that cannot be shown>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def encode_metrics(metrics: Mapping[str, float]) -> dict[str, float | str]:
    """Metrics as strict JSON: NaN and infinities become the strings 'nan', 'inf', '-inf'."""
    out: dict[str, float | str] = {}
    for key, value in metrics.items():
        if math.isfinite(value):
            out[key] = value
        else:
            out[key] = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return out


def decode_metrics(data: Mapping[str, Any]) -> dict[str, float]:
    """Inverse of :func:`encode_metrics`."""
    return {k: _NON_FINITE[v] if isinstance(v, str) else float(v) for k, v in data.items()}


def iter_chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Slices of ``items`` of at most ``size`` elements."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
