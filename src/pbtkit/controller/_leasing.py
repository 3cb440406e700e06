"""Handing out trials: leases, heartbeats, and the checks that a worker still holds one.

The :class:`~pbtkit.controller.Controller` is made of this part and the one that records
what a trial did (``_controller``); both keep no state of their own beyond caches.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from pbtkit._exceptions import LeaseLost, NotFound
from pbtkit.controller._base import Reader
from pbtkit.controller._liveness import lease_over
from pbtkit.controller._population import PopulationCache, put_member
from pbtkit.controller._protocol import ACTIVE_STATUSES, FINISHED, WAIT, Lease
from pbtkit.store._base import (
    ExperimentRecord,
    Measurement,
    ReportRecord,
    Transaction,
    TrialRecord,
)

__all__ = ["Leasing", "merge_metrics", "not_stored", "owned", "record_finished"]


class Leasing(Reader):
    """Leases and heartbeats (arguments: :class:`Reader`)."""

    if TYPE_CHECKING:

        def requeue_expired(self, name: str) -> list[int]: ...

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
            claimed = self._claim_in(tx, experiment.id, worker_id, member, generation, None)
        return None if claimed is None else self._lease_of(experiment, *claimed)

    def _claim_in(
        self,
        tx: Transaction,
        experiment_id: int,
        worker_id: str,
        member: int | None,
        generation: int | None,
        now: float | None,
    ) -> tuple[TrialRecord, TrialRecord | None] | None:
        """Claim the next pending trial in ``tx``: the running trial and its parent."""
        # Locked with SKIP LOCKED where the database has it: concurrent workers each
        # get a different pending trial instead of racing for the same one.
        now = self._now(tx) if now is None else now
        trial = tx.next_pending(
            experiment_id, member=member, generation=generation, claim=True, now=now
        )
        return None if trial is None else self._claim_trial(tx, trial, worker_id, now)

    def _claim_trial(
        self, tx: Transaction, trial: TrialRecord, worker_id: str, now: float
    ) -> tuple[TrialRecord, TrialRecord | None] | None:
        """Mark a pending trial running for ``worker_id``: it and its parent, or None when
        another worker took it between the read and the write."""
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
        return running, parent

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
                kept = owned(reports, trial)
                tx.update_trial(
                    dataclasses.replace(
                        trial, lease_expires=expires, metrics=merge_metrics(trial.metrics, kept)
                    ),
                    expect_status="running",
                )
                tx.add_reports(trial.experiment_id, kept)
                outcomes.append(expires)
        return outcomes

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

    def _held_by(self, tx: Transaction, experiment_id: int, worker_id: str) -> TrialRecord | None:
        """A running trial of the experiment whose lease ``worker_id`` holds now, if any."""
        now = self._now(tx)
        for trial in tx.trials(experiment_id, statuses=("running",)):
            if trial.lease_owner == worker_id and not lease_over(trial, now):
                return trial
        return None

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


def owned(measurements: Sequence[Measurement], trial: TrialRecord) -> list[ReportRecord]:
    """The reports of the trial they were sent for, ready to store."""
    return [ReportRecord(trial.id, trial.member, m.step, m.metrics) for m in measurements]


def merge_metrics(
    metrics: Mapping[str, float], reports: Sequence[ReportRecord]
) -> dict[str, float]:
    merged = dict(metrics)
    for report in reports:
        merged.update(report.metrics)
    return merged


def not_stored(
    tx: Transaction, trial: TrialRecord, reports: Sequence[Measurement], first: int | None
) -> Sequence[Measurement]:
    """Of a batch of reports numbered from ``first`` and sent again, those not stored yet:
    a running trial's stored reports are exactly those its holder sent, in order."""
    if first is None or not reports:
        return reports
    stored = len(tx.reports(trial.experiment_id, trial_id=trial.id))
    return reports[max(0, min(len(reports), stored - first)) :]


def record_finished(
    tx: Transaction,
    cache: PopulationCache,
    trial: TrialRecord,
    reports: Sequence[ReportRecord],
    metrics: Mapping[str, float],
    score: float,
    checkpoint: str | None,
    now: float,
) -> tuple[TrialRecord, int | None] | None:
    """Write a held trial as done in ``tx``: the trial with its metrics (its own merged
    with ``reports``') and score, its reports, and its member's row. Returns the recorded
    trial and the member's previous latest trial; None when the trial changed meanwhile
    (nothing is written)."""
    metrics = dict(metrics)
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
        return None
    tx.add_reports(trial.experiment_id, reports)
    member = cache.records[trial.member]
    put_member(
        tx,
        cache,
        dataclasses.replace(
            member,
            latest_trial_id=done.id,
            step=done.end_step,
            score=done.score,
            hparams=done.hparams,
            checkpoint=checkpoint,
            metrics=metrics,
        ),
    )
    return done, member.latest_trial_id
