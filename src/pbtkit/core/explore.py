"""Explore strategies: how a donor's hyperparameters are changed after an exploit.

An :class:`Explorer` is a pure function of the hyperparameters, the space and a random
generator. Every explorer returns values that lie in the space, so
``space.validate(out) == out`` always holds.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pbtkit._exceptions import ConfigError, OutOfSpace
from pbtkit.core._specs import typed_spec
from pbtkit.core.space import SearchSpace

__all__ = ["CustomExplore", "Explorer", "Perturb", "Resample", "explorer_from_dict"]


@runtime_checkable
class Explorer(Protocol):
    """Turns hyperparameters into new ones inside the same space.

    Contract: the result is a fresh dict holding every name of ``space`` with a value that
    ``space.validate`` accepts unchanged; ``hparams`` is not modified; all randomness comes
    from ``rng``.
    """

    def __call__(
        self, hparams: Mapping[str, Any], space: SearchSpace, rng: np.random.Generator
    ) -> dict[str, Any]:
        """Explore from ``hparams``; see the class docstring for the contract."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able spec that :func:`explorer_from_dict` turns back into the explorer."""
        ...


def _probability(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{owner}: {name} must be a number in [0, 1], got {value!r}")
    number = float(value)
    if not 0.0 <= number <= 1.0:  # also rejects NaN
        raise ConfigError(f"{owner}: {name}={value!r} is not a probability; pass a value in [0, 1]")
    return number


@dataclass(frozen=True, slots=True)
class Perturb:
    """Perturb each hyperparameter by a random factor, or resample it from its prior.

    For each hyperparameter independently: with probability ``resample_probability`` a new
    value is drawn from its prior; otherwise the domain's own move is applied with a factor
    drawn uniformly from ``factors`` (continuous values are multiplied and clipped, integers
    and ordinals step up or down, categorical values are resampled).

    Args:
        factors: The factors to choose from, each a finite number above 0.
        resample_probability: The chance, per hyperparameter, of resampling instead.

    Raises:
        ConfigError: ``factors`` is empty or holds a non-positive or non-finite number, or
            the probability is outside ``[0, 1]``.
    """

    factors: tuple[float, ...] = (0.8, 1.2)
    resample_probability: float = 0.25

    def __post_init__(self) -> None:
        if isinstance(self.factors, str | bytes) or not hasattr(self.factors, "__iter__"):
            raise ConfigError(
                f"Perturb(factors={self.factors!r}): factors must be a list of numbers, "
                f"e.g. (0.8, 1.2)"
            )
        factors = tuple(self.factors)
        if not factors:
            raise ConfigError("Perturb(factors=()): give at least one factor, e.g. (0.8, 1.2)")
        for factor in factors:
            if (
                isinstance(factor, bool)
                or not isinstance(factor, numbers.Real)
                or not (math.isfinite(factor) and factor > 0)
            ):
                raise ConfigError(
                    f"Perturb(factors={factors!r}): {factor!r} is not a finite number above "
                    f"0; pass factors such as (0.8, 1.2)"
                )
        object.__setattr__(self, "factors", tuple(float(factor) for factor in factors))
        object.__setattr__(
            self,
            "resample_probability",
            _probability("Perturb", "resample_probability", self.resample_probability),
        )

    def __call__(
        self, hparams: Mapping[str, Any], space: SearchSpace, rng: np.random.Generator
    ) -> dict[str, Any]:
        """Explore from ``hparams``.

        Raises:
            OutOfSpace: ``hparams`` do not lie in ``space``.
        """
        current = space.validate(hparams)
        explored: dict[str, Any] = {}
        for name, domain in space.items():
            if float(rng.random()) < self.resample_probability:
                explored[name] = domain.sample(rng)
            else:
                factor = self.factors[int(rng.integers(len(self.factors)))]
                explored[name] = domain.perturb(current[name], factor, rng)
        return explored

    def to_dict(self) -> dict[str, Any]:
        """The spec ``{"type": "perturb", "factors": [...], "resample_probability": p}``."""
        return {
            "type": "perturb",
            "factors": list(self.factors),
            "resample_probability": self.resample_probability,
        }


@dataclass(frozen=True, slots=True)
class Resample:
    """Resample each hyperparameter from its prior with ``probability``, else keep it.

    Args:
        probability: The chance, per hyperparameter, of a fresh draw.

    Raises:
        ConfigError: The probability is outside ``[0, 1]``.
    """

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
        return {
            name: domain.sample(rng) if float(rng.random()) < self.probability else current[name]
            for name, domain in space.items()
        }

    def to_dict(self) -> dict[str, Any]:
        """The spec ``{"type": "resample", "probability": p}``."""
        return {"type": "resample", "probability": self.probability}


ExploreFunction = Callable[[Mapping[str, Any], SearchSpace, np.random.Generator], Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class CustomExplore:
    """A user's explore function, checked against the space after every call.

    Args:
        fn: ``fn(hparams, space, rng) -> mapping`` of new hyperparameters.
        target: The function's import path ``"module:qualname"``, written by
            :meth:`to_dict` so a config can name it. Defaults to the path of ``fn``.

    Raises:
        ConfigError: ``fn`` is not callable or ``target`` is not ``"module:qualname"``.
    """

    fn: ExploreFunction
    target: str = field(default="")

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ConfigError(
                f"CustomExplore(fn={self.fn!r}): fn must be a function "
                f"fn(hparams, space, rng) -> dict"
            )
        target = self.target or (
            f"{getattr(self.fn, '__module__', '?')}:{getattr(self.fn, '__qualname__', '?')}"
        )
        if not _is_target(target):
            raise ConfigError(
                f"CustomExplore(target={target!r}): target must be an import path "
                f"'module:qualname', e.g. 'mypkg.search:explore'"
            )
        object.__setattr__(self, "target", target)

    def __call__(
        self, hparams: Mapping[str, Any], space: SearchSpace, rng: np.random.Generator
    ) -> dict[str, Any]:
        """Call the function and check its result.

        Raises:
            OutOfSpace: The function returned something that is not a full set of
                hyperparameters inside ``space``.
        """
        result = self.fn(dict(hparams), space, rng)
        if not isinstance(result, Mapping):
            raise OutOfSpace(
                f"your explore function {self.target} returned {type(result).__name__} "
                f"{result!r}; return a dict of name -> value for every hyperparameter"
            )
        try:
            return space.validate(result)
        except OutOfSpace as error:
            raise OutOfSpace(
                f"your explore function {self.target} returned {dict(result)!r}, which is "
                f"not in the search space: {error}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """The spec ``{"type": "custom", "target": "module:qualname"}``."""
        return {"type": "custom", "target": self.target}


def _is_target(target: Any) -> bool:
    if not isinstance(target, str):
        return False
    module_name, sep, qualname = target.rpartition(":")
    return bool(sep and module_name and qualname)


def _import_target(target: Any) -> Any:
    if not _is_target(target):
        raise ConfigError(
            f"custom explore target {target!r} must be an import path 'module:qualname', "
            f"e.g. 'mypkg.search:explore'"
        )
    # Importing runs code: the one place that names functions for workers does it.
    from pbtkit._target import load_target

    return load_target(target)


def explorer_from_dict(spec: Mapping[str, Any]) -> Explorer:
    """Build an explorer from its spec, as written by its ``to_dict``.

    Args:
        spec: ``{"type": "perturb", "factors": [...], "resample_probability": p}``,
            ``{"type": "resample", "probability": p}`` or
            ``{"type": "custom", "target": "module:qualname"}``; omitted numbers take
            their defaults.

    Returns:
        The explorer.

    Raises:
        ConfigError: The type or a key is unknown, the target cannot be imported, or a
            value is invalid.
    """
    keys_by_type = {
        "perturb": ("factors", "resample_probability"),
        "resample": ("probability",),
        "custom": ("target",),
    }
    kind, arguments = typed_spec("explore", spec, keys_by_type)
    if kind == "perturb":
        if "factors" in arguments and isinstance(arguments["factors"], list):
            arguments["factors"] = tuple(arguments["factors"])
        return Perturb(**arguments)
    if kind == "resample":
        return Resample(**arguments)
    if "target" not in spec:
        raise ConfigError(
            f"explore spec {dict(spec)!r}: missing target; a 'custom' explorer takes "
            f"the keys type, target ('module:qualname')"
        )
    fn = _import_target(spec["target"])
    return CustomExplore(fn, spec["target"])
