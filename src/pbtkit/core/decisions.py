"""Records that cross the line between the policy and the controller.

The policy sees the population as :class:`MemberView` values and answers with a
:class:`Decision` value (:class:`Continue`, :class:`Exploit` or :class:`Stop`); it never
carries a decision out itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Continue", "Decision", "Exploit", "MemberView", "Stop"]


@dataclass(frozen=True, slots=True)
class MemberView:
    """What the policy knows of one member: its latest finished trial.

    Attributes:
        member: The member's slot, ``0 .. population - 1``.
        trial_id: The id of the member's latest finished trial.
        step: The step the member's latest trial ended at (steps done so far).
        score: The objective metric of that trial as reported (not sign-adjusted);
            ``nan`` when it was not finite or not reported.
        hparams: The hyperparameters that trial trained with.
        has_checkpoint: Whether that trial left a checkpoint a donor can hand over.
    """

    member: int
    trial_id: int
    step: int
    score: float
    hparams: Mapping[str, Any] = field(default_factory=dict)
    has_checkpoint: bool = True

    def __post_init__(self) -> None:
        if self.member < 0:
            raise ValueError(f"member must be >= 0, got {self.member}")
        if self.step < 0:
            raise ValueError(f"step must be >= 0, got {self.step}")

    @property
    def finite(self) -> bool:
        """Whether the score is a real number (neither NaN nor infinite)."""
        return math.isfinite(self.score)


@dataclass(frozen=True, slots=True)
class Continue:
    """Train on from the member's own checkpoint with these hyperparameters."""

    hparams: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Exploit:
    """Copy the donor's weights (its trial's checkpoint) and train on with ``hparams``.

    ``hparams`` are the donor's hyperparameters after exploration; ``old_hparams`` are the
    target's values before, kept so the change can be recorded and explained.
    """

    donor_member: int
    donor_trial: int
    hparams: Mapping[str, Any]
    old_hparams: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Stop:
    """The member is done (its budget is spent, or it failed)."""

    reason: str


Decision = Continue | Exploit | Stop
