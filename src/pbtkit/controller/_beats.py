"""Heartbeats with numbered reports, committed many at a time (what ``pbtkit serve`` does).

A worker far from the controller sends its reports in batches. When a batch's answer is
lost (the connection dropped after the server committed, the server restarted), the
worker cannot know whether it was stored, so it sends the batch again marked ``again``.
Each batch says where it starts among its trial's reports (``first``: how many reports
of this trial the worker sent before it). The reports a running trial has in the store
are exactly those its current holder sent (a failed attempt's are deleted with it), so
on a batch sent again the store's count tells which of its reports are already there;
only the rest are stored. A first sending is trusted, so the common case costs nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pbtkit._exceptions import LeaseLost, MetricError, NotFound, PBTError
from pbtkit.controller._leasing import merge_metrics, not_stored, owned
from pbtkit.store._base import Measurement, TrialRecord

if TYPE_CHECKING:
    from pbtkit.controller._controller import Controller

__all__ = ["Beat", "record_beats"]


@dataclass(frozen=True, slots=True)
class Beat:
    """One heartbeat: the trial, its holder, and reports made since the last one.

    Args:
        trial_id: The trial.
        worker_id: Who holds its lease.
        reports: Reports in the order they were made.
        first: How many reports of this trial the worker sent before these (None: not
            numbered, every report is stored).
        again: The same heartbeat sent again after its answer was lost.
    """

    trial_id: int
    worker_id: str
    reports: Sequence[Measurement] = ()
    first: int | None = None
    again: bool = False


def record_beats(controller: Controller, beats: Sequence[Beat]) -> list[float | PBTError]:
    """Several heartbeats in one transaction; each is checked before anything of it is
    written, so one that is refused changes nothing and the others still count.

    Returns:
        For each heartbeat, its new lease expiry, or the error it met: LeaseLost (the
        trial is not this worker's now), MetricError (a report's step lies outside the
        trial's steps).
    """
    outcomes: list[float | PBTError] = []
    with controller.store.transaction() as tx:
        expires = controller._now(tx) + controller.lease_seconds
        for beat in beats:
            try:
                trial = controller._held(tx, beat.trial_id, beat.worker_id)
                _check_steps(beat.reports, trial)
            except (LeaseLost, MetricError) as refused:
                outcomes.append(refused)
                continue
            except NotFound as missing:
                outcomes.append(LeaseLost(str(missing)))
                continue
            stored = owned(
                not_stored(tx, trial, beat.reports, beat.first if beat.again else None), trial
            )
            tx.update_trial(
                dataclasses.replace(
                    trial, lease_expires=expires, metrics=merge_metrics(trial.metrics, stored)
                ),
                expect_status="running",
            )
            tx.add_reports(trial.experiment_id, stored)
            outcomes.append(expires)
    return outcomes


def _check_steps(reports: Sequence[Measurement], trial: TrialRecord) -> None:
    """The steps a worker may report are its trial's (as ``Trial.report`` checks)."""
    end = max(trial.end_step, trial.start_step + 1)
    for report in reports:
        if not trial.start_step <= report.step < end:
            raise MetricError(
                f"report step {report.step} is outside the steps of trial {trial.id} "
                f"[{trial.start_step}, {end}): report the steps of the trial you hold"
            )
