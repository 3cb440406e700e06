"""The controller: the only place where the store and the policy meet.

It keeps no state of its own. Every call opens one store transaction, reads what it
needs, asks the policy, writes the outcome and returns, so any number of processes (the
workers themselves, a server, several servers) can act as the controller of one
experiment at once, and any of them can die without losing a decision. (What it keeps in
memory is a cache of the population, brought up to date from the store inside each
decision's transaction: see :mod:`pbtkit.controller._population`.)

A trial's life::

    pending --lease--> running --finish--> done   (the policy then writes the next trial)
                          |  \\--fail / lease expired / worker died--> pending (attempt < max)
                          |                                        \\-> failed (member failed)
"""

from __future__ import annotations

import dataclasses
import math
import socket
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from pbtkit._exceptions import ExperimentConflict, LeaseLost, NotFound
from pbtkit.controller import _batch
from pbtkit.controller._apply import last_line
from pbtkit.controller._base import Reader
from pbtkit.controller._decide import SAMPLE, barrier_members, decide
from pbtkit.controller._liveness import dead_local_owner, lease_over
from pbtkit.controller._population import put_member
from pbtkit.controller._protocol import ACTIVE_STATUSES, FINISHED, WAIT, Lease
from pbtkit.controller._recovery import (
    contain_bad_parent,
    mark_finished_if_done,
    revive,
    stop_if_every_start_fails,
)
from pbtkit.controller._retention import released
from pbtkit.spec import ExperimentSpec, check_experiment_name
from pbtkit.store._base import (
    EventRecord,
    ExperimentRecord,
    Measurement,
    MemberRecord,
    ReportRecord,
    Transaction,
    TrialRecord,
)

__all__ = ["Controller"]

#: The longest a retry waits before it may be leased again.
_LONGEST_BACKOFF = 60.0


class Controller(Reader):
    """Coordinates the trials of experiments kept in a store (arguments: :class:`Reader`)."""

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
                    cache = self._population(tx, existing.id, self._spec_of(existing))
                    revive(tx, existing, cache, self._now(tx))
                    return dataclasses.replace(existing, status="running")
                return existing
            check_experiment_name(name)  # a new one only: old names stay readable
            now = self._now(tx)
            record = tx.create_experiment(name, spec.to_dict(), now)
            members = []
            for member in range(spec.population):
                rng = np.random.default_rng([spec.seed, SAMPLE, member])
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
                expired = [t for t in running if lease_over(t, now)]
                held = [
                    t
                    for t in running
                    if again
                    and t.lease_owner == worker_id
                    and not lease_over(t, now)
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
        self, trial_id: int, worker_id: str, reports: Sequence[Measurement] = ()
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
        self, beats: Sequence[tuple[int, str, Sequence[Measurement]]]
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
        reports: Sequence[Measurement] = (),
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
            stored = _owned(reports, trial)
            metrics = _merge_metrics(trial.metrics, stored)
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
            tx.add_reports(trial.experiment_id, stored)
            cache = self._population(tx, trial.experiment_id, spec)
            previous = cache.records[trial.member].latest_trial_id
            put_member(
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
                decided = barrier_members(tx, trial, cache)
            decide(tx, spec, cache, decided, now, self.imports)
            candidates = [trial.parent_id, previous]
            window = spec.policy.exploit.checkpoint_window
            if window:  # this member's trial that just left the window of draws
                candidates += [
                    t.id
                    for t in tx.trials(
                        trial.experiment_id,
                        statuses=("done",),
                        member=trial.member,
                        generation=trial.generation - window,
                    )
                ]
            freed = released(tx, spec, cache, candidates)
            mark_finished_if_done(tx, trial.experiment_id, cache)
        return freed

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
                cache = self._population(tx, trial.experiment_id, spec)
                return contain_bad_parent(tx, spec, cache, trial, error, now)
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
                            detail=last_line(error),
                            at=now,
                        )
                    ]
                )
                if penalize and trial.generation == 0:
                    stop_if_every_start_fails(tx, trial, error, now)
                return []
            tx.update_trial(
                dataclasses.replace(base, status="failed", finished_at=now), expect_status="running"
            )
            cache = self._population(tx, trial.experiment_id, spec)
            put_member(tx, cache, dataclasses.replace(cache.records[trial.member], status="failed"))
            tx.add_events(
                [
                    EventRecord(
                        trial.experiment_id,
                        trial.member,
                        "failed",
                        trial_id=trial.id,
                        detail=(
                            f"failed {attempt} time(s), giving up on member {trial.member}: "
                            f"{last_line(error)}"
                        ),
                        at=now,
                    )
                ]
            )
            if spec.evolution == "generational":
                decided = barrier_members(tx, trial, cache)
                decide(tx, spec, cache, decided, now, self.imports)
            freed = released(tx, spec, cache, [trial.parent_id])
            mark_finished_if_done(tx, trial.experiment_id, cache)
            return freed

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
        orphans = [t for t in running if dead_local_owner(t.lease_owner, host, t.started_at)]
        for trial in orphans:
            self.fail(trial.id, None, "the run was interrupted; trial run again", penalize=False)
        return [t.id for t in orphans]

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

    def _expired(
        self, tx: Transaction, experiment_id: int, now: float | None = None
    ) -> list[TrialRecord]:
        now = self._now(tx) if now is None else now
        return [t for t in tx.trials(experiment_id, statuses=("running",)) if lease_over(t, now)]

    def _finish_if_done(self, experiment: ExperimentRecord) -> Literal["wait", "finished"]:
        with self.store.transaction() as tx:
            members = {m.member: m for m in tx.members(experiment.id)}
            if tx.count_trials(experiment.id, ACTIVE_STATUSES):
                return WAIT
            if all(m.status != "active" for m in members.values()):
                everyone_failed = all(m.status == "failed" for m in members.values())
                tx.set_experiment_status(experiment.id, "failed" if everyone_failed else "finished")
            return FINISHED if all(m.status != "active" for m in members.values()) else WAIT

    # batches: a worker that trains many trials at once; the functions of _batch, whose
    # first argument is the controller, become methods here
    lease_batch = _batch.lease_batch
    finish_batch = _batch.finish_batch


def _owned(measurements: Sequence[Measurement], trial: TrialRecord) -> list[ReportRecord]:
    """The reports of the trial they were sent for, ready to store."""
    return [ReportRecord(trial.id, trial.member, m.step, m.metrics) for m in measurements]


def _merge_metrics(
    metrics: Mapping[str, float], reports: Sequence[ReportRecord]
) -> dict[str, float]:
    merged = dict(metrics)
    for report in reports:
        merged.update(report.metrics)
    return merged
