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

__all__ = ["INHERIT_MODES", "Continue", "Decision", "Exploit", "MemberView", "Stop"]

#: What an exploiting member takes from its donor: ``"all"`` (weights and hyperparameters,
#: Lamarckian, the default), ``"hparams"`` (hyperparameters only: the member trains on from
#: its own weights) or ``"shrink_perturb"`` (the donor's weights, shrunk and perturbed).
INHERIT_MODES = ("all", "hparams", "weights", "shrink_perturb", "transform")


@dataclass(frozen=True, slots=True)
class MemberView:
    """What the policy knows of one member: its latest finished trial (or, from
    ``Population.recent_trials``, one finished trial of the last few generations).

    Attributes:
        member: The member's slot, ``0 .. population - 1``.
        trial_id: The id of the member's latest finished trial.
        step: The step the member's latest trial ended at (steps done so far).
        score: The objective metric of that trial as reported (not sign-adjusted);
            ``nan`` when it was not finite or not reported.
        hparams: The hyperparameters that trial trained with.
        has_checkpoint: Whether that trial left a checkpoint a donor can hand over.
        metrics: All metrics of that trial (objectives over several metrics read them).
        gain: How much the score changed over that trial: its score minus its parent
            trial's (raw, not sign-adjusted); NaN when unknown (a first trial). PB2 learns
            from it.
        generation: That trial's generation (0 for the first trials), ``-1`` when unknown.
    """

    member: int
    trial_id: int
    step: int
    score: float
    hparams: Mapping[str, Any] = field(default_factory=dict)
    has_checkpoint: bool = True
    metrics: Mapping[str, float] = field(default_factory=dict)
    gain: float = math.nan
    generation: int = -1

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
    """Train on from the member's own checkpoint with these hyperparameters.

    Usually the member's own, unchanged; with an explore-only policy
    (``NoExploit(explore=True)``) they are the member's own after exploration.
    """

    hparams: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Exploit:
    """Copy the donor's weights (its trial's checkpoint) and train on with ``hparams``.

    ``hparams`` are the donor's hyperparameters after exploration; ``old_hparams`` are the
    target's values before, kept so the change can be recorded and explained.

    ``inherit`` says what the next trial takes from the donor (see :data:`INHERIT_MODES`):

    - ``"all"``: the next trial's parent is ``donor_trial`` (weights and hyperparameters);
    - ``"hparams"``: the next trial's parent is the member's *own* latest trial; only the
      (explored) hyperparameters come from the donor;
    - ``"weights"``: the parent is ``donor_trial``, but ``hparams`` are the member's own
      after exploration (the toy of Jaderberg et al. 2017, Figure 2, copies theta only);
    - ``"shrink_perturb"``: the parent is ``donor_trial`` and the worker loads its weights
      as ``shrink * w + noise * N(0, 1)`` (see :func:`pbtkit.core.shrink_perturb`);
    - ``"transform"``: the parent is ``donor_trial`` and the worker applies your own
      :class:`~pbtkit.core.inheritance.WeightTransform`, recorded in ``transform`` as
      ``{"mode": kind, **settings}``.

    Raises:
        ValueError: ``inherit`` is unknown, or ``shrink`` / ``noise`` are out of range.
    """

    donor_member: int
    donor_trial: int
    hparams: Mapping[str, Any]
    old_hparams: Mapping[str, Any]
    inherit: str = "all"
    shrink: float = 1.0
    noise: float = 0.0
    transform: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.inherit not in INHERIT_MODES:
            raise ValueError(
                f"Exploit(inherit={self.inherit!r}): inherit must be one of "
                f"{', '.join(INHERIT_MODES)}"
            )
        if not (0.0 <= self.shrink <= 1.0 and math.isfinite(self.noise) and self.noise >= 0):
            raise ValueError(
                f"Exploit(shrink={self.shrink!r}, noise={self.noise!r}): shrink must be in "
                f"[0, 1] and noise a finite number >= 0"
            )


@dataclass(frozen=True, slots=True)
class Stop:
    """The member is done (its budget is spent, or it failed)."""

    reason: str


Decision = Continue | Exploit | Stop
