"""When things go wrong: a run whose every first trial fails the same way, a failed run
run again, a checkpoint that fails verification.

Each function runs inside the caller's transaction, with the experiment locked.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pbtkit.controller._apply import last_line
from pbtkit.controller._population import PopulationCache, put_member
from pbtkit.spec import ExperimentSpec
from pbtkit.store._base import EventRecord, ExperimentRecord, Transaction, TrialRecord

__all__ = [
    "contain_bad_parent",
    "mark_finished_if_done",
    "revive",
    "stop_if_every_start_fails",
]

#: How many members' first trials must fail with the same error to stop a run early.
SAME_ERROR_MEMBERS = 2
#: How far back a lineage is searched for a good checkpoint to restart from.
LONGEST_WALK = 1000


def stop_if_every_start_fails(tx: Transaction, trial: TrialRecord, error: str, now: float) -> None:
    """Stop the experiment when the first trials of several members failed with the
    same error and no trial has finished: a bug every member hits (a misspelled
    hyperparameter, a missing file) is reported at once instead of after every
    member spent every attempt. Running the experiment again resumes it."""
    if tx.count_trials(trial.experiment_id, ("done",)):
        return
    line = last_line(error)
    first = {t.id for t in tx.trials(trial.experiment_id, generation=0)}
    members = sorted(
        {
            e.member
            for e in tx.events(trial.experiment_id, kind="retry")
            if e.trial_id in first and e.detail == line
        }
    )
    if len(members) < SAME_ERROR_MEMBERS:
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


def revive(
    tx: Transaction, experiment: ExperimentRecord, cache: PopulationCache, now: float
) -> None:
    """Resume a failed experiment: its failed members and pending trials start their
    attempts afresh (the user fixed the cause and ran it again)."""
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
            put_member(tx, cache, dataclasses.replace(cache.records[trial.member], status="active"))
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


def contain_bad_parent(
    tx: Transaction,
    spec: ExperimentSpec,
    cache: PopulationCache,
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
                    f"again: {last_line(error)}"
                ),
                at=now,
            )
        )
        owner = cache.records[bad.member]
        if owner.latest_trial_id == bad.id and owner.checkpoint is not None:
            put_member(tx, cache, dataclasses.replace(owner, checkpoint=None))  # no longer a donor
    waiting = [trial] + [
        t for t in tx.trials(trial.experiment_id, statuses=("pending",)) if t.parent_id == bad.id
    ]
    for t in waiting:
        restart_from_good(tx, spec, cache, t, bad, error, now, events)
    tx.add_events(events)
    mark_finished_if_done(tx, trial.experiment_id, cache)
    return []


def restart_from_good(
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
    for _ in range(LONGEST_WALK):
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
        put_member(tx, cache, dataclasses.replace(cache.records[trial.member], status="failed"))
        events.append(
            EventRecord(
                trial.experiment_id,
                trial.member,
                "failed",
                trial_id=trial.id,
                detail=(
                    f"member {trial.member} has no good checkpoint left to start from: the "
                    f"checkpoint of trial {bad.id} failed verification and none other is "
                    f"kept ({last_line(error)})"
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


def mark_finished_if_done(tx: Transaction, experiment_id: int, cache: PopulationCache) -> None:
    """Mark the experiment finished (or failed, when every member failed) once no member
    is active."""
    if not cache.active.any():
        tx.set_experiment_status(experiment_id, "failed" if cache.failed.all() else "finished")
