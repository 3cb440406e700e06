"""Which checkpoints nothing can need any more: one rule for the controller, which releases
them as trials finish, and for the final sweep of a run.

A checkpoint is kept while it is some member's latest, while a pending or running trial
starts from it, while an exploit strategy may still draw it (``Exploiter.checkpoint_window``:
initiator-based evolution draws opponents from recent generations), while
``keep_checkpoints="all"``, or when it failed verification (kept, to be examined).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

from pbtkit.controller._population import PopulationCache
from pbtkit.controller._protocol import ACTIVE_STATUSES
from pbtkit.core.policy import MAX_STEPS
from pbtkit.spec import ExperimentSpec
from pbtkit.store._base import Transaction, TrialRecord

__all__ = ["final_keep", "left_window", "released"]


def left_window(tx: Transaction, spec: ExperimentSpec, trial: TrialRecord) -> list[int]:
    """The ids of the member's finished trials that ``trial`` just pushed out of the window
    of past checkpoints its exploiter draws from (none for an exploiter without one)."""
    window = spec.policy.exploit.checkpoint_window
    if not window:
        return []
    return [
        t.id
        for t in tx.trials(
            trial.experiment_id,
            statuses=("done",),
            member=trial.member,
            generation=trial.generation - window,
        )
    ]


def released(
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
    window = spec.policy.exploit.checkpoint_window
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


def final_keep(
    spec: ExperimentSpec, trials: Iterable[TrialRecord], latest: Iterable[str]
) -> set[str]:
    """The checkpoints a finished run keeps: every one with ``keep_checkpoints="all"``;
    else each member's latest (``latest``, stored names), those a pending or running
    trial starts from, and those that failed verification (to be examined)."""
    trials = list(trials)
    if spec.keep_checkpoints == "all":
        return {t.checkpoint for t in trials if t.checkpoint}
    keep = {t.checkpoint for t in trials if t.checkpoint and t.checkpoint_bad}
    keep |= set(latest)
    by_id = {t.id: t for t in trials}
    for t in trials:
        if t.status in ACTIVE_STATUSES and t.parent_id is not None:
            parent = by_id[t.parent_id].checkpoint
            if parent:
                keep.add(parent)
    return keep
