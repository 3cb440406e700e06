"""Explore strategies: how a donor's hyperparameters are changed after an exploit.

An :class:`Explorer` is a pure function of the hyperparameters, the space and a random
generator. Every explorer returns values that lie in the space, so
``space.validate(out) == out`` always holds.

In a space with conditions (``when=...``) the built-in explorers walk the hyperparameters
parents first (:attr:`SearchSpace.order`) and move each *active* one by its type. A value
that stays active is the donor's, moved as usual; a value that becomes active because its
parent moved (``optimizer`` from ``"sgd"`` to ``"adam"`` brings in ``beta1``) is drawn from
its prior, since the donor never trained with it and no one value is better evidence than
the prior; a value whose conditions no longer hold is dropped.

An explorer that learns from the population (PB2) says so with a class attribute
``needs_population = True``; the policy then calls it through :func:`call_explorer` with
two more keywords, ``population`` (a :class:`~pbtkit.core.Population`) and ``objective``
(the :class:`~pbtkit.core.Fitness`). Every other explorer is called with the three
arguments only, so plain functions wrapped in :class:`CustomExplore` keep working.
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from pbtkit._exceptions import ConfigError
from pbtkit.core._registry import Plugin
from pbtkit.core._specs import check_keys, finite_number
from pbtkit.core.space import (
    Choice,
    Domain,
    IntUniform,
    LogUniform,
    Ordinal,
    SearchSpace,
    Uniform,
)

if TYPE_CHECKING:
    from pbtkit.core.fitness import Fitness
    from pbtkit.core.population import Population

__all__ = [
    "Explorer",
    "GaussianNoise",
    "Keep",
    "Perturb",
    "Resample",
    "call_explorer",
    "explorer_from_dict",
]


class Explorer(Plugin, abc.ABC, family="explore"):
    """Turns hyperparameters into new ones inside the same space.

    Contract: the result is a fresh dict holding every *active* name of ``space`` (every
    name of a flat space) with a value that ``space.validate`` accepts unchanged, and no
    inactive one; ``hparams`` is not modified; all randomness comes from ``rng``. An
    explorer with ``needs_population = True`` also takes the keywords ``population`` and
    ``objective`` (see the module docstring).

    Your own: subclass it (or wrap a plain function in :class:`CustomExplore`); it
    registers itself when defined, under its ``kind`` or its import path, like an
    :class:`~pbtkit.core.exploit.Exploiter`.
    """

    __slots__ = ()

    #: Whether the policy passes ``population`` and ``objective`` (PB2 learns from them).
    needs_population: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(
        self, hparams: Mapping[str, Any], space: SearchSpace, rng: np.random.Generator
    ) -> dict[str, Any]:
        """Explore from ``hparams``; see the class docstring for the contract."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able spec that :func:`explorer_from_dict` turns back into the explorer:
        ``{"type": kind, **settings}`` (a dataclass's fields by default)."""
        return Plugin.to_dict(self)


def _probability(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{owner}: {name} must be a number in [0, 1], got {value!r}")
    number = float(value)
    if not 0.0 <= number <= 1.0:  # also rejects NaN
        raise ConfigError(f"{owner}: {name}={value!r} is not a probability; pass a value in [0, 1]")
    return number


def _factors(subject: str, value: Any) -> tuple[float, ...]:
    """``value`` as a tuple of factors; ``subject`` names the setting in messages."""
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise ConfigError(f"{subject}: factors must be a list of numbers, e.g. (0.8, 1.2)")
    factors = tuple(value)
    if not factors:
        raise ConfigError(f"{subject}: give at least one factor, e.g. (0.8, 1.2)")
    for factor in factors:
        number = finite_number(factor)
        if number is None or number <= 0:
            raise ConfigError(
                f"{subject}: {factor!r} is not a finite number above 0; pass factors such "
                f"as (0.8, 1.2)"
            )
    return tuple(float(factor) for factor in factors)


_OVERRIDE_KEYS = ("factors", "resample_probability", "integers")
#: How :class:`Perturb` moves an integer: to the next value (the paper's rule for discrete
#: values) or scaled by the factor like a continuous one (for wide ranges: batch sizes).
INTEGER_MOVES = ("step", "scale")


def _integer_move(owner: str, value: Any) -> str:
    if value not in INTEGER_MOVES:
        raise ConfigError(
            f"{owner}: integers must be 'step' (the next lower or higher integer) or 'scale' "
            f"(round(value * factor)), got {value!r}"
        )
    return str(value)


class _Overrides(Mapping[str, Mapping[str, Any]]):
    """Per-hyperparameter settings, checked, immutable and hashable (so a policy is)."""

    __slots__ = ("_settings",)

    def __init__(self, overrides: Any) -> None:
        if not isinstance(overrides, Mapping):
            raise ConfigError(
                f"Perturb(per_param={overrides!r}): per_param must map hyperparameter names "
                f"to settings, e.g. {{'lr': {{'factors': (0.5, 2.0)}}}}"
            )
        settings: dict[str, dict[str, Any]] = {}
        for name, override in overrides.items():
            owner = f"Perturb(per_param={{{name!r}: ...}})"
            if not isinstance(name, str) or not name:
                raise ConfigError(f"Perturb(per_param=...): {name!r} is not a hyperparameter name")
            if not isinstance(override, Mapping):
                raise ConfigError(
                    f"{owner}: the settings must be a mapping with factors and/or "
                    f"resample_probability, got {override!r}"
                )
            unknown = sorted(str(key) for key in override if key not in _OVERRIDE_KEYS)
            if unknown:
                raise ConfigError(
                    f"{owner}: unknown {', '.join(unknown)}; it takes the keys "
                    f"{', '.join(_OVERRIDE_KEYS)}"
                )
            checked: dict[str, Any] = {}
            if "factors" in override:
                value = override["factors"]
                subject = f"Perturb(per_param={{{name!r}: {{'factors': {value!r}}}}})"
                checked["factors"] = _factors(subject, value)
            if "resample_probability" in override:
                checked["resample_probability"] = _probability(
                    owner, "resample_probability", override["resample_probability"]
                )
            if "integers" in override:
                checked["integers"] = _integer_move(owner, override["integers"])
            settings[name] = checked
        self._settings = settings

    def __getitem__(self, name: str) -> Mapping[str, Any]:
        return self._settings[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._settings)

    def __len__(self) -> int:
        return len(self._settings)

    def __hash__(self) -> int:
        return hash(frozenset((name, tuple(sorted(s.items()))) for name, s in self.items()))

    def __repr__(self) -> str:
        return repr(self._settings)


@dataclass(frozen=True, slots=True)
class Perturb(Explorer):
    """Perturb each hyperparameter by a random factor, or resample it from its prior.

    For each hyperparameter independently: with probability ``resample_probability`` a new
    value is drawn from its prior; otherwise the domain's own move is applied with a factor
    drawn uniformly from ``factors``. The move depends on the type (Li et al. 2019):

    - continuous (:class:`Uniform`, :class:`LogUniform`): multiplied by the factor, clipped;
    - ordinal (:class:`Ordinal`): the next higher value for a factor above 1, the next lower
      one below 1;
    - integer (:class:`IntUniform`): the next higher integer for a factor above 1, the next
      lower one below 1 (``integers="step"``, the default); or, with ``integers="scale"``,
      ``round(value * factor)`` moved at least one step that way (for wide ranges such as
      batch sizes); clipped;
    - categorical (:class:`Choice`): resampled (categories have no neighbours).

    In a space with conditions only the active values move, parents first; a value a
    parent's move brings in is drawn from its prior, one it leaves is dropped (see the
    module docstring). ``per_param`` settings apply to a value while it is active.

    ``per_param`` overrides ``factors`` and/or ``resample_probability`` for some
    hyperparameters: ``Perturb(per_param={"lr": {"factors": (0.5, 2.0)},
    "dropout": {"resample_probability": 1.0}, "batch": {"integers": "scale"}})``. Its names
    must be in the search space;
    they are checked when the explorer is used with one (:meth:`check_space`).

    Args:
        factors: The factors to choose from, each a finite number above 0.
        resample_probability: The chance, per hyperparameter, of resampling instead.
        per_param: Settings by hyperparameter name that replace the ones above for it.
        integers: ``"step"`` or ``"scale"``: how integers move (see above).

    Raises:
        ConfigError: ``factors`` is empty or holds a non-positive or non-finite number, a
            probability is outside ``[0, 1]``, ``integers`` is neither ``"step"`` nor
            ``"scale"``, or ``per_param`` has an unknown setting.
    """

    kind: ClassVar[str] = "perturb"

    factors: tuple[float, ...] = (0.8, 1.2)
    resample_probability: float = 0.25
    per_param: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    integers: str = "step"

    def __post_init__(self) -> None:
        subject = f"Perturb(factors={self.factors!r})"
        object.__setattr__(self, "factors", _factors(subject, self.factors))
        object.__setattr__(
            self,
            "resample_probability",
            _probability("Perturb", "resample_probability", self.resample_probability),
        )
        object.__setattr__(self, "per_param", _Overrides(self.per_param))
        object.__setattr__(self, "integers", _integer_move("Perturb", self.integers))

    def integer_move(self, name: str) -> str:
        """How integer hyperparameter ``name`` moves: ``"step"`` or ``"scale"``."""
        return str(self.per_param.get(name, {}).get("integers", self.integers))

    def settings(self, name: str) -> tuple[tuple[float, ...], float]:
        """The factors and the resample probability that apply to hyperparameter ``name``."""
        override = self.per_param.get(name, {})
        return (
            override.get("factors", self.factors),
            override.get("resample_probability", self.resample_probability),
        )

    def check_space(self, space: SearchSpace) -> None:
        """Refuse ``per_param`` names that are not hyperparameters of ``space``.

        Raises:
            ConfigError: A name in ``per_param`` is not in ``space``.
        """
        unknown = [name for name in self.per_param if name not in space]
        if unknown:
            raise ConfigError(
                f"Perturb(per_param=...): {', '.join(map(repr, unknown))} "
                f"{'is' if len(unknown) == 1 else 'are'} not in the search space; its "
                f"hyperparameters are {', '.join(space)}"
            )

    def __call__(
        self, hparams: Mapping[str, Any], space: SearchSpace, rng: np.random.Generator
    ) -> dict[str, Any]:
        """Explore from ``hparams``.

        Raises:
            ConfigError: ``per_param`` names a hyperparameter ``space`` does not have.
            OutOfSpace: ``hparams`` do not lie in ``space``.
        """
        if self.per_param:
            self.check_space(space)
        current = space.validate(hparams)

        def move(name: str, domain: Domain, value: Any) -> Any:
            factors, resample_probability = self.settings(name)
            if float(rng.random()) < resample_probability:
                return domain.sample(rng)
            factor = factors[int(rng.integers(len(factors)))]
            if isinstance(domain, IntUniform) and self.integer_move(name) == "step":
                step = 1 if factor > 1 else -1 if factor < 1 else 0
                return min(max(value + step, domain.low), domain.high)
            return domain.perturb(value, factor, rng)

        return _explore_each(space, current, move, rng)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Perturb:
        """Build from a spec's settings (JSON lists become tuples)."""
        check_keys(
            f"explore spec {dict(settings)!r} of type 'perturb'",
            settings,
            (),
            ("type", "factors", "resample_probability", "per_param", "integers"),
        )
        arguments = dict(settings)
        if isinstance(arguments.get("factors"), list):
            arguments["factors"] = tuple(arguments["factors"])
        return cls(**arguments)

    def to_dict(self) -> dict[str, Any]:
        """The spec ``{"type": "perturb", "factors": [...], "resample_probability": p}``,
        with ``"per_param": {name: {"factors": [...], "resample_probability": p}}`` when
        there are overrides."""
        spec: dict[str, Any] = {
            "type": "perturb",
            "factors": list(self.factors),
            "resample_probability": self.resample_probability,
        }
        if self.integers != "step":
            spec["integers"] = self.integers
        if self.per_param:
            spec["per_param"] = {
                name: {
                    key: list(value) if key == "factors" else value
                    for key, value in override.items()
                }
                for name, override in self.per_param.items()
            }
        return spec


@dataclass(frozen=True, slots=True)
class Resample(Explorer):
    """Resample each hyperparameter from its prior with ``probability``, else keep it.

    Args:
        probability: The chance, per hyperparameter, of a fresh draw.

    Raises:
        ConfigError: The probability is outside ``[0, 1]``.
    """

    kind: ClassVar[str] = "resample"

    probability: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "probability", _probability("Resample", "probability", self.probability)
        )

    def __call__(
        self, hparams: Mapping[str, Any], space: SearchSpace, rng: np.random.Generator
    ) -> dict[str, Any]:
        """Explore from ``hparams``.

        Raises:
            OutOfSpace: ``hparams`` do not lie in ``space``.
        """
        current = space.validate(hparams)

        def move(name: str, domain: Domain, value: Any) -> Any:
            return domain.sample(rng) if float(rng.random()) < self.probability else value

        return _explore_each(space, current, move, rng)

    def to_dict(self) -> dict[str, Any]:
        """The spec ``{"type": "resample", "probability": p}``."""
        return {"type": "resample", "probability": self.probability}


@dataclass(frozen=True, slots=True)
class GaussianNoise(Explorer):
    """Add Gaussian noise to every numeric hyperparameter, clipped into its domain.

    The toy problem of Jaderberg et al. 2017 (Figure 2) explores this way, with
    ``sigma=0.1``. Per domain:

    - :class:`Uniform`: ``value + sigma * N(0, 1)``;
    - :class:`LogUniform`: ``value * exp(sigma * N(0, 1))`` (noise on the log scale);
    - :class:`IntUniform`: ``value + round(sigma * N(0, 1))``;
    - :class:`Choice` and :class:`Ordinal`: kept as they are.

    Args:
        sigma: The noise's standard deviation, a finite number ``>= 0``, in the
            hyperparameter's own units (log units for :class:`LogUniform`).

    Raises:
        ConfigError: ``sigma`` is negative or not a finite number.
    """

    kind: ClassVar[str] = "gaussian"

    sigma: float = 0.1

    def __post_init__(self) -> None:
        value = self.sigma
        number = finite_number(value)
        if number is None or number < 0:
            raise ConfigError(
                f"GaussianNoise(sigma={value!r}): sigma must be a finite number >= 0, e.g. 0.1"
            )
        object.__setattr__(self, "sigma", float(value))

    def __call__(
        self, hparams: Mapping[str, Any], space: SearchSpace, rng: np.random.Generator
    ) -> dict[str, Any]:
        """Explore from ``hparams``.

        Raises:
            OutOfSpace: ``hparams`` do not lie in ``space``.
        """
        current = space.validate(hparams)
        return space.validate(_explore_each(space, current, self._move(rng), rng))

    def _move(self, rng: np.random.Generator) -> Move:
        def move(name: str, domain: Domain, value: Any) -> Any:
            if isinstance(domain, Choice | Ordinal):
                return value
            step = self.sigma * float(rng.standard_normal())
            if isinstance(domain, Uniform):
                return min(max(value + step, domain.low), domain.high)
            if isinstance(domain, LogUniform):
                log_value = math.log(value) + step
                if log_value >= math.log(domain.high):
                    return domain.high
                if log_value <= math.log(domain.low):
                    return domain.low
                # value * exp(step) keeps a zero step exact; exp(log_value) cannot overflow
                moved = value * math.exp(step) if abs(step) < 700 else math.exp(log_value)
                return min(max(moved, domain.low), domain.high)
            if isinstance(domain, IntUniform):
                bounded = max(min(step, 2.0**65), -(2.0**65))  # beyond any int64 range
                return min(max(value + round(bounded), domain.low), domain.high)
            return value

        return move

    def to_dict(self) -> dict[str, Any]:
        """The spec ``{"type": "gaussian", "sigma": s}``."""
        return {"type": "gaussian", "sigma": self.sigma}


@dataclass(frozen=True, slots=True)
class Keep(Explorer):
    """Keep the hyperparameters as they are: an exploiting member takes the donor's values
    unchanged (the "exploit only" variant of Jaderberg et al. 2017, Figure 2)."""

    kind: ClassVar[str] = "keep"

    def __call__(
        self, hparams: Mapping[str, Any], space: SearchSpace, rng: np.random.Generator
    ) -> dict[str, Any]:
        """The values as they are, checked.

        Raises:
            OutOfSpace: ``hparams`` do not lie in ``space``.
        """
        return space.validate(hparams)

    def to_dict(self) -> dict[str, Any]:
        """The spec ``{"type": "keep"}``."""
        return {"type": "keep"}


def call_explorer(
    explorer: Explorer,
    hparams: Mapping[str, Any],
    space: SearchSpace,
    rng: np.random.Generator,
    *,
    population: Population,
    objective: Fitness,
) -> dict[str, Any]:
    """Call ``explorer``, with the population and the objective if it asks for them.

    Args:
        explorer: The explorer.
        hparams: The values to explore from.
        space: The search space.
        rng: The source of randomness.
        population: The population the decision is made against.
        objective: The policy's fitness.

    Returns:
        The explored values.
    """
    if getattr(explorer, "needs_population", False):
        call: Any = explorer
        result: dict[str, Any] = call(
            hparams, space, rng, population=population, objective=objective
        )
        return result
    return explorer(hparams, space, rng)


Move = Callable[[str, Domain, Any], Any]


def _explore_each(
    space: SearchSpace, current: Mapping[str, Any], move: Move, rng: np.random.Generator
) -> dict[str, Any]:
    """Apply ``move(name, domain, value)`` to each active value of ``current`` (checked
    values of ``space``), parents first; see the module docstring for conditions.

    A flat space is walked in its own order with every value moved, exactly as before
    conditions existed, so the same seed explores the same way.
    """
    if not space.conditional:
        return {name: move(name, domain, current[name]) for name, domain in space.items()}
    explored: dict[str, Any] = {}
    for name in space.order:
        if not space.is_active(name, explored):
            continue  # inactive now: dropped
        domain = space[name]
        if name in current:
            explored[name] = move(name, domain, current[name])
        else:  # newly active: the donor never had it
            explored[name] = domain.sample(rng)
    return {name: explored[name] for name in space if name in explored}


def explorer_from_dict(spec: Mapping[str, Any]) -> Explorer:
    """Build an explorer from its spec, as written by its ``to_dict``.

    Args:
        spec: ``{"type": "perturb", "factors": [...], "resample_probability": p,
            "per_param": {...}}``, ``{"type": "resample", "probability": p}``,
            ``{"type": "gaussian", "sigma": s}``, ``{"type": "keep"}``,
            ``{"type": "pb2", ...}`` (see :class:`~pbtkit.core.PB2`),
            ``{"type": "custom", "target": "module:qualname"}``, or your own subclass's
            ``{"type": "mypkg.module:Class", **settings}``; omitted numbers take their
            defaults.

    Returns:
        The explorer.

    Raises:
        ConfigError: The type or a key is unknown, or a value is invalid. (A custom
            function is imported only when first called: see :class:`CustomExplore`.)
    """
    built: Explorer = Explorer.registry.build(spec)
    return built
