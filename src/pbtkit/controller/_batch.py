"""Leasing and finishing many trials in one call, for a worker that trains them together.

A vectorized worker (:mod:`pbtkit.torch.vectorized`) trains every member it holds in one
batched computation, in lockstep: it asks for all the pending trials at once and hands
them back together. Doing that one trial at a time would cost a round trip per member,
and worse, in asynchronous mode the first member finished would be ranked while the
others still stood at the previous ready point, so it would copy a donor's *older*
checkpoint and fall out of step with the rest (two computations instead of one from then
on). :meth:`Batches.finish_batch` records every result first and then decides all the
members, each ranked against the others at the step they all reached.

The guarantees are those of the single-trial calls: expired leases are given back before
anything is handed out; trials go out in the same order (generation, priority, id);
``again`` hands back what the worker already holds, so a request sent twice never leases
twice; a finish sent again after its answer was lost is acknowledged and changes nothing;
late work (a trial whose lease expired) is refused and nothing of it is written.

:class:`~pbtkit.controller.Controller` calls these functions from its methods of the same
names; they are kept apart from the single-trial hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pbtkit._exceptions import ConfigError, LeaseLost, NotFound
from pbtkit.controller._decide import barrier_members, decide
from pbtkit.controller._leasing import merge_metrics, owned, record_finished
from pbtkit.controller._liveness import lease_over
from pbtkit.controller._population import PopulationCache
from pbtkit.controller._protocol import (
    ACTIVE_STATUSES,
    FINISHED,
    WAIT,
    BatchFinish,
    Lease,
    TrialResult,
)
from pbtkit.controller._recovery import mark_finished_if_done
from pbtkit.controller._retention import left_window, released
from pbtkit.store._base import ExperimentRecord, Transaction, TrialRecord

if TYPE_CHECKING:
    from pbtkit.controller._controller import Controller

__all__ = ["MAX_BATCH", "check_results", "check_size", "finish_batch", "lease_batch"]

#: The most trials one batch call may lease or finish.
MAX_BATCH = 4096


def check_size(what: str, value: object) -> int:
    """``value`` if it is a batch size (an int from 1 to :data:`MAX_BATCH`).

    Raises:
        ConfigError: It is not.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BATCH:
        raise ConfigError(f"{what} must be an integer from 1 to {MAX_BATCH}, got {value!r}")
    return value


def check_results(results: Sequence[TrialResult]) -> None:
    """Refuse a batch of results that no store should see (the client checks too).

    Raises:
        ConfigError: No results, more than :data:`MAX_BATCH`, or a trial named twice.
    """
    if not results:
        raise ConfigError("finish_batch needs at least one trial result")
    check_size("the number of results", len(results))
    ids = [r.trial_id for r in results]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise ConfigError(f"finish_batch names trial(s) {twice} more than once")


def lease_batch(
    controller: Controller,
    name: str,
    worker_id: str,
    *,
    max_trials: int,
    again: bool = False,
) -> list[Lease] | Literal["wait", "finished"]:
    """Hand up to ``max_trials`` pending trials to one worker, oldest first.

    Args:
        controller: The controller whose store and clock to use.
        name: The experiment.
        worker_id: Who takes the trials (see :func:`worker_identity`).
        max_trials: The most trials to hand out (1 to :data:`MAX_BATCH`).
        again: This request repeats one whose answer was lost: if the worker holds
            trials already, those are handed back (at most ``max_trials``) rather
            than more.

    Returns:
        The leases (at least one), in the order :meth:`lease` would have handed them
        out; ``"wait"`` or ``"finished"`` as for :meth:`lease`.

    Raises:
        ConfigError: ``max_trials`` is out of range.
        NotFound: No such experiment.
    """
    limit = check_size("max_trials", max_trials)
    while True:
        with controller.store.read() as tx:
            experiment = controller._get_experiment(tx, name)
            if experiment.status != "running":
                return FINISHED
            now = controller._now(tx)
            running = tx.trials(experiment.id, statuses=("running",))
            if again:
                held = sorted(
                    (t for t in running if t.lease_owner == worker_id and not lease_over(t, now)),
                    key=lambda t: t.id,
                )[:limit]
                if held:
                    parents = {
                        t.parent_id: tx.get_trial(t.parent_id)
                        for t in held
                        if t.parent_id is not None
                    }
                    return [
                        controller._lease_of(
                            experiment, t, None if t.parent_id is None else parents[t.parent_id]
                        )
                        for t in held
                    ]
            expired = any(lease_over(t, now) for t in running)
            if not expired and tx.next_pending(experiment.id, now=now) is None:
                if tx.count_trials(experiment.id, ACTIVE_STATUSES):
                    return WAIT
                return controller._finish_if_done(experiment)
        if expired:
            controller.requeue_expired(name)
            continue
        leases = _claim_many(controller, experiment, worker_id, limit)
        if leases:
            return leases


def finish_batch(
    controller: Controller,
    name: str,
    worker_id: str,
    results: Sequence[TrialResult],
) -> BatchFinish:
    """Record several finished trials of one experiment, then decide their members.

    Everything happens in one transaction. Every result is recorded first, then the
    policy decides: in asynchronous mode every member whose trial was recorded, in the
    order given, each ranked against the population as it stands with all of them
    recorded; in generational mode the members of each generation this batch
    completed (its barrier).

    Args:
        controller: The controller whose store, clock and policy to use.
        name: The experiment every trial belongs to.
        worker_id: The worker that holds them.
        results: One :class:`TrialResult` per trial (at most :data:`MAX_BATCH`).

    Returns:
        The checkpoints nothing needs any more, and the trials refused because they
        are not this worker's any more (nothing of those was written). A trial
        already recorded as done with the same checkpoint (a batch sent again after
        its answer was lost) is acknowledged and changes nothing.

    Raises:
        ConfigError: No results, too many, a trial named twice, or a trial of another
            experiment; nothing was written.
        MetricError: A trial never reported a metric the objective needs; nothing was
            written.
        NotFound: No such experiment.
    """
    check_results(results)
    with controller._forgetting_on_error(), controller.store.transaction() as tx:
        experiment = controller._get_experiment(tx, name)
        lost: dict[int, str] = {}
        held: list[tuple[TrialRecord, TrialResult]] = []
        for result in results:
            try:
                recorded = tx.get_trial(result.trial_id)
            except NotFound as missing:
                lost[result.trial_id] = str(missing)
                continue
            if recorded.experiment_id != experiment.id:
                raise ConfigError(
                    f"trial {result.trial_id} is not a trial of experiment {name!r}; "
                    "finish each experiment's trials with its own finish_batch"
                )
            if (
                recorded.status == "done"
                and result.checkpoint
                and recorded.checkpoint == result.checkpoint
            ):
                continue  # recorded already: this batch was sent again
            try:
                held.append((controller._held(tx, result.trial_id, worker_id), result))
            except LeaseLost as gone:
                lost[result.trial_id] = str(gone)
        if not held:
            return BatchFinish((), lost)
        tx.lock_experiment(experiment.id)
        spec = controller._spec_by_id(tx, experiment.id)
        now = controller._now(tx)
        # Score every trial before writing any: a missing metric refuses the batch.
        scored = []
        for trial, result in held:
            stored = owned(result.reports, trial)
            metrics = merge_metrics(trial.metrics, stored)
            scored.append((trial, result, stored, metrics, spec.policy.objective.score(metrics)))
        cache = controller._population(tx, experiment.id, spec)
        candidates: list[int | None] = []
        recorded_trials: list[TrialRecord] = []
        for trial, result, stored, metrics, score in scored:
            finished = record_finished(
                tx, cache, trial, stored, metrics, score, result.checkpoint, now
            )
            if finished is None:
                lost[trial.id] = f"trial {trial.id} changed while it was being finished"
                continue
            done, previous = finished
            candidates += [trial.parent_id, previous]
            recorded_trials.append(done)
        decide(
            tx,
            spec,
            cache,
            _to_decide(tx, spec.evolution, recorded_trials, cache),
            now,
            controller.imports,
        )
        for done in recorded_trials:
            candidates += left_window(tx, spec, done)
        freed = released(tx, spec, cache, candidates)
        mark_finished_if_done(tx, experiment.id, cache)
    return BatchFinish(tuple(freed), lost)


def _to_decide(
    tx: Transaction, evolution: str, recorded: Sequence[TrialRecord], cache: PopulationCache
) -> list[int]:
    """The members to decide now: every one recorded (async), or those of each generation
    whose barrier this batch passed (generational)."""
    if evolution == "async":
        return [t.member for t in recorded]
    decided: list[int] = []
    seen: set[int] = set()
    for generation in sorted({t.generation for t in recorded}):
        first = next(t for t in recorded if t.generation == generation)
        for member in barrier_members(tx, first, cache):
            if member not in seen:
                seen.add(member)
                decided.append(member)
    return decided


def _claim_many(
    controller: Controller, experiment: ExperimentRecord, worker_id: str, limit: int
) -> list[Lease]:
    """Claim up to ``limit`` pending trials in one transaction, in lease order."""
    claimed: list[tuple[TrialRecord, TrialRecord | None]] = []
    with controller.store.transaction() as tx:
        now = controller._now(tx)
        misses = 0
        while len(claimed) < limit:
            # One at a time, locked with SKIP LOCKED where the database has it, so two
            # workers claiming at once each get different trials.
            trial = tx.next_pending(experiment.id, claim=True, now=now)
            if trial is None:
                break
            got = controller._claim_trial(tx, trial, worker_id, now)
            if got is None:
                misses += 1  # another worker took it between the read and the write
                if misses > limit:
                    break
                continue
            claimed.append(got)
    return [controller._lease_of(experiment, trial, parent) for trial, parent in claimed]
