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
import socket
from collections.abc import Sequence

import numpy as np

from pbtkit._exceptions import ExperimentConflict, LeaseLost
from pbtkit.controller import _batch
from pbtkit.controller._apply import last_line
from pbtkit.controller._decide import SAMPLE, barrier_members, decide
from pbtkit.controller._leasing import (
    Leasing,
    merge_metrics,
    not_stored,
    owned,
    record_finished,
)
from pbtkit.controller._liveness import dead_local_owner
from pbtkit.controller._population import put_member
from pbtkit.controller._protocol import Lease
from pbtkit.controller._recovery import (
    contain_bad_parent,
    mark_finished_if_done,
    revive,
    stop_if_every_start_fails,
)
from pbtkit.controller._retention import left_window, released
from pbtkit.spec import ExperimentSpec, check_experiment_name
from pbtkit.store._base import (
    EventRecord,
    ExperimentRecord,
    Measurement,
    MemberRecord,
    Transaction,
    TrialRecord,
)

__all__ = ["Controller"]

#: The longest a retry waits before it may be leased again.
_LONGEST_BACKOFF = 60.0


class Controller(Leasing):
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

    # finishing ---------------------------------------------------------------------

    def finish(
        self,
        trial_id: int,
        worker_id: str,
        reports: Sequence[Measurement] = (),
        checkpoint: str | None = None,
        *,
        first: int | None = None,
    ) -> list[str]:
        """Record a finished trial and decide what its member (or generation) does next.

        Args:
            trial_id: The trial.
            worker_id: Who holds its lease.
            reports: Reports not sent with a heartbeat yet.
            checkpoint: The trial's committed checkpoint.
            first: How many reports of this trial the worker sent before ``reports``,
                when some of those may be stored already (a heartbeat carrying them
                lost its answer): only the ones the store lacks are stored. None: all.

        Returns:
            Checkpoint names that nothing needs any more; the caller deletes them.

        A finish sent again after its answer was lost (the same checkpoint, already
        recorded) is acknowledged again and changes nothing.

        Raises:
            LeaseLost: The trial is no longer this worker's; nothing was written.
            MetricError: The objective metric was never reported; nothing was written.
        """
        with self._forgetting_on_error(), self.store.transaction() as tx:
            return self._finish(tx, trial_id, worker_id, reports, checkpoint, first)[0]

    def finish_and_lease(
        self,
        trial_id: int,
        worker_id: str,
        reports: Sequence[Measurement] = (),
        checkpoint: str | None = None,
        *,
        first: int | None = None,
        again: bool = False,
    ) -> tuple[list[str], Lease | None]:
        """:meth:`finish`, and the worker's next trial leased in the same transaction.

        One transaction where a worker's loop would take three (the finish, then a read
        and a claim for its next lease), and the next trial starts without waiting for
        the write lock a second time.

        Args:
            trial_id, worker_id, reports, checkpoint, first: As :meth:`finish`.
            again: This request repeats one whose answer was lost: when its finish is
                recorded already, the trial the lost answer handed to this worker (one
                it holds in that experiment) is handed back rather than a second one.

        Returns:
            The checkpoint names to delete, and the next :class:`Lease`, or None when
            there is none to hand out at once (nothing pending, a lease to requeue, the
            experiment over): the worker then asks :meth:`lease` as usual.

        Raises:
            LeaseLost: As :meth:`finish`; nothing was written.
            MetricError: As :meth:`finish`; nothing was written.
        """
        with self._forgetting_on_error(), self.store.transaction() as tx:
            freed, experiment_id = self._finish(tx, trial_id, worker_id, reports, checkpoint, first)
            if experiment_id is None:
                if not again:
                    return freed, None
                # Recorded by the request whose answer was lost: the trial it handed over.
                experiment_id = tx.get_trial(trial_id).experiment_id
                held = self._held_by(tx, experiment_id, worker_id)
                if held is not None:
                    record = next(e for e in tx.list_experiments() if e.id == experiment_id)
                    parent = None if held.parent_id is None else tx.get_trial(held.parent_id)
                    return freed, self._lease_of(record, held, parent)
            experiment = next((e for e in tx.list_experiments() if e.id == experiment_id), None)
            now = self._now(tx)
            if (
                experiment is None
                or experiment.status != "running"
                # A dead worker's trial goes back first, by lease() (which requeues it).
                or self._expired(tx, experiment_id, now)
            ):
                return freed, None
            claimed = self._claim_in(tx, experiment_id, worker_id, None, None, now)
        if claimed is None:
            return freed, None
        return freed, self._lease_of(experiment, *claimed)

    def _finish(
        self,
        tx: Transaction,
        trial_id: int,
        worker_id: str,
        reports: Sequence[Measurement],
        checkpoint: str | None,
        first: int | None = None,
    ) -> tuple[list[str], int | None]:
        """Record a finished trial in ``tx``; the released checkpoints, and the trial's
        experiment (None when this finish had been recorded already)."""
        recorded = tx.get_trial(trial_id)
        if recorded.status == "done" and checkpoint and recorded.checkpoint == checkpoint:
            return [], None  # the checkpoint name is unique to this attempt: it was ours
        trial = self._held(tx, trial_id, worker_id)
        tx.lock_experiment(trial.experiment_id)
        spec = self._spec_by_id(tx, trial.experiment_id)
        stored = owned(not_stored(tx, trial, reports, first), trial)
        metrics = merge_metrics(trial.metrics, stored)
        score = spec.policy.objective.score(metrics)
        cache = self._population(tx, trial.experiment_id, spec)
        now = self._now(tx)
        finished = record_finished(tx, cache, trial, stored, metrics, score, checkpoint, now)
        if finished is None:
            raise LeaseLost(f"trial {trial_id} changed while it was being finished")
        previous = finished[1]
        async_ = spec.evolution == "async"
        decided = [trial.member] if async_ else barrier_members(tx, trial, cache)
        decide(tx, spec, cache, decided, now, self.imports)
        candidates = [trial.parent_id, previous, *left_window(tx, spec, trial)]
        freed = released(tx, spec, cache, candidates)
        mark_finished_if_done(tx, trial.experiment_id, cache)
        return freed, trial.experiment_id

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

    # batches: a worker that trains many trials at once; the functions of _batch, whose
    # first argument is the controller, become methods here
    lease_batch = _batch.lease_batch
    finish_batch = _batch.finish_batch
