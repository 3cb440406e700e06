"""What a worker, a client or ``pbtkit.run`` may ask of a controller, and the records
that cross that seam: a :class:`Lease` (a trial handed to a worker), a :class:`Summary`
(where an experiment stands), a :class:`Snapshot` (members, trials and events), and for
workers that train many trials at once a :class:`TrialResult` (one finished trial) and a
:class:`BatchFinish` (what finishing several did)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from pbtkit.store._base import (
    ExperimentRecord,
    Measurement,
    MemberRecord,
    ReportRecord,
    TrialRecord,
)

if TYPE_CHECKING:
    from pbtkit.spec import ExperimentSpec
    from pbtkit.store._base import EventRecord

__all__ = [
    "ACTIVE_STATUSES",
    "FINISHED",
    "WAIT",
    "BatchFinish",
    "ControllerAPI",
    "Lease",
    "Snapshot",
    "Summary",
    "TrialResult",
]

WAIT: Literal["wait"] = "wait"
FINISHED: Literal["finished"] = "finished"
#: The statuses of a trial that is still to be trained.
ACTIVE_STATUSES = ("pending", "running")


@dataclass(frozen=True, slots=True)
class Lease:
    """A trial handed to one worker, with what it needs to run it."""

    trial: TrialRecord
    experiment: str
    metric: str
    checkpoint_root: str
    parent_checkpoint: str | None
    donor: int | None
    lease_expires: float
    #: Every metric the objective needs (``metric`` alone unless it combines several).
    metrics: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Summary:
    """Where an experiment stands, for progress displays and ``pbtkit status``."""

    name: str
    status: str
    population: int
    steps_done: int
    steps_total: int
    best_score: float
    best_member: int | None
    exploits: int
    members_done: int
    members_failed: int
    trials_running: int
    trials_done: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything about an experiment but its reports, read in one transaction."""

    experiment: ExperimentRecord
    members: list[MemberRecord]
    trials: list[TrialRecord]
    events: list[EventRecord]


@dataclass(frozen=True, slots=True)
class TrialResult:
    """One finished trial of a batch (:meth:`ControllerAPI.finish_batch`): what it
    reported and where its checkpoint was committed."""

    trial_id: int
    reports: tuple[Measurement, ...] = ()
    checkpoint: str | None = None


@dataclass(frozen=True, slots=True)
class BatchFinish:
    """What finishing a batch of trials did.

    Attributes:
        released: Checkpoint names nothing needs any more; the caller deletes them.
        lost: The trials that were not this worker's any more (lease expired, given to
            another), each with the reason; nothing of them was written.
    """

    released: tuple[str, ...] = ()
    lost: Mapping[int, str] = field(default_factory=dict)


class ControllerAPI(Protocol):
    """What a worker, a client or ``pbtkit.run`` may ask of a controller.

    :class:`Controller` implements it in process; :class:`pbtkit.service.RemoteController`
    implements it over HTTP. One contract test suite runs against both.
    """

    @property
    def lease_seconds(self) -> float:
        """How long a lease lasts without a heartbeat."""
        ...

    def create(self, name: str, spec: ExperimentSpec, *, resume: bool = True) -> ExperimentRecord:
        """Create an experiment or find the one to resume."""
        ...

    def experiment(self, name: str) -> ExperimentRecord:
        """The stored experiment."""
        ...

    def experiments(self) -> list[ExperimentRecord]:
        """Every experiment."""
        ...

    def spec(self, name: str) -> ExperimentSpec:
        """The experiment's settings."""
        ...

    def lease(
        self,
        name: str,
        worker_id: str,
        *,
        member: int | None = None,
        generation: int | None = None,
        again: bool = False,
    ) -> Lease | Literal["wait", "finished"]:
        """Hand a pending trial to a worker (``again``: the request is sent a second time
        because its answer was lost; a trial the worker holds already is handed back)."""
        ...

    def lease_any(self, worker_id: str, *, again: bool = False) -> Lease | Literal["wait"]:
        """Hand a pending trial of any running experiment to a worker."""
        ...

    def lease_batch(
        self, name: str, worker_id: str, *, max_trials: int, again: bool = False
    ) -> list[Lease] | Literal["wait", "finished"]:
        """Hand up to ``max_trials`` pending trials to one worker at once (a worker that
        trains them together); ``again`` as for :meth:`lease`."""
        ...

    def finish_batch(
        self, name: str, worker_id: str, results: Sequence[TrialResult]
    ) -> BatchFinish:
        """Record several finished trials of one experiment, then decide what comes next
        for all of them together."""
        ...

    def heartbeat(
        self, trial_id: int, worker_id: str, reports: Sequence[Measurement] = ()
    ) -> float:
        """Extend a lease and store reports."""
        ...

    def finish(
        self,
        trial_id: int,
        worker_id: str,
        reports: Sequence[Measurement] = (),
        checkpoint: str | None = None,
    ) -> list[str]:
        """Record a finished trial and decide what comes next."""
        ...

    def fail(
        self,
        trial_id: int,
        worker_id: str | None,
        error: str,
        *,
        penalize: bool = True,
        bad_parent: bool = False,
    ) -> list[str]:
        """Give a trial back after an error (``bad_parent``: its parent checkpoint failed
        verification)."""
        ...

    def release_worker(
        self, name: str, worker_id: str, reason: str, *, penalize: bool = True
    ) -> list[int]:
        """Give back every trial a dead worker holds (``penalize=False``: its machine was
        lost, which does not count as an attempt of the trial)."""
        ...

    def reclaim_orphans(self, name: str) -> list[int]:
        """Requeue trials held by dead processes of this host."""
        ...

    def summary(self, name: str) -> Summary:
        """Where the experiment stands."""
        ...

    def snapshot(self, name: str) -> Snapshot:
        """Members, trials and events of the experiment."""
        ...

    def reports(self, name: str, *, member: int | None = None) -> list[ReportRecord]:
        """Reports of the experiment, optionally of one member."""
        ...

    def trial(self, trial_id: int) -> TrialRecord:
        """One trial."""
        ...
