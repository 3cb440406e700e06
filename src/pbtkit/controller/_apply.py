"""What a decision writes: pure functions from a policy's decision to the records it means.

The policy (``core/``) returns a value, :class:`~pbtkit.core.decisions.Continue`,
:class:`~pbtkit.core.decisions.Exploit` or :class:`~pbtkit.core.decisions.Stop`; here it
becomes an :class:`Outcome`: the member's status, the next trial to insert (where it starts
and from which checkpoint), and the event that explains it in words and values. No store
and no clock: the controller passes in what these need and writes what they return, so
every rule here is tested without a database.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pbtkit.core.decisions import Continue, Decision, Exploit, Stop
from pbtkit.core.policy import PBT
from pbtkit.store._base import EventRecord, MemberStatus, TrialRecord

__all__ = ["Outcome", "change_text", "failed_decision", "last_line", "outcome_of"]

_INHERIT_TEXT = {
    "hparams": " (hyperparameters only: the member keeps its own weights)",
    "weights": " (weights only: the member explores its own hyperparameters)",
    "shrink_perturb": " (weights shrunk by {shrink} and perturbed with noise {noise})",
    "transform": " (weights transformed by {transform})",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """The records one decision about one member writes.

    Attributes:
        status: The member's status afterwards (``active`` while it trains on).
        trial: The next trial to insert (``id`` 0), or None when the member stops.
        event: The event that records the decision; its ``trial_id`` is the next trial's
            once inserted (see :meth:`with_trial`).
    """

    status: MemberStatus
    trial: TrialRecord | None
    event: EventRecord

    def with_trial(self, inserted: TrialRecord) -> EventRecord:
        """The event, pointing at the next trial as inserted."""
        return dataclasses.replace(self.event, trial_id=inserted.id)


def outcome_of(
    decision: Decision,
    latest: TrialRecord,
    policy: PBT,
    *,
    hparams: Mapping[str, Any],
    donor_step: int | None,
    now: float,
    priority: float,
) -> Outcome:
    """The records a decision about ``latest``'s member writes.

    Args:
        decision: What the policy decided after ``latest`` finished.
        latest: The member's trial that just finished.
        policy: The experiment's policy (its trial lengths).
        hparams: The next trial's hyperparameters, validated against the space.
        donor_step: For an exploit that takes the donor's weights, the step its
            checkpoint reached: the copy goes on from there (steps follow the weights).
        now: The time to record.
        priority: The next trial's place in its generation's queue.

    Returns:
        The member's status, the next trial (None for a stop) and the event.
    """
    member, experiment_id = latest.member, latest.experiment_id
    if isinstance(decision, Stop):
        event = EventRecord(
            experiment_id, member, "stop", latest.id, detail=decision.reason, at=now
        )
        return Outcome("done", None, event)
    inherit: dict[str, Any] | None = None
    if isinstance(decision, Exploit):
        # "hparams": only the donor's hyperparameters; the weights stay the member's
        own = decision.inherit == "hparams"
        parent_id = latest.id if own else decision.donor_trial
        # Steps follow the weights: the copy goes on from the step the donor's checkpoint
        # reached, as in the paper (and as a copied checkpoint carries its iteration in
        # Ray Tune), so a member's steps always count the training its weights received
        # and a replay re-trains the same steps.
        start = latest.end_step if own or donor_step is None else donor_step
        if decision.inherit == "shrink_perturb":
            inherit = {"mode": "shrink_perturb", "shrink": decision.shrink, "noise": decision.noise}
        elif decision.inherit == "transform" and decision.transform is not None:
            inherit = dict(decision.transform)
        event = EventRecord(
            experiment_id,
            member,
            "exploit",
            donor_member=decision.donor_member,
            donor_trial=decision.donor_trial,
            old_hparams=dict(decision.old_hparams),
            new_hparams=dict(hparams),
            detail=change_text(decision.old_hparams, hparams)
            + _INHERIT_TEXT.get(decision.inherit, "").format(
                shrink=decision.shrink,
                noise=decision.noise,
                transform=(decision.transform or {}).get("mode"),
            ),
            at=now,
        )
    else:
        assert isinstance(decision, Continue)
        parent_id, start = latest.id, latest.end_step
        event = EventRecord(
            experiment_id,
            member,
            "continue",
            old_hparams=dict(latest.hparams),
            new_hparams=dict(hparams),
            at=now,
        )
    trial = TrialRecord(
        id=0,
        experiment_id=experiment_id,
        member=member,
        generation=latest.generation + 1,
        hparams=dict(hparams),
        parent_id=parent_id,
        start_step=start,
        end_step=start + policy.trial_steps(start),
        created_at=now,
        priority=priority,
        inherit=inherit,
    )
    return Outcome("active", trial, event)


def failed_decision(latest: TrialRecord, error: Exception, now: float) -> Outcome:
    """A decision that could not be made (a user's explore function that left the space):
    this member fails; its finished trial stays done."""
    event = EventRecord(
        latest.experiment_id,
        latest.member,
        "failed",
        latest.id,
        detail=f"no next trial could be decided after trial {latest.id}: {error}",
        at=now,
    )
    return Outcome("failed", None, event)


def change_text(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``lr: 0.1 -> 0.12, momentum: 0.9 -> inactive``: what changed, for people to read.

    A conditional hyperparameter may be absent on either side: it is said to be inactive,
    or to become so, rather than shown with a stale value or None.
    """
    shown = {k: repr(v) for k, v in old.items()}
    changes = [
        f"{k}: {shown.get(k, 'inactive')} -> {v!r}"
        for k, v in new.items()
        if k not in old or old[k] != v
    ]
    changes += [f"{k}: {shown[k]} -> inactive" for k in old if k not in new]
    return ", ".join(changes) or "no change"


def last_line(text: str) -> str:
    """The last non-empty line of a traceback: the error itself."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text
