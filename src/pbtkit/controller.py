"""The controller: the only place where the store and the policy meet.

It keeps no state of its own. Every call opens one store transaction, reads what it
needs, asks the policy, writes the outcome and returns, so any number of processes (the
workers themselves, a server, several servers) can act as the controller of one
experiment at once, and any of them can die without losing a decision. (What it keeps in
memory is a cache of the population, brought up to date from the store inside each
decision's transaction: see :mod:`pbtkit._popcache`.)

A trial's life::

    pending --lease--> running --finish--> done   (the policy then writes the next trial)
                          |  \\--fail / lease expired / worker died--> pending (attempt < max)
                          |                                        \\-> failed (member failed)
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from pbtkit._exceptions import ExperimentConflict, LeaseLost, NotFound, PBTError
from pbtkit._popcache import Column, PopulationCache
from pbtkit._target import ImportPolicy, import_policy
from pbtkit.core.decisions import Continue, Exploit, MemberView, Stop
from pbtkit.core.exploit import Initiator
from pbtkit.core.policy import MAX_STEPS
from pbtkit.core.population import Population
from pbtkit.core.ranking import Standing, best
from pbtkit.spec import ExperimentSpec, check_experiment_name
from pbtkit.store._base import (
    EventRecord,
    ExperimentRecord,
    MemberRecord,
    ReportRecord,
    Store,
    Transaction,
    TrialRecord,
)

__all__ = [
    "FINISHED",
    "WAIT",
    "Controller",
    "ControllerAPI",
    "Lease",
    "Snapshot",
    "Summary",
    "worker_identity",
]

WAIT: Literal["wait"] = "wait"
FINISHED: Literal["finished"] = "finished"
ACTIVE_STATUSES = ("pending", "running")

#: How many members' first trials must fail with the same error to stop a run early.
_SAME_ERROR_MEMBERS = 2
#: How far back a lineage is searched for a good checkpoint to restart from.
_LONGEST_WALK = 1000
#: The longest a retry waits before it may be leased again.
_LONGEST_BACKOFF = 60.0

# Seeds of numpy SeedSequences: the initial sample and each decision draw from streams
# keyed by (seed, purpose, id), so a run is repeatable without storing any RNG state.
_SAMPLE, _DECIDE = 0, 1


def worker_identity(label: str = "", pid: int | None = None) -> str:
    """A lease-owner name that says where the worker runs: ``host:pid[:label]``."""
    base = f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"
    return f"{base}:{label}" if label else base


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

    def heartbeat(
        self, trial_id: int, worker_id: str, reports: Sequence[ReportRecord] = ()
    ) -> float:
        """Extend a lease and store reports."""
        ...

    def finish(
        self,
        trial_id: int,
        worker_id: str,
        reports: Sequence[ReportRecord] = (),
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


class Controller:
    """Coordinates the trials of experiments kept in a store.

    Args:
        store: Where everything is kept.
        clock: Seconds since the epoch; by default the database's clock (so that workers
            whose clocks disagree still agree on leases). Tests pass one they move.
        lease_seconds: How long a leased trial stays with a worker without a heartbeat.
        retry_backoff: Seconds a failed trial waits before its first retry; each further
            retry waits twice as long (at most a minute).
        imports: Which code named in a stored spec (a custom explore function) this
            controller may import when a decision needs it. The default trusts the store
            (a run's own processes); ``pbtkit serve`` passes the packages its operator
            allowed.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] | None = None,
        lease_seconds: float = 60.0,
        retry_backoff: float = 0.5,
        imports: ImportPolicy | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.retry_backoff = retry_backoff
        self.imports = imports if imports is not None else ImportPolicy()
        self._specs: dict[str, tuple[int, ExperimentSpec]] = {}
        self._caches: dict[int, PopulationCache] = {}
        self._caches_lock = threading.Lock()

    # experiments -------------------------------------------------------------------
    def create(self, name: str, spec: ExperimentSpec, *, resume: bool = True) -> ExperimentRecord:
        """Create an experiment and its first generation, or find the one to resume.

        Raises:
            ExperimentConflict: It exists with other settings, or ``resume`` is False.
        """
        with self.store.transaction() as tx:
            existing = tx.get_experiment(name)
            if existing is not None:
                stored = ExperimentSpec.from_dict(existing.config)
                diffs = stored.differences(spec)
                if diffs:
                    raise ExperimentConflict(
                        f"experiment {name!r} already exists with other settings ("
                        + "; ".join(diffs)
                        + "). Use another name, or the stored settings to resume it"
                    )
                if not resume:
                    raise ExperimentConflict(
                        f"experiment {name!r} already exists; pass resume=True to continue it "
                        "or choose another name"
                    )
                if existing.status == "failed":
                    tx.lock_experiment(existing.id)
                    self._revive(tx, existing, self._now(tx))
                    return dataclasses.replace(existing, status="running")
                return existing
            check_experiment_name(name)  # a new one only: old names stay readable
            now = self._now(tx)
            record = tx.create_experiment(name, spec.to_dict(), now)
            members = []
            for member in range(spec.population):
                rng = np.random.default_rng([spec.seed, _SAMPLE, member])
                hparams = spec.first_hparams(member, rng)
                tx.insert_trial(
                    TrialRecord(
                        id=0,
                        experiment_id=record.id,
                        member=member,
                        generation=0,
                        hparams=hparams,
                        parent_id=None,
                        start_step=0,
                        end_step=spec.policy.trial_steps(0),
                        created_at=now,
                        priority=float(rng.random()),
                    )
                )
                members.append(MemberRecord(record.id, member, hparams=hparams))
            tx.put_members(members)
            return record

    def experiment(self, name: str) -> ExperimentRecord:
        """The stored experiment. Raises NotFound."""
        with self.store.read() as tx:
            return self._get_experiment(tx, name)

    def experiments(self) -> list[ExperimentRecord]:
        """Every experiment in the store, oldest first."""
        with self.store.read() as tx:
            return tx.list_experiments()

    def spec(self, name: str) -> ExperimentSpec:
        """The experiment's settings (cached: they never change)."""
        return self._spec_of(self.experiment(name))

    def snapshot(self, name: str) -> Snapshot:
        """Members, trials and events of the experiment, read in one transaction."""
        with self.store.read() as tx:
            experiment = self._get_experiment(tx, name)
            return Snapshot(
                experiment,
                tx.members(experiment.id),
                tx.trials(experiment.id),
                tx.events(experiment.id),
            )

    def trial(self, trial_id: int) -> TrialRecord:
        """One trial. Raises NotFound."""
        with self.store.read() as tx:
            return tx.get_trial(trial_id)

    def reports(self, name: str, *, member: int | None = None) -> list[ReportRecord]:
        """Reports of the experiment in the order they were made."""
        with self.store.read() as tx:
            experiment = self._get_experiment(tx, name)
            return tx.reports(experiment.id, member=member)

    # leasing -----------------------------------------------------------------------
    def lease(
        self,
        name: str,
        worker_id: str,
        *,
        member: int | None = None,
        generation: int | None = None,
        again: bool = False,
    ) -> Lease | Literal["wait", "finished"]:
        """Hand the oldest pending trial to a worker.

        Args:
            name: The experiment.
            worker_id: Who takes the trial (see :func:`worker_identity`).
            member: Only a trial of this member (a glass-box client keeps its member).
            generation: Only a trial of this generation (a glass-box client joining takes
                a member that has not started).
            again: This request is a repeat of one whose answer was lost (a client
                riding out a server outage): if the worker already holds a trial (of
                ``member``), that one is handed back rather than a second one.

        Returns:
            A :class:`Lease`; ``"wait"`` when nothing is pending now but the experiment
            goes on (a generation barrier, trials still running, a retry backing off);
            ``"finished"`` when every member is done or failed.

        Every call first gives back the trials whose leases expired, so the trial of a
        worker that went silent waits at most one lease period for another worker.
        """
        while True:
            with self.store.read() as tx:
                experiment = self._get_experiment(tx, name)
                if experiment.status != "running":
                    return FINISHED
                now = self._now(tx)
                running = tx.trials(experiment.id, statuses=("running",))
                expired = [t for t in running if _lease_over(t, now)]
                held = [
                    t
                    for t in running
                    if again
                    and t.lease_owner == worker_id
                    and not _lease_over(t, now)
                    and (member is None or t.member == member)
                ]
                if held:
                    # Asked again (its answer was lost on the way): the same trial.
                    parent = None if held[0].parent_id is None else tx.get_trial(held[0].parent_id)
                    return self._lease_of(experiment, held[0], parent)
                pending = (
                    None
                    if expired
                    else tx.next_pending(
                        experiment.id, member=member, generation=generation, now=now
                    )
                )
                if not expired and pending is None:
                    if member is not None:
                        state = [m for m in tx.members(experiment.id) if m.member == member]
                        if not state:
                            raise NotFound(f"experiment {name!r} has no member {member}")
                        return WAIT if state[0].status == "active" else FINISHED
                    if tx.count_trials(experiment.id, ACTIVE_STATUSES):
                        return WAIT
                    return self._finish_if_done(experiment)
            if expired:
                self.requeue_expired(name)
                continue
            lease = self._claim(experiment, worker_id, member, generation)
            if lease is not None:
                return lease
            # Another worker claimed it between our read and our write: look again.

    def lease_any(self, worker_id: str, *, again: bool = False) -> Lease | Literal["wait"]:
        """Hand a pending trial of any running experiment, the oldest experiment first."""
        for experiment in self.experiments():
            if experiment.status != "running":
                continue
            got = self.lease(experiment.name, worker_id, again=again)
            if isinstance(got, Lease):
                return got
        return WAIT

    def _claim(
        self,
        experiment: ExperimentRecord,
        worker_id: str,
        member: int | None,
        generation: int | None,
    ) -> Lease | None:
        with self.store.transaction() as tx:
            # Locked with SKIP LOCKED where the database has it: concurrent workers each
            # get a different pending trial instead of racing for the same one.
            now = self._now(tx)
            trial = tx.next_pending(
                experiment.id, member=member, generation=generation, claim=True, now=now
            )
            if trial is None:
                return None
            running = dataclasses.replace(
                trial,
                status="running",
                attempt=trial.attempt + 1,
                lease_owner=worker_id,
                lease_expires=now + self.lease_seconds,
                started_at=now,
                error=None,
                not_before=None,
            )
            if not tx.update_trial(running, expect_status="pending"):
                return None
            parent = None if trial.parent_id is None else tx.get_trial(trial.parent_id)
        return self._lease_of(experiment, running, parent)

    def _lease_of(
        self, experiment: ExperimentRecord, trial: TrialRecord, parent: TrialRecord | None
    ) -> Lease:
        spec = self._spec_of(experiment)
        return Lease(
            trial=trial,
            experiment=experiment.name,
            metric=spec.metric,
            checkpoint_root=spec.checkpoint_root,
            parent_checkpoint=None if parent is None else parent.checkpoint,
            donor=None if parent is None or parent.member == trial.member else parent.member,
            lease_expires=trial.lease_expires or 0.0,
            metrics=tuple(spec.policy.objective.metric_names),
        )

    def heartbeat(
        self, trial_id: int, worker_id: str, reports: Sequence[ReportRecord] = ()
    ) -> float:
        """Extend a lease and store reports made so far.

        Returns:
            The new expiry time.

        Raises:
            LeaseLost: The trial is no longer this worker's (stop training it).
        """
        outcome = self.heartbeat_many([(trial_id, worker_id, reports)])[0]
        if isinstance(outcome, LeaseLost):
            raise outcome
        return outcome

    def heartbeat_many(
        self, beats: Sequence[tuple[int, str, Sequence[ReportRecord]]]
    ) -> list[float | LeaseLost]:
        """Several heartbeats in one transaction (a server's group commit).

        Each is checked before anything of it is written, so one that lost its lease
        changes nothing and the others still count.

        Returns:
            For each heartbeat, its new expiry time or the LeaseLost it met.
        """
        outcomes: list[float | LeaseLost] = []
        with self.store.transaction() as tx:
            expires = self._now(tx) + self.lease_seconds
            for trial_id, worker_id, reports in beats:
                try:
                    trial = self._held(tx, trial_id, worker_id)
                except LeaseLost as lost:
                    outcomes.append(lost)
                    continue
                except NotFound as missing:
                    outcomes.append(LeaseLost(str(missing)))
                    continue
                owned = _owned(reports, trial)
                tx.update_trial(
                    dataclasses.replace(
                        trial, lease_expires=expires, metrics=_merge_metrics(trial.metrics, owned)
                    ),
                    expect_status="running",
                )
                tx.add_reports(trial.experiment_id, owned)
                outcomes.append(expires)
        return outcomes

    # finishing ---------------------------------------------------------------------
    def finish(
        self,
        trial_id: int,
        worker_id: str,
        reports: Sequence[ReportRecord] = (),
        checkpoint: str | None = None,
    ) -> list[str]:
        """Record a finished trial and decide what its member (or generation) does next.

        Returns:
            Checkpoint names that nothing needs any more; the caller deletes them.

        A finish sent again after its answer was lost (the same checkpoint, already
        recorded) is acknowledged again and changes nothing.

        Raises:
            LeaseLost: The trial is no longer this worker's; nothing was written.
            MetricError: The objective metric was never reported; nothing was written.
        """
        with self._forgetting_on_error(), self.store.transaction() as tx:
            recorded = tx.get_trial(trial_id)
            if recorded.status == "done" and checkpoint and recorded.checkpoint == checkpoint:
                return []  # the checkpoint name is unique to this attempt: it was ours
            trial = self._held(tx, trial_id, worker_id)
            tx.lock_experiment(trial.experiment_id)
            spec = self._spec_by_id(tx, trial.experiment_id)
            reports = _owned(reports, trial)
            metrics = _merge_metrics(trial.metrics, reports)
            score = spec.policy.objective.score(metrics)
            now = self._now(tx)
            done = dataclasses.replace(
                trial,
                status="done",
                metrics=metrics,
                score=score if math.isfinite(score) else math.nan,
                checkpoint=checkpoint,
                lease_owner=None,
                lease_expires=None,
                finished_at=now,
            )
            if not tx.update_trial(done, expect_status="running"):
                raise LeaseLost(f"trial {trial_id} changed while it was being finished")
            tx.add_reports(trial.experiment_id, reports)
            cache = self._population(tx, trial.experiment_id, spec)
            previous = cache.records[trial.member].latest_trial_id
            _put(
                tx,
                cache,
                dataclasses.replace(
                    cache.records[trial.member],
                    latest_trial_id=done.id,
                    step=done.end_step,
                    score=done.score,
                    hparams=done.hparams,
                    checkpoint=checkpoint,
                    metrics=metrics,
                ),
            )
            if spec.evolution == "async":
                decided = [trial.member]
            else:
                decided = self._barrier_members(tx, trial, cache)
            self._decide(tx, spec, cache, decided, now)
            candidates = [trial.parent_id, previous]
            if _window(spec):  # this member's trial that just left its own window
                candidates += [
                    t.id
                    for t in tx.trials(
                        trial.experiment_id,
                        statuses=("done",),
                        member=trial.member,
                        generation=trial.generation - _window(spec),
                    )
                ]
            released = self._release(tx, spec, cache, candidates)
            self._mark_finished_if_done(tx, trial.experiment_id, cache)
        return released

    def fail(
        self,
        trial_id: int,
        worker_id: str | None,
        error: str,
        *,
        penalize: bool = True,
        bad_parent: bool = False,
        backoff: bool = True,
    ) -> list[str]:
        """Give a trial back after an error: retried from the same parent, or its member failed.

        A penalized retry waits before it may be leased again (``retry_backoff``, doubling
        with each attempt), so a quick failure does not spend every attempt at once.

        Args:
            trial_id: The trial.
            worker_id: Its holder; None to act regardless of who holds it (recovery).
            error: What went wrong (a traceback), kept on the trial and in an event.
            penalize: Whether this counts as an attempt (False when the whole run was
                stopped, which is not the trial's fault).
            bad_parent: The trial could not start because its parent checkpoint failed
                verification (missing, corrupt, changed). That checkpoint is marked bad and
                is never a parent again; this trial and every other waiting for it start
                from a good checkpoint instead (see :meth:`_restart_from_good`), without
                counting an attempt.
            backoff: Whether the retry waits (False for a lease that expired: a minute
                has passed already).

        Returns:
            Checkpoint names nothing needs any more.
        """
        with self._forgetting_on_error(), self.store.transaction() as tx:
            trial = (
                tx.get_trial(trial_id) if worker_id is None else self._held(tx, trial_id, worker_id)
            )
            if trial.status != "running":
                return []
            tx.lock_experiment(trial.experiment_id)
            spec = self._spec_by_id(tx, trial.experiment_id)
            now = self._now(tx)
            tx.delete_reports(trial.id)
            if bad_parent and trial.parent_id is not None:
                return self._contain_bad_parent(tx, spec, trial, error, now)
            attempt = trial.attempt if penalize else max(trial.attempt - 1, 0)
            base = dataclasses.replace(
                trial,
                attempt=attempt,
                lease_owner=None,
                lease_expires=None,
                metrics={},
                error=error,
            )
            if attempt < spec.max_attempts:
                wait = min(self.retry_backoff * 2 ** max(attempt - 1, 0), _LONGEST_BACKOFF)
                tx.update_trial(
                    dataclasses.replace(
                        base,
                        status="pending",
                        not_before=now + wait if penalize and backoff else None,
                    ),
                    expect_status="running",
                )
                tx.add_events(
                    [
                        EventRecord(
                            trial.experiment_id,
                            trial.member,
                            "retry",
                            trial_id=trial.id,
                            detail=_last_line(error),
                            at=now,
                        )
                    ]
                )
                if penalize and trial.generation == 0:
                    self._stop_if_every_start_fails(tx, trial, error, now)
                return []
            tx.update_trial(
                dataclasses.replace(base, status="failed", finished_at=now), expect_status="running"
            )
            cache = self._population(tx, trial.experiment_id, spec)
            _put(tx, cache, dataclasses.replace(cache.records[trial.member], status="failed"))
            tx.add_events(
                [
                    EventRecord(
                        trial.experiment_id,
                        trial.member,
                        "failed",
                        trial_id=trial.id,
                        detail=(
                            f"failed {attempt} time(s), giving up on member {trial.member}: "
                            f"{_last_line(error)}"
                        ),
                        at=now,
                    )
                ]
            )
            if spec.evolution == "generational":
                decided = self._barrier_members(tx, trial, cache)
                self._decide(tx, spec, cache, decided, now)
            released = self._release(tx, spec, cache, [trial.parent_id])
            self._mark_finished_if_done(tx, trial.experiment_id, cache)
            return released

    # recovery ----------------------------------------------------------------------
    def requeue_expired(self, name: str) -> list[int]:
        """Give back every running trial whose lease has expired (its worker is gone)."""
        with self.store.read() as tx:
            experiment = self._get_experiment(tx, name)
            expired = self._expired(tx, experiment.id)
        for trial in expired:
            self.fail(
                trial.id,
                None,
                f"lease expired: worker {trial.lease_owner} stopped answering",
                backoff=False,
            )
        return [t.id for t in expired]

    def release_worker(
        self, name: str, worker_id: str, reason: str, *, penalize: bool = True
    ) -> list[int]:
        """Give back every trial a worker holds, at once (it is known to be dead).

        Args:
            name: The experiment.
            worker_id: The dead worker.
            reason: Why it is dead (kept on the trial and in an event).
            penalize: Whether this counts as an attempt of its trials: yes when the
                worker's process died (the trial may be what killed it), no when its
                machine or Ray node was lost.
        """
        with self.store.read() as tx:
            experiment = self._get_experiment(tx, name)
            held = [
                t
                for t in tx.trials(experiment.id, statuses=("running",))
                if t.lease_owner == worker_id
            ]
        for trial in held:
            # At once: noticing a dead process took a worker start-up's time already.
            self.fail(trial.id, None, reason, penalize=penalize, backoff=False)
        return [t.id for t in held]

    def reclaim_orphans(self, name: str) -> list[int]:
        """Requeue running trials held by dead processes of this host, without penalty.

        Used when a run resumes after its process was killed: its workers ran here, and a
        pid that no longer exists holds nothing. Trials of other hosts wait for their
        leases to expire.
        """
        host = socket.gethostname()
        with self.store.read() as tx:
            experiment = self._get_experiment(tx, name)
            running = tx.trials(experiment.id, statuses=("running",))
        orphans = [t for t in running if _dead_local_owner(t.lease_owner, host, t.started_at)]
        for trial in orphans:
            self.fail(trial.id, None, "the run was interrupted; trial run again", penalize=False)
        return [t.id for t in orphans]

    # reading -----------------------------------------------------------------------
    def summary(self, name: str) -> Summary:
        """Where the experiment stands now (one cheap read)."""
        with self.store.read() as tx:
            experiment = self._get_experiment(tx, name)
            spec = self._spec_of(experiment)
            members = tx.members(experiment.id)
            exploits = tx.count_events(experiment.id, "exploit")
            running = tx.count_trials(experiment.id, ("running",))
            done = tx.count_trials(experiment.id, ("done",))
        leader = best(
            spec.policy.objective,
            (
                Standing(
                    m.member,
                    m.score,
                    m.metrics,
                    m.latest_trial_id is not None,
                    m.status == "failed",
                )
                for m in members
            ),
        )
        top = None if leader is None else next(m for m in members if m.member == leader)
        total = spec.policy.total_steps
        return Summary(
            name=name,
            status=experiment.status,
            population=spec.population,
            steps_done=sum(total if m.status == "failed" else min(m.step, total) for m in members),
            steps_total=spec.population * total,
            best_score=math.nan if top is None else top.score,
            best_member=None if top is None else top.member,
            exploits=exploits,
            members_done=sum(m.status == "done" for m in members),
            members_failed=sum(m.status == "failed" for m in members),
            trials_running=running,
            trials_done=done,
        )

    # internals ---------------------------------------------------------------------
    def _get_experiment(self, tx: Transaction, name: str) -> ExperimentRecord:
        experiment = tx.get_experiment(name)
        if experiment is None:
            known = ", ".join(e.name for e in tx.list_experiments()) or "none"
            raise NotFound(
                f"no experiment named {name!r} in {self.store.display_url} (known: {known})"
            )
        return experiment

    def _spec_of(self, experiment: ExperimentRecord) -> ExperimentSpec:
        cached = self._specs.get(experiment.name)
        if cached is None or cached[0] != experiment.id:
            cached = (experiment.id, ExperimentSpec.from_dict(experiment.config))
            self._specs[experiment.name] = cached
        return cached[1]

    def _spec_by_id(self, tx: Transaction, experiment_id: int) -> ExperimentSpec:
        for eid, spec in self._specs.values():
            if eid == experiment_id:
                return spec
        for experiment in tx.list_experiments():
            if experiment.id == experiment_id:
                return self._spec_of(experiment)
        raise NotFound(f"no experiment with id {experiment_id}")

    def _held(self, tx: Transaction, trial_id: int, worker_id: str) -> TrialRecord:
        """The trial, if ``worker_id`` holds its lease now (not merely held it once).

        Raises:
            LeaseLost: Another holds it, it is no longer running, or its lease expired,
                even if nobody has taken it over yet: late work is never accepted.
        """
        trial = tx.get_trial(trial_id)
        if trial.status != "running" or trial.lease_owner != worker_id:
            holder = trial.lease_owner or "nobody"
            raise LeaseLost(
                f"trial {trial_id} is {trial.status} and held by {holder}, not {worker_id}; "
                "its lease expired or it was given to another worker. Stop training it"
            )
        now = self._now(tx)
        if trial.lease_expires is not None and trial.lease_expires < now:
            raise LeaseLost(
                f"the lease of trial {trial_id} expired {now - trial.lease_expires:.1f} s ago "
                f"(no heartbeat from {worker_id} for {self.lease_seconds:g} s); it will be "
                "given to another worker. Stop training it"
            )
        return trial

    def _now(self, tx: Transaction) -> float:
        return self.clock() if self.clock is not None else tx.now()

    def _expired(
        self, tx: Transaction, experiment_id: int, now: float | None = None
    ) -> list[TrialRecord]:
        now = self._now(tx) if now is None else now
        return [t for t in tx.trials(experiment_id, statuses=("running",)) if _lease_over(t, now)]

    def _barrier_members(
        self, tx: Transaction, trial: TrialRecord, cache: PopulationCache
    ) -> list[int]:
        """Generational mode: the members to decide now (all of them once the last of a
        generation has finished; none before)."""
        if tx.count_trials(trial.experiment_id, ACTIVE_STATUSES, generation=trial.generation):
            return []
        # The members whose latest trial is of this generation (not all at one step: a
        # member that copied an opponent of an earlier generation went back to its step).
        finished = np.array(
            [
                t.id
                for t in tx.trials(
                    trial.experiment_id, statuses=("done",), generation=trial.generation
                )
            ],
            dtype=np.int64,
        )
        ready = cache.active & (cache.trial >= 0) & np.isin(cache.trial, finished)
        return [int(m) for m in np.flatnonzero(ready)]

    # population cache ----------------------------------------------------------------
    def _population(
        self, tx: Transaction, experiment_id: int, spec: ExperimentSpec
    ) -> PopulationCache:
        """The experiment's members, current as of this transaction (which holds the
        experiment's lock)."""
        with self._caches_lock:
            cache = self._caches.get(experiment_id)
            if cache is None:
                cache = PopulationCache(experiment_id, spec.population)
                self._caches[experiment_id] = cache
        cache.refresh(tx)
        return cache

    @contextlib.contextmanager
    def _forgetting_on_error(self) -> Iterator[None]:
        """Drop every cached population when a transaction fails: it may have cached rows
        the database rolled back."""
        try:
            yield
        except BaseException:
            with self._caches_lock:
                self._caches.clear()
            raise

    def _decide(
        self,
        tx: Transaction,
        spec: ExperimentSpec,
        cache: PopulationCache,
        decided: Sequence[int],
        now: float,
    ) -> None:
        if not decided:
            return
        rows = np.flatnonzero((cache.trial >= 0) & ~cache.failed)
        shared: dict[int, Population] = {}  # members deciding at one step share one ranking
        events: list[EventRecord] = []
        for member in decided:
            record = cache.records[member]
            assert record.latest_trial_id is not None
            me = MemberView(
                member=member,
                trial_id=record.latest_trial_id,
                step=record.step,
                score=float(cache.score[member]),
                hparams=record.hparams,
                has_checkpoint=record.checkpoint is not None,
                metrics=record.metrics,
            )
            latest = tx.get_trial(me.trial_id)
            rng = np.random.default_rng([spec.seed, _DECIDE, me.trial_id])
            population = self._comparable(tx, spec, latest, cache, rows, shared)
            try:
                with import_policy(self.imports):
                    decision = spec.policy.decide(me, population, spec.space, rng)
                if not isinstance(decision, Stop):
                    spec.space.validate(decision.hparams)
            except PBTError as exc:
                # A decision that cannot be made (a user's explore function leaving the
                # space) fails this member only; its finished trial stays done.
                _put(tx, cache, dataclasses.replace(record, status="failed"))
                events.append(
                    EventRecord(
                        record.experiment_id,
                        member,
                        "failed",
                        me.trial_id,
                        detail=f"no next trial could be decided after trial {me.trial_id}: {exc}",
                        at=now,
                    )
                )
                continue
            if isinstance(decision, Stop):
                _put(tx, cache, dataclasses.replace(record, status="done"))
                events.append(
                    EventRecord(
                        record.experiment_id,
                        member,
                        "stop",
                        me.trial_id,
                        detail=decision.reason,
                        at=now,
                    )
                )
                continue
            inherit: dict[str, Any] | None = None
            hparams = spec.space.validate(decision.hparams)
            if isinstance(decision, Exploit):
                # "hparams": only the donor's hyperparameters; the weights stay the member's
                own = decision.inherit == "hparams"
                parent_id = me.trial_id if own else decision.donor_trial
                # Steps follow the weights: the copy goes on from the step the donor's
                # checkpoint reached, as in the paper (and as a copied checkpoint carries
                # its iteration in Ray Tune), so a member's steps always count the
                # training its weights received and a replay re-trains the same steps.
                start = me.step if own else tx.get_trial(decision.donor_trial).end_step
                if decision.inherit == "shrink_perturb":
                    inherit = {
                        "mode": "shrink_perturb",
                        "shrink": decision.shrink,
                        "noise": decision.noise,
                    }
            else:
                assert isinstance(decision, Continue)
                parent_id, start = me.trial_id, me.step
            nxt = tx.insert_trial(
                TrialRecord(
                    id=0,
                    experiment_id=record.experiment_id,
                    member=member,
                    generation=latest.generation + 1,
                    hparams=hparams,
                    parent_id=parent_id,
                    start_step=start,
                    end_step=start + spec.policy.trial_steps(start),
                    created_at=now,
                    priority=float(rng.random()),
                    inherit=inherit,
                )
            )
            if isinstance(decision, Exploit):
                events.append(
                    EventRecord(
                        record.experiment_id,
                        member,
                        "exploit",
                        trial_id=nxt.id,
                        donor_member=decision.donor_member,
                        donor_trial=decision.donor_trial,
                        old_hparams=dict(decision.old_hparams),
                        new_hparams=hparams,
                        detail=_change_text(decision.old_hparams, hparams)
                        + _INHERIT_TEXT.get(decision.inherit, "").format(
                            shrink=decision.shrink, noise=decision.noise
                        ),
                        at=now,
                    )
                )
            else:
                events.append(
                    EventRecord(
                        record.experiment_id,
                        member,
                        "continue",
                        trial_id=nxt.id,
                        old_hparams=dict(me.hparams),
                        new_hparams=hparams,
                        at=now,
                    )
                )
        tx.add_events(events)

    @staticmethod
    def _comparable(
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
                    for t in tx.trials(
                        latest.experiment_id, statuses=("done",), member=latest.member
                    )
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
            history=lambda member, k: _history(tx, spec, latest.experiment_id, member, k),
            recent=lambda generations: _recent(tx, latest, generations, spec.policy.total_steps),
            pending=lambda: [
                t.hparams for t in tx.trials(latest.experiment_id, statuses=ACTIVE_STATUSES)
            ],
        )
        if level:
            shared[step] = population
        return population

    def _release(
        self,
        tx: Transaction,
        spec: ExperimentSpec,
        cache: PopulationCache,
        candidates: Sequence[int | None],
    ) -> list[str]:
        """Mark as released the candidate checkpoints that nothing can need any more.

        With initiator-based evolution a trial of the last ``window`` generations may
        still become a parent, so its checkpoint is kept until every active member has
        moved past that window (a few that are passed over then go in the run's final
        sweep).
        """
        if spec.keep_checkpoints == "all":
            return []
        horizon = math.inf
        window = _window(spec)
        if window:
            active = cache.active & (cache.trial >= 0)
            lowest = int(cache.step[active].min()) if active.any() else MAX_STEPS
            # A member at step s decides next at s + ready_every (asynchronous), or at s
            # itself while it waits at a generational barrier.
            reach = window if spec.evolution == "generational" else window - 1
            horizon = lowest - reach * spec.policy.ready_every
        released = []
        for trial_id in {c for c in candidates if c is not None}:
            if (cache.trial == trial_id).any():  # some member's latest
                continue
            trial = tx.get_trial(trial_id)
            if trial.checkpoint is None or trial.checkpoint_released or trial.checkpoint_bad:
                continue  # a bad one stays on disk, to be examined
            if trial.end_step > horizon:  # may still be drawn as an opponent
                continue
            if tx.children_count(trial_id, ACTIVE_STATUSES):
                continue
            tx.update_trial(
                dataclasses.replace(trial, checkpoint_released=True), expect_status=trial.status
            )
            released.append(trial.checkpoint)
        return released

    def _stop_if_every_start_fails(
        self, tx: Transaction, trial: TrialRecord, error: str, now: float
    ) -> None:
        """Stop the experiment when the first trials of several members failed with the
        same error and no trial has finished: a bug every member hits (a misspelled
        hyperparameter, a missing file) is reported at once instead of after every
        member spent every attempt. Running the experiment again resumes it."""
        if tx.count_trials(trial.experiment_id, ("done",)):
            return
        line = _last_line(error)
        first = {t.id for t in tx.trials(trial.experiment_id, generation=0)}
        members = sorted(
            {
                e.member
                for e in tx.events(trial.experiment_id, kind="retry")
                if e.trial_id in first and e.detail == line
            }
        )
        if len(members) < _SAME_ERROR_MEMBERS:
            return
        tx.set_experiment_status(trial.experiment_id, "failed")
        shown = ", ".join(map(str, members))
        tx.add_events(
            [
                EventRecord(
                    trial.experiment_id,
                    trial.member,
                    "stopped",
                    trial_id=trial.id,
                    detail=(
                        f"stopped early: the first trials of members {shown} all failed with "
                        f"the same error: {line}. Fix it and run the experiment again: it "
                        "resumes, and these trials start afresh"
                    ),
                    at=now,
                )
            ]
        )

    def _revive(self, tx: Transaction, experiment: ExperimentRecord, now: float) -> None:
        """Resume a failed experiment: its failed members and pending trials start their
        attempts afresh (the user fixed the cause and ran it again)."""
        cache = self._population(tx, experiment.id, self._spec_of(experiment))
        revived = []
        for trial in tx.trials(experiment.id, statuses=("pending", "failed")):
            if trial.status == "failed" and cache.records[trial.member].status != "failed":
                continue
            if (
                trial.status == "failed"
                and (cache.records[trial.member].latest_trial_id or 0) > trial.id
            ):
                continue
            tx.update_trial(
                dataclasses.replace(
                    trial, status="pending", attempt=0, not_before=None, finished_at=None
                ),
                expect_status=trial.status,
            )
            if cache.records[trial.member].status == "failed":
                _put(tx, cache, dataclasses.replace(cache.records[trial.member], status="active"))
                revived.append(trial.member)
        tx.set_experiment_status(experiment.id, "running")
        tx.add_events(
            [
                EventRecord(
                    experiment.id,
                    -1 if not revived else revived[0],
                    "resumed",
                    detail=(
                        "run again after it failed: pending trials start their attempts afresh"
                        + (f"; members {', '.join(map(str, revived))} are back" if revived else "")
                    ),
                    at=now,
                )
            ]
        )

    def _contain_bad_parent(
        self,
        tx: Transaction,
        spec: ExperimentSpec,
        trial: TrialRecord,
        error: str,
        now: float,
    ) -> list[str]:
        """A trial could not start from its parent's checkpoint: mark that checkpoint bad
        (never a parent again, kept on disk to be examined), take it from its owner's
        donors, and move this trial and every pending one that was to start from it to a
        good checkpoint. Only a member with nothing good to start from fails."""
        assert trial.parent_id is not None
        bad = tx.get_trial(trial.parent_id)
        cache = self._population(tx, trial.experiment_id, spec)
        events: list[EventRecord] = []
        if not bad.checkpoint_bad:
            tx.update_trial(dataclasses.replace(bad, checkpoint_bad=True), expect_status=bad.status)
            events.append(
                EventRecord(
                    trial.experiment_id,
                    bad.member,
                    "bad_checkpoint",
                    trial_id=bad.id,
                    detail=(
                        f"the checkpoint {bad.checkpoint} of trial {bad.id} (member {bad.member}, "
                        f"step {bad.end_step}) failed verification and is never a parent "
                        f"again: {_last_line(error)}"
                    ),
                    at=now,
                )
            )
            owner = cache.records[bad.member]
            if owner.latest_trial_id == bad.id and owner.checkpoint is not None:
                _put(tx, cache, dataclasses.replace(owner, checkpoint=None))  # no longer a donor
        waiting = [trial] + [
            t
            for t in tx.trials(trial.experiment_id, statuses=("pending",))
            if t.parent_id == bad.id
        ]
        for t in waiting:
            self._restart_from_good(tx, spec, cache, t, bad, error, now, events)
        tx.add_events(events)
        self._mark_finished_if_done(tx, trial.experiment_id, cache)
        return []

    def _restart_from_good(
        self,
        tx: Transaction,
        spec: ExperimentSpec,
        cache: PopulationCache,
        trial: TrialRecord,
        bad: TrialRecord,
        error: str,
        now: float,
        events: list[EventRecord],
    ) -> None:
        """Give ``trial`` (running or pending, meant to start from ``bad``) a good parent.

        In order: the member's own latest checkpoint (when ``bad`` was a donor's); the
        last good checkpoint in ``bad``'s own lineage that is still kept; the best
        member's latest checkpoint (an exploit). With none, the member fails.
        """
        candidates: list[tuple[int, str]] = []
        if bad.member != trial.member and cache.records[trial.member].latest_trial_id:
            own = cache.records[trial.member].latest_trial_id
            assert own is not None
            candidates.append((own, "its own latest checkpoint"))
        ancestor = bad.parent_id
        for _ in range(_LONGEST_WALK):
            if ancestor is None:
                break
            candidates.append((ancestor, f"an earlier checkpoint of member {bad.member}'s lineage"))
            ancestor = tx.get_trial(ancestor).parent_id
        objective = spec.policy.objective
        donors = [
            int(m)
            for m in np.flatnonzero(cache.has_checkpoint & (cache.trial >= 0) & ~cache.failed)
            if np.isfinite(cache.score[m])
        ]
        for m in sorted(donors, key=lambda m: objective.key(float(cache.score[m])), reverse=True):
            candidates.append((int(cache.trial[m]), f"the best member's checkpoint (member {m})"))
        chosen: TrialRecord | None = None
        why = ""
        for candidate_id, reason in candidates:
            candidate = tx.get_trial(candidate_id)
            if (
                candidate.id != bad.id
                and candidate.status == "done"
                and candidate.checkpoint is not None
                and not candidate.checkpoint_released
                and not candidate.checkpoint_bad
                and candidate.end_step < spec.policy.total_steps
            ):
                chosen, why = candidate, reason
                break
        running = trial.status == "running"
        if chosen is None:
            tx.update_trial(
                dataclasses.replace(
                    trial,
                    status="failed",
                    lease_owner=None,
                    lease_expires=None,
                    metrics={},
                    error=error,
                    finished_at=now,
                ),
                expect_status=trial.status,
            )
            _put(tx, cache, dataclasses.replace(cache.records[trial.member], status="failed"))
            events.append(
                EventRecord(
                    trial.experiment_id,
                    trial.member,
                    "failed",
                    trial_id=trial.id,
                    detail=(
                        f"member {trial.member} has no good checkpoint left to start from: the "
                        f"checkpoint of trial {bad.id} failed verification and none other is "
                        f"kept ({_last_line(error)})"
                    ),
                    at=now,
                )
            )
            return
        start = chosen.end_step
        tx.update_trial(
            dataclasses.replace(
                trial,
                status="pending",
                attempt=max(trial.attempt - 1, 0) if running else trial.attempt,
                lease_owner=None,
                lease_expires=None,
                metrics={},
                error=error if running else trial.error,
                parent_id=chosen.id,
                start_step=start,
                end_step=start + spec.policy.trial_steps(start),
                inherit=trial.inherit if chosen.member != trial.member else None,
                not_before=None,
            ),
            expect_status=trial.status,
        )
        events.append(
            EventRecord(
                trial.experiment_id,
                trial.member,
                "restart",
                trial_id=trial.id,
                donor_member=chosen.member if chosen.member != trial.member else None,
                donor_trial=chosen.id,
                detail=(
                    f"cannot start from the checkpoint of trial {bad.id} (member {bad.member}): "
                    f"it failed verification; starts from {why} (trial {chosen.id}, step "
                    f"{start}) instead"
                ),
                at=now,
            )
        )

    def _mark_finished_if_done(
        self, tx: Transaction, experiment_id: int, cache: PopulationCache
    ) -> None:
        if not cache.active.any():
            tx.set_experiment_status(experiment_id, "failed" if cache.failed.all() else "finished")

    def _finish_if_done(self, experiment: ExperimentRecord) -> Literal["wait", "finished"]:
        with self.store.transaction() as tx:
            members = {m.member: m for m in tx.members(experiment.id)}
            if tx.count_trials(experiment.id, ACTIVE_STATUSES):
                return WAIT
            if all(m.status != "active" for m in members.values()):
                everyone_failed = all(m.status == "failed" for m in members.values())
                tx.set_experiment_status(experiment.id, "failed" if everyone_failed else "finished")
            return FINISHED if all(m.status != "active" for m in members.values()) else WAIT


def _lease_over(trial: TrialRecord, now: float) -> bool:
    """Whether a running trial's lease has expired."""
    return trial.lease_expires is not None and trial.lease_expires < now


def _window(spec: ExperimentSpec) -> int:
    """How many recent generations may still hand over a checkpoint (initiator-based
    evolution); 0 when only members' latest trials are donors."""
    exploit = spec.policy.exploit
    return exploit.window if isinstance(exploit, Initiator) else 0


_INHERIT_TEXT = {
    "hparams": " (hyperparameters only: the member keeps its own weights)",
    "weights": " (weights only: the member explores its own hyperparameters)",
    "shrink_perturb": " (weights shrunk by {shrink} and perturbed with noise {noise})",
}


def _history(
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


def _recent(
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


def _put(tx: Transaction, cache: PopulationCache, record: MemberRecord) -> None:
    """Write a member row and keep the cache in step with it."""
    tx.put_members([record])
    cache.put(record)


def _owned(reports: Sequence[ReportRecord], trial: TrialRecord) -> list[ReportRecord]:
    """Reports attributed to the trial they were sent for, whatever they claim."""
    return [
        r
        if r.trial_id == trial.id and r.member == trial.member
        else ReportRecord(trial.id, trial.member, r.step, r.metrics)
        for r in reports
    ]


def _merge_metrics(
    metrics: Mapping[str, float], reports: Sequence[ReportRecord]
) -> dict[str, float]:
    merged = dict(metrics)
    for report in reports:
        merged.update(report.metrics)
    return merged


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def _change_text(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    # A conditional hyperparameter may be absent on either side: say it was inactive, or
    # became so, rather than show a stale value or None.
    shown = {k: repr(v) for k, v in old.items()}
    changes = [
        f"{k}: {shown.get(k, 'inactive')} -> {v!r}"
        for k, v in new.items()
        if k not in old or old[k] != v
    ]
    changes += [f"{k}: {shown[k]} -> inactive" for k in old if k not in new]
    return ", ".join(changes) or "no change"


def _dead_local_owner(owner: str | None, host: str, since: float | None = None) -> bool:
    """Whether a lease owner ``host:pid:...`` is a process of this host that is gone.

    A zombie (a killed worker nobody reaped) is gone; so is an owner whose pid now
    belongs to a process that started after the lease was taken (the pid was reused).
    """
    if not owner:
        return True
    parts = owner.split(":")
    if len(parts) < 2 or parts[0] != host:
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie_or_younger(pid, since)


def _zombie_or_younger(pid: int, since: float | None) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            return True
        if since is None:
            return False
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return False  # no /proc (not Linux): trust the pid
    return started > since + 1.0
