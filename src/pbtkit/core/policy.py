"""The PBT policy: given a finished trial and the population, decide what happens next."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import numpy as np

from pbtkit._exceptions import ConfigError
from pbtkit.core._specs import check_keys
from pbtkit.core.decisions import Continue, Decision, Exploit, MemberView, Stop
from pbtkit.core.exploit import Exploiter, Truncation, exploiter_from_dict
from pbtkit.core.explore import Explorer, Perturb, call_explorer, explorer_from_dict
from pbtkit.core.fitness import Fitness, objective_from_dict
from pbtkit.core.inheritance import (
    ShrinkPerturb,
    WeightTransform,
    check_inherit,
    inherit_from_dict,
    inherit_to_dict,
)
from pbtkit.core.population import Population
from pbtkit.core.space import SearchSpace

__all__ = ["PBT"]

_KEYS = ("objective", "exploit", "explore", "ready_every", "total_steps", "inherit")


#: Step counts stay well inside a 64-bit integer, sums of them included.
MAX_STEPS = 2**62


def _positive_int(name: str, value: Any) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not 1 <= int(value) <= MAX_STEPS
    ):
        raise ConfigError(f"PBT({name}={value!r}): {name} must be an integer in [1, 2**62]")
    return int(value)


@dataclass(frozen=True, slots=True)
class PBT:
    """Population Based Training: ready every ``ready_every`` steps, exploit, explore.

    Composed from one-verb parts; it decides and never acts. ``objective`` may be passed
    positionally, everything else by keyword::

        PBT(Objective("accuracy"), exploit=Truncation(0.2), explore=Perturb(),
            ready_every=100, total_steps=2000)

    The ablations of Jaderberg et al. 2017 (Figure 2): "exploit only" is
    ``explore=Keep()``; "explore only" is ``exploit=NoExploit()`` (every ready member
    explores its own hyperparameters and keeps its weights).

    Args:
        objective: The fitness to optimise: an :class:`Objective` or a
            :class:`MultiObjective`.
        exploit: Chooses a donor for a member (default: ``Truncation(0.2)``).
        explore: Changes the donor's hyperparameters (default: ``Perturb()``).
        ready_every: Steps per trial: a member is ready to exploit after this many.
        total_steps: The budget of steps per member.
        inherit: What an exploiting member takes from its donor: ``"all"`` (weights and
            hyperparameters, the default), ``"hparams"`` (hyperparameters only; it keeps
            its own weights), ``"weights"`` (weights only; it explores its own
            hyperparameters) or :class:`ShrinkPerturb` (the donor's weights, shrunk and
            perturbed by the training function). Carried on every :class:`Exploit`.

    Raises:
        ConfigError: A part has the wrong type or a step count is below 1.
    """

    objective: Fitness
    _: KW_ONLY
    exploit: Exploiter = field(default_factory=Truncation)
    explore: Explorer = field(default_factory=Perturb)
    ready_every: int
    total_steps: int
    inherit: str | WeightTransform = "all"

    def __post_init__(self) -> None:
        if not isinstance(self.objective, Fitness):
            raise ConfigError(
                f"PBT(objective={self.objective!r}): pass an Objective, "
                f"e.g. Objective('accuracy', 'max'), or a MultiObjective"
            )
        if not isinstance(self.exploit, Exploiter):
            raise ConfigError(
                f"PBT(exploit={self.exploit!r}): pass an Exploiter, "
                f"e.g. Truncation(0.2) or BinaryTournament()"
            )
        if not isinstance(self.explore, Explorer):
            raise ConfigError(
                f"PBT(explore={self.explore!r}): pass an Explorer, e.g. Perturb() or "
                f"Resample(), or wrap a function in CustomExplore"
            )
        object.__setattr__(self, "ready_every", _positive_int("ready_every", self.ready_every))
        object.__setattr__(self, "total_steps", _positive_int("total_steps", self.total_steps))
        object.__setattr__(self, "inherit", check_inherit(self.inherit))

    def check_space(self, space: SearchSpace) -> None:
        """Refuse settings that do not fit ``space`` (e.g. ``Perturb(per_param=...)``
        naming a hyperparameter the space lacks), so an experiment fails when it is
        created rather than at its first exploit.

        Raises:
            ConfigError: A part does not fit the space.
        """
        check = getattr(self.explore, "check_space", None)
        if callable(check):
            check(space)
        fallback = getattr(self.explore, "fallback", None)
        check = getattr(fallback, "check_space", None)
        if callable(check):
            check(space)

    def trial_steps(self, start_step: int) -> int:
        """How many steps a trial starting at ``start_step`` runs.

        Returns:
            ``min(ready_every, total_steps - start_step)``.

        Raises:
            ValueError: ``start_step`` is negative or leaves no step of the budget.
        """
        if not 0 <= start_step < self.total_steps:
            raise ValueError(
                f"start_step={start_step} leaves no steps of total_steps={self.total_steps}; "
                f"a member at its budget is stopped, not given another trial"
            )
        return min(self.ready_every, self.total_steps - start_step)

    def decide(
        self,
        member: MemberView,
        population: Population | Sequence[MemberView],
        space: SearchSpace,
        rng: np.random.Generator,
    ) -> Decision:
        """Decide a member's next trial after its latest one finished.

        A member at its budget stops (and is never exploited). Otherwise, if the exploit
        strategy names a donor, the member copies the donor (what it takes is ``inherit``,
        written on the :class:`Exploit`) and trains on with the donor's hyperparameters
        after exploration; if not, it continues as it was (a member whose score is not
        finite continues too: it ranks last, so it is replaced as soon as a donor can be
        found), or, when the exploit strategy explores a member's own values
        (``NoExploit()``), with its own hyperparameters after exploration.

        Args:
            member: The member whose trial just finished.
            population: The latest finished trial of every member, ``member`` included.
            space: The search space the explored values must stay in.
            rng: The source of randomness.

        Returns:
            :class:`Stop`, :class:`Exploit` or :class:`Continue`.
        """
        if member.step >= self.total_steps:
            return Stop("budget reached")
        pop = Population.of(population, member)
        donor = self.exploit.select_donor(member, pop, self.objective, rng)
        if donor is None:
            if self.exploit.explores_own:
                return Continue(self._explore(member.hparams, space, rng, pop))
            return Continue(dict(member.hparams))
        inherit = self.inherit
        shrink = inherit.shrink if isinstance(inherit, ShrinkPerturb) else 1.0
        noise = inherit.noise if isinstance(inherit, ShrinkPerturb) else 0.0
        return Exploit(
            donor_member=donor.member,
            donor_trial=donor.trial_id,
            # "weights": the donor's weights, the member's own hyperparameters explored
            hparams=self._explore(
                member.hparams if inherit == "weights" else donor.hparams, space, rng, pop
            ),
            old_hparams=dict(member.hparams),
            inherit=(
                "shrink_perturb"
                if isinstance(inherit, ShrinkPerturb)
                else "transform"
                if isinstance(inherit, WeightTransform)
                else inherit
            ),
            shrink=shrink,
            noise=noise,
            transform=(
                inherit.record()
                if isinstance(inherit, WeightTransform) and not isinstance(inherit, ShrinkPerturb)
                else None
            ),
        )

    def _explore(
        self,
        hparams: Mapping[str, Any],
        space: SearchSpace,
        rng: np.random.Generator,
        population: Population,
    ) -> dict[str, Any]:
        return call_explorer(
            self.explore, hparams, space, rng, population=population, objective=self.objective
        )

    def to_dict(self) -> dict[str, Any]:
        """The policy as a JSON-able spec; :meth:`from_dict` reads it back.

        ``inherit`` is written only when it is not the default ``"all"``, so the specs of
        experiments stored before it existed read back equal.
        """
        spec: dict[str, Any] = {
            "objective": self.objective.to_dict(),
            "exploit": self.exploit.to_dict(),
            "explore": self.explore.to_dict(),
            "ready_every": self.ready_every,
            "total_steps": self.total_steps,
        }
        if self.inherit != "all":
            spec["inherit"] = inherit_to_dict(self.inherit)
        return spec

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> PBT:
        """Build a policy from the spec :meth:`to_dict` writes.

        ``exploit``, ``explore`` and ``inherit`` may be left out for their defaults.

        Raises:
            ConfigError: A key is missing or unknown, or a part's spec is invalid.
        """
        if not isinstance(spec, Mapping):
            raise ConfigError(f"a policy spec must be a mapping, got {type(spec).__name__}")
        check_keys("policy spec", spec, ("objective", "ready_every", "total_steps"), _KEYS)
        exploit = exploiter_from_dict(spec["exploit"]) if "exploit" in spec else Truncation()
        explore = explorer_from_dict(spec["explore"]) if "explore" in spec else Perturb()
        return cls(
            objective_from_dict(spec["objective"]),
            exploit=exploit,
            explore=explore,
            ready_every=spec["ready_every"],
            total_steps=spec["total_steps"],
            inherit=inherit_from_dict(spec.get("inherit", "all")),
        )
