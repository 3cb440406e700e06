"""The settings of one experiment, stored with it so that any process can act for it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from pbtkit._exceptions import ConfigError
from pbtkit.core._specs import check_keys
from pbtkit.core.policy import PBT
from pbtkit.core.space import SearchSpace

__all__ = ["EVOLUTIONS", "ExperimentSpec", "check_experiment_name"]

EVOLUTIONS = ("async", "generational")
KEEP = ("latest", "all")
#: Members per experiment: the controller reads every member at each decision.
MAX_POPULATION = 100_000
MAX_ATTEMPTS = 1_000


#: Experiment names: letters, digits, ``-``, ``_`` and ``.``, starting with a letter or a
#: digit, at most 128 characters. A name is part of URLs and folder names; nothing else in
#: it could be written safely everywhere it goes.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_experiment_name(name: Any) -> str:
    """Refuse an experiment name outside the safe alphabet.

    Raises:
        ConfigError: Saying which characters are allowed.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"experiment name {name!r} is not allowed: use 1 to 128 letters, digits, '-', "
            "'_' or '.', starting with a letter or a digit (e.g. 'resnet-lr.2')"
        )
    return name


def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ExperimentSpec:
    """Everything that defines an experiment (not how many workers run it).

    Attributes:
        space: The search space.
        policy: Fitness, exploit, explore, ready interval and budget.
        population: Number of members.
        evolution: ``"async"`` (a member is decided as soon as its trial ends) or
            ``"generational"`` (all members of a generation finish first).
        seed: Seeds the initial sample and every decision, so a run can be repeated.
        checkpoint_root: Absolute directory (or URL, later) holding the checkpoints.
        max_attempts: How often a trial is tried before its member is marked failed.
        keep_checkpoints: ``"latest"`` deletes checkpoints nothing can need any more;
            ``"all"`` keeps every one.
        initial: Starting hyperparameters of the first ``len(initial)`` members (a grid,
            or the paper's hand-set toy members); a value left out is sampled, and the
            other members are sampled from the space.
    """

    space: SearchSpace
    policy: PBT
    population: int
    checkpoint_root: str
    evolution: Literal["async", "generational"] = "async"
    seed: int = 0
    max_attempts: int = 3
    keep_checkpoints: Literal["latest", "all"] = "latest"
    initial: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        _int("population", self.population, 1, MAX_POPULATION)
        self.policy.check_space(self.space)
        _int("seed", self.seed, 0, 2**63 - 1)
        _int("max_attempts", self.max_attempts, 1, MAX_ATTEMPTS)
        if self.evolution not in EVOLUTIONS:
            raise ConfigError(
                f"evolution must be one of {', '.join(EVOLUTIONS)}, got {self.evolution!r}"
            )
        if self.keep_checkpoints not in KEEP:
            raise ConfigError(
                f"keep_checkpoints must be one of {', '.join(KEEP)}, got {self.keep_checkpoints!r}"
            )
        initial = self.initial
        if isinstance(initial, Mapping) or not isinstance(initial, Sequence | tuple):
            raise ConfigError(
                f"initial must be a list of hyperparameter dicts, one per member, got {initial!r}"
            )
        if len(initial) > self.population:
            raise ConfigError(
                f"initial names {len(initial)} members but the population is {self.population}"
            )
        checked = []
        for member, values in enumerate(initial):
            if not isinstance(values, Mapping):
                raise ConfigError(f"initial[{member}] must be a dict of hyperparameters")
            unknown = sorted(str(name) for name in values if name not in self.space)
            if unknown:
                raise ConfigError(
                    f"initial[{member}] names {', '.join(map(repr, unknown))}, not in the "
                    f"space ({', '.join(self.space)})"
                )
            try:
                entry = {
                    name: self.space[name].validate(name, value) for name, value in values.items()
                }
            except ConfigError as exc:
                raise ConfigError(f"initial[{member}]: {exc}") from None
            _check_decides(self.space, entry, member)
            checked.append(entry)
        object.__setattr__(self, "initial", tuple(checked))

    def first_hparams(self, member: int, rng: np.random.Generator) -> dict[str, Any]:
        """The hyperparameters ``member`` starts with: sampled, then its ``initial`` values.

        In a space with conditions the ``initial`` values are fixed first and the rest is
        drawn around them, parents first, so the member holds exactly its active values.
        """
        given = self.initial[member] if member < len(self.initial) else {}
        if self.space.conditional:
            return self.space.complete(given, rng)
        hparams = self.space.sample(rng)
        hparams.update(given)
        return hparams

    @property
    def metric(self) -> str:
        """The objective metric's name."""
        return self.policy.objective.metric

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON object (what the store keeps)."""
        return {
            "space": self.space.to_dict(),
            "policy": self.policy.to_dict(),
            "population": self.population,
            "checkpoint_root": self.checkpoint_root,
            "evolution": self.evolution,
            "seed": self.seed,
            "max_attempts": self.max_attempts,
            "keep_checkpoints": self.keep_checkpoints,
            "initial": [dict(values) for values in self.initial],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentSpec:
        """Inverse of :meth:`to_dict`; values keep their JSON types and are validated.

        Raises:
            ConfigError: A setting is missing, of the wrong type, or out of range.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"an experiment spec must be an object, got {type(data).__name__}")
        check_keys("the experiment spec", data, _SPEC_KEYS, (*_SPEC_KEYS, "initial"))
        if not isinstance(data["checkpoint_root"], str):
            raise ConfigError("checkpoint_root must be a string")
        return cls(
            space=SearchSpace.from_dict(data["space"]),
            policy=PBT.from_dict(data["policy"]),
            population=data["population"],
            checkpoint_root=data["checkpoint_root"],
            evolution=cast(Literal["async", "generational"], data["evolution"]),
            seed=data["seed"],
            max_attempts=data["max_attempts"],
            keep_checkpoints=cast(Literal["latest", "all"], data["keep_checkpoints"]),
            initial=tuple(data.get("initial", ())),
        )

    def differences(self, other: ExperimentSpec) -> list[str]:
        """Lines naming each setting in which ``other`` differs, e.g.
        ``policy.exploit.fraction: stored 0.2, given 0.25``."""
        return _diff(self.to_dict(), other.to_dict(), "")


_SPEC_KEYS = (
    "space",
    "policy",
    "population",
    "checkpoint_root",
    "evolution",
    "seed",
    "max_attempts",
    "keep_checkpoints",
)


def _check_decides(space: SearchSpace, entry: Mapping[str, Any], member: int) -> None:
    """Refuse an ``initial`` entry that sets a conditional hyperparameter without fixing
    the parents that make it active: drawn, they could leave it inactive."""
    for name in entry:
        when = space.conditions(name)
        if when is None:
            continue
        for parent, condition in when.items():
            if parent not in entry:
                raise ConfigError(
                    f"initial[{member}] sets {name!r}, which is active only when "
                    f"{when.describe()}; set {parent!r} too"
                )
            if not condition.holds(entry[parent]):
                raise ConfigError(
                    f"initial[{member}] sets {name!r}, which is inactive there: it needs "
                    f"{condition.describe(parent)}, and {parent!r} is {entry[parent]!r}; leave "
                    f"{name!r} out or change {parent!r}"
                )


def _diff(mine: Any, theirs: Any, path: str) -> list[str]:
    if isinstance(mine, Mapping) and isinstance(theirs, Mapping):
        out: list[str] = []
        for key in dict.fromkeys([*mine, *theirs]):
            out += _diff(mine.get(key), theirs.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if mine == theirs else [f"{path}: stored {mine!r}, given {theirs!r}"]
