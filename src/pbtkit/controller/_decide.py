"""Deciding: what the policy says about the members that are ready, written as trials and
events in the transaction that recorded their results.

The decision itself is pure (:mod:`pbtkit.core` decides, :mod:`pbtkit.controller._apply`
turns a decision into an outcome); this module gathers what it needs from the store and
the population cache, and writes the outcome back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from pbtkit._exceptions import PBTError
from pbtkit._target import ImportPolicy, import_policy
from pbtkit.controller._apply import failed_decision, outcome_of
from pbtkit.controller._population import PopulationCache, comparable, put_member
from pbtkit.controller._protocol import ACTIVE_STATUSES
from pbtkit.core.decisions import Exploit, MemberView, Stop
from pbtkit.core.population import Population
from pbtkit.spec import ExperimentSpec
from pbtkit.store._base import EventRecord, Transaction, TrialRecord

__all__ = ["SAMPLE", "barrier_members", "decide"]

# Seeds of numpy SeedSequences: the initial sample and each decision draw from streams
# keyed by (seed, purpose, id), so a run is repeatable without storing any RNG state.
SAMPLE, _DECIDE = 0, 1


def barrier_members(tx: Transaction, trial: TrialRecord, cache: PopulationCache) -> list[int]:
    """Generational mode: the members to decide now (all of them once the last of a
    generation has finished; none before)."""
    if tx.count_trials(trial.experiment_id, ACTIVE_STATUSES, generation=trial.generation):
        return []
    # The members whose latest trial is of this generation (not all at one step: a
    # member that copied an opponent of an earlier generation went back to its step).
    finished = np.array(
        [
            t.id
            for t in tx.trials(trial.experiment_id, statuses=("done",), generation=trial.generation)
        ],
        dtype=np.int64,
    )
    ready = cache.active & (cache.trial >= 0) & np.isin(cache.trial, finished)
    return [int(m) for m in np.flatnonzero(ready)]


def decide(
    tx: Transaction,
    spec: ExperimentSpec,
    cache: PopulationCache,
    decided: Sequence[int],
    now: float,
    imports: ImportPolicy,
) -> None:
    """Ask the policy about each member in ``decided`` and write what it says."""
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
        population = comparable(tx, spec, latest, cache, rows, shared)
        try:
            with import_policy(imports):
                decision = spec.policy.decide(me, population, spec.space, rng)
            hparams = {} if isinstance(decision, Stop) else spec.space.validate(decision.hparams)
        except PBTError as exc:
            outcome = failed_decision(latest, exc, now)
        else:
            takes_weights = isinstance(decision, Exploit) and decision.inherit != "hparams"
            donor_step = (
                tx.get_trial(decision.donor_trial).end_step
                if isinstance(decision, Exploit) and takes_weights
                else None
            )
            outcome = outcome_of(
                decision,
                latest,
                spec.policy,
                hparams=hparams,
                donor_step=donor_step,
                now=now,
                priority=float(rng.random()),
            )
        if outcome.status != "active":
            put_member(tx, cache, dataclasses.replace(record, status=outcome.status))
        if outcome.trial is None:
            events.append(outcome.event)
        else:
            events.append(outcome.with_trial(tx.insert_trial(outcome.trial)))
    tx.add_events(events)
