"""The domains of a search space: one prior per hyperparameter.

A domain knows how to draw a value from its prior (:meth:`Domain.sample`), how to check and
normalise a value a user or a config file gave (:meth:`Domain.validate`), and how to move a
value a little (:meth:`Domain.perturb`, the *explore* step of PBT). Every value a domain
hands out is a plain Python scalar (``float``, ``int``, ``str``, ``bool`` or ``None``),
never a numpy scalar, so hyperparameters can be written to JSON as they are. A domain may
carry conditions on other hyperparameters (``when=...``); :class:`~pbtkit.core.space.SearchSpace`
puts the domains together and checks that their conditions form a DAG.
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from pbtkit._exceptions import ConfigError, OutOfSpace
from pbtkit.core._specs import check_keys, real_number
from pbtkit.core._specs import json_key as _value_key
from pbtkit.core._specs import json_scalar as _plain
from pbtkit.core._specs import number_from_text as _number_from_text
from pbtkit.core.conditions import When, when_from_spec

__all__ = [
    "Choice",
    "Domain",
    "IntUniform",
    "LogUniform",
    "Ordinal",
    "Uniform",
    "conditions_of",
    "domain_from_dict",
]

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_)


def _bound(kind: str, name: str, value: Any, low: Any, high: Any) -> float:
    number = real_number(value)
    if number is None:
        raise ConfigError(
            f"{kind}(low={low!r}, high={high!r}): {name} must be a real number, "
            f"got {type(value).__name__} {value!r}"
        )
    if not math.isfinite(number):
        raise ConfigError(
            f"{kind}(low={low!r}, high={high!r}): {name} must be finite, got {value!r}"
        )
    return number


def _check_range(kind: str, low: float, high: float, shown_low: Any, shown_high: Any) -> None:
    if not low < high:
        raise ConfigError(
            f"{kind}(low={shown_low!r}, high={shown_high!r}): low must be below high; "
            f"pass low < high"
        )


class Domain(abc.ABC):
    """One hyperparameter's prior: where its values come from and where they may go.

    Subclasses are frozen dataclasses, so domains compare and hash by value. Every
    built-in domain takes ``when={parent: condition, ...}`` (see
    :mod:`pbtkit.core.conditions`): the hyperparameter is then *active*, and has a value,
    only while every condition holds; :class:`SearchSpace` checks the conditions against
    their parents.
    """

    __slots__ = ()

    @abc.abstractmethod
    def sample(self, rng: np.random.Generator) -> Any:
        """Draw a value from the prior.

        Args:
            rng: The source of randomness.

        Returns:
            A plain Python scalar inside the domain.
        """

    @abc.abstractmethod
    def validate(self, name: str, value: Any) -> Any:
        """Check that ``value`` lies in the domain and normalise it.

        Args:
            name: The hyperparameter's name, used in the error message.
            value: The value to check (numpy scalars are accepted).

        Returns:
            The value as a plain Python scalar of the domain's kind (``float`` for
            :class:`Uniform`, ``int`` for :class:`IntUniform`, the stored value for
            :class:`Choice` and :class:`Ordinal`).

        Raises:
            OutOfSpace: The value has the wrong type or lies outside the domain.
        """

    @abc.abstractmethod
    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> Any:
        """Move ``value`` a little (the explore step); the result stays in the domain.

        Args:
            value: A value inside the domain.
            factor: The perturbation factor, e.g. ``0.8`` or ``1.2``; above 1 moves up,
                below 1 moves down.
            rng: The source of randomness (used by domains without an order).

        Returns:
            The new value, a plain Python scalar inside the domain.
        """

    @abc.abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able spec that :func:`domain_from_dict` turns back into this domain."""

    def _out(self, name: str, value: Any, what: str) -> OutOfSpace:
        return OutOfSpace(f"{name}={value!r} is outside {self!r}; pass {what}")


def conditions_of(domain: Domain) -> When | None:
    """The conditions under which ``domain``'s hyperparameter is active (None: always)."""
    when = getattr(domain, "when", None)
    return when if isinstance(when, When) else None


def _when_text(domain: Domain) -> str:
    when = conditions_of(domain)
    return "" if when is None else f", when={when.to_spec()!r}"


def _with_when(spec: dict[str, Any], domain: Domain) -> dict[str, Any]:
    # Written only when there are conditions, so flat spaces store the same JSON as before.
    when = conditions_of(domain)
    if when is not None:
        spec["when"] = when.to_spec()
    return spec


# --- continuous -------------------------------------------------------------------------


def _validate_float(domain: Uniform | LogUniform, name: str, value: Any) -> float:
    number = real_number(value)
    what = f"a number in [{domain.low!r}, {domain.high!r}]"
    if number is None:
        raise OutOfSpace(
            f"{name}={value!r} ({type(value).__name__}) is not a number, so it is outside "
            f"{domain!r}; pass {what}"
        )
    if not (math.isfinite(number) and domain.low <= number <= domain.high):
        raise domain._out(name, value, what)
    return number


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


@dataclass(frozen=True, slots=True, repr=False)
class Uniform(Domain):
    """A float drawn uniformly from ``[low, high]``.

    Args:
        low: The lower bound (inclusive), a finite number.
        high: The upper bound (inclusive), a finite number above ``low``.
        when: The conditions under which the hyperparameter is active, e.g.
            ``{"optimizer": "sgd"}`` (see :mod:`pbtkit.core.conditions`).

    Raises:
        ConfigError: A bound is not a finite number, ``low >= high``, or ``when`` is
            invalid.
    """

    low: float
    high: float
    when: Mapping[str, Any] | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "when", when_from_spec(self.when))
        low = _bound("Uniform", "low", self.low, self.low, self.high)
        high = _bound("Uniform", "high", self.high, self.low, self.high)
        _check_range("Uniform", low, high, self.low, self.high)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def __repr__(self) -> str:
        return f"Uniform({self.low!r}, {self.high!r}{_when_text(self)})"

    def sample(self, rng: np.random.Generator) -> float:
        u = float(rng.random())
        # Written as a weighted mean so a huge range (high - low overflowing) stays finite.
        return _clip(self.low * (1.0 - u) + self.high * u, self.low, self.high)

    def validate(self, name: str, value: Any) -> float:
        return _validate_float(self, name, value)

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> float:
        return _clip(float(value) * factor, self.low, self.high)

    def to_dict(self) -> dict[str, Any]:
        return _with_when({"type": "uniform", "low": self.low, "high": self.high}, self)


@dataclass(frozen=True, slots=True, repr=False)
class LogUniform(Domain):
    """A positive float whose logarithm is uniform on ``[log(low), log(high)]``.

    Args:
        low: The lower bound (inclusive), a finite number above 0.
        high: The upper bound (inclusive), a finite number above ``low``.
        when: The conditions under which the hyperparameter is active, e.g.
            ``{"optimizer": "sgd"}`` (see :mod:`pbtkit.core.conditions`).

    Raises:
        ConfigError: A bound is not finite, ``low <= 0``, ``low >= high``, or ``when`` is
            invalid.
    """

    low: float
    high: float
    when: Mapping[str, Any] | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "when", when_from_spec(self.when))
        low = _bound("LogUniform", "low", self.low, self.low, self.high)
        high = _bound("LogUniform", "high", self.high, self.low, self.high)
        if low <= 0:
            raise ConfigError(
                f"LogUniform(low={self.low!r}, high={self.high!r}): low must be above 0 "
                f"(a log scale has no 0 or negatives); use Uniform for ranges that reach 0"
            )
        _check_range("LogUniform", low, high, self.low, self.high)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def __repr__(self) -> str:
        return f"LogUniform({self.low!r}, {self.high!r}{_when_text(self)})"

    def sample(self, rng: np.random.Generator) -> float:
        u = float(rng.random())
        log_low, log_high = math.log(self.low), math.log(self.high)
        return _clip(math.exp(log_low * (1.0 - u) + log_high * u), self.low, self.high)

    def validate(self, name: str, value: Any) -> float:
        return _validate_float(self, name, value)

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> float:
        return _clip(float(value) * factor, self.low, self.high)

    def to_dict(self) -> dict[str, Any]:
        return _with_when({"type": "loguniform", "low": self.low, "high": self.high}, self)


# --- integer ----------------------------------------------------------------------------


def _integral(value: Any) -> int | None:
    """``value`` as an int when it is an integer or an integral float (bools excluded)."""
    if _is_bool(value):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isfinite(number) and number.is_integer():
            return int(number)
    return None


@dataclass(frozen=True, slots=True, repr=False)
class IntUniform(Domain):
    """An integer drawn uniformly from ``low .. high``, both ends included.

    Args:
        low: The lowest value, an integer (an integral float such as ``1.0`` is accepted).
        high: The highest value, an integer above ``low``.
        when: The conditions under which the hyperparameter is active, e.g.
            ``{"optimizer": "sgd"}`` (see :mod:`pbtkit.core.conditions`).

    Raises:
        ConfigError: A bound is not an integer within the int64 range, ``low >= high``,
            or ``when`` is invalid.
    """

    low: int
    high: int
    when: Mapping[str, Any] | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "when", when_from_spec(self.when))
        bounds = []
        for which, raw in (("low", self.low), ("high", self.high)):
            value = _integral(raw)
            if value is None or not _INT64_MIN <= value <= _INT64_MAX:
                raise ConfigError(
                    f"IntUniform(low={self.low!r}, high={self.high!r}): {which} must be an "
                    f"integer in the int64 range, got {raw!r}"
                )
            bounds.append(value)
        low, high = bounds
        _check_range("IntUniform", low, high, self.low, self.high)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def __repr__(self) -> str:
        return f"IntUniform({self.low!r}, {self.high!r}{_when_text(self)})"

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high, endpoint=True))

    def validate(self, name: str, value: Any) -> int:
        number = _integral(value)
        what = f"an integer in [{self.low}, {self.high}]"
        if number is None:
            raise OutOfSpace(
                f"{name}={value!r} ({type(value).__name__}) is not an integer, so it is "
                f"outside {self!r}; pass {what}"
            )
        if not self.low <= number <= self.high:
            raise self._out(name, value, what)
        return number

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> int:
        """``round(value * factor)``, moved at least one step in the factor's direction.

        A factor above 1 moves up by at least one, below 1 down by at least one (so small
        integers do not get stuck where rounding would undo the move); a factor of exactly
        1 leaves the value alone. The result is clipped into ``[low, high]``.
        """
        current = int(value)
        # Exact arithmetic: as floats, integers beyond 2**53 would move on their own.
        moved = round(Fraction(current) * Fraction(factor))
        if factor > 1:
            moved = max(moved, current + 1)
        elif factor < 1:
            moved = min(moved, current - 1)
        return min(max(moved, self.low), self.high)

    def to_dict(self) -> dict[str, Any]:
        return _with_when({"type": "int", "low": self.low, "high": self.high}, self)


# --- discrete ---------------------------------------------------------------------------

_JSON_SCALARS = "str, int, float, bool or None"


def _discrete_values(kind: str, values: Any) -> tuple[Any, ...]:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | set | frozenset):
        raise ConfigError(
            f"{kind}({values!r}): values must be a list of {_JSON_SCALARS}, e.g. {kind}(['a', 'b'])"
        )
    if kind == "Ordinal" and isinstance(values, set | frozenset):
        raise ConfigError(
            f"Ordinal({values!r}): a set has no order; pass the values as a list in order"
        )
    items = sorted(values, key=repr) if isinstance(values, set | frozenset) else list(values)
    if not items:
        raise ConfigError(f"{kind}([]): values must not be empty; pass at least one value")
    plain = []
    seen: set[tuple[str, Any]] = set()
    for item in items:
        try:
            value = _plain(item)
        except TypeError:
            raise ConfigError(
                f"{kind}({items!r}): {item!r} ({type(item).__name__}) is not a JSON scalar; "
                f"values must be finite {_JSON_SCALARS}"
            ) from None
        key = _value_key(value)
        if key in seen:
            raise ConfigError(
                f"{kind}({items!r}): the value {item!r} appears more than once; "
                f"list each value once"
            )
        seen.add(key)
        plain.append(value)
    return tuple(plain)


class _Discrete(Domain):
    __slots__ = ()
    values: tuple[Any, ...]
    when: Mapping[str, Any] | None
    _type: ClassVar[str]

    def _index(self, value: Any) -> int | None:
        try:
            key = _value_key(_plain(value))
        except TypeError:
            return None
        for index, candidate in enumerate(self.values):
            if _value_key(candidate) == key:
                return index
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.values)!r}{_when_text(self)})"

    def sample(self, rng: np.random.Generator) -> Any:
        return self.values[int(rng.integers(len(self.values)))]

    def validate(self, name: str, value: Any) -> Any:
        index = self._index(value)
        if index is None:
            listed = ", ".join(repr(v) for v in self.values)
            raise self._out(name, value, f"one of {listed}")
        return self.values[index]

    def to_dict(self) -> dict[str, Any]:
        return _with_when({"type": self._type, "values": list(self.values)}, self)

    def _keys(self) -> tuple[tuple[str, Any], ...]:
        return tuple(_value_key(value) for value in self.values)

    # Compared the way JSON sees values: Choice([1]) is not Choice([True]).
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Discrete) or type(other) is not type(self):
            return NotImplemented
        return self._keys() == other._keys() and self.when == other.when

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._keys(), self.when))


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Choice(_Discrete):
    """A categorical value drawn uniformly from ``values``; the values have no order.

    Args:
        values: The allowed values, finite JSON scalars (``str``, ``int``, ``float``,
            ``bool``, ``None``), each once. A single value is allowed (a constant).
        when: The conditions under which the hyperparameter is active, e.g.
            ``{"optimizer": "sgd"}`` (see :mod:`pbtkit.core.conditions`).

    Raises:
        ConfigError: ``values`` is empty, holds a duplicate or a non-JSON value, or
            ``when`` is invalid.
    """

    values: tuple[Any, ...]
    when: Mapping[str, Any] | None = field(default=None, kw_only=True)
    _type: ClassVar[str] = "choice"

    def __post_init__(self) -> None:
        object.__setattr__(self, "when", when_from_spec(self.when))
        object.__setattr__(self, "values", _discrete_values("Choice", self.values))

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> Any:
        """Resample from the prior: categories have no neighbours to move to."""
        return self.sample(rng)


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Ordinal(_Discrete):
    """An ordered discrete value; the order of ``values`` as given is the order.

    Args:
        values: The allowed values in order (lowest first), finite JSON scalars, each once.
        when: The conditions under which the hyperparameter is active, e.g.
            ``{"optimizer": "sgd"}`` (see :mod:`pbtkit.core.conditions`).

    Raises:
        ConfigError: ``values`` is empty, unordered (a set), holds a duplicate or a
            non-JSON value, or ``when`` is invalid.
    """

    values: tuple[Any, ...]
    when: Mapping[str, Any] | None = field(default=None, kw_only=True)
    _type: ClassVar[str] = "ordinal"

    def __post_init__(self) -> None:
        object.__setattr__(self, "when", when_from_spec(self.when))
        object.__setattr__(self, "values", _discrete_values("Ordinal", self.values))

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> Any:
        """Move to the next higher value if ``factor > 1``, the next lower if below 1.

        The ends are sticky: the highest value stays where it is when moved up.
        """
        index = self._index(value)
        if index is None:
            raise self._out("value", value, "one of its values")
        if factor > 1:
            index = min(index + 1, len(self.values) - 1)
        elif factor < 1:
            index = max(index - 1, 0)
        return self.values[index]


# --- specs ------------------------------------------------------------------------------

_RANGE_KEYS = ("low", "high")
_VALUES_KEYS = ("values",)
_DOMAIN_TYPES: dict[str, tuple[type[Domain], tuple[str, ...]]] = {
    "uniform": (Uniform, _RANGE_KEYS),
    "loguniform": (LogUniform, _RANGE_KEYS),
    "int": (IntUniform, _RANGE_KEYS),
    "intuniform": (IntUniform, _RANGE_KEYS),
    "choice": (Choice, _VALUES_KEYS),
    "ordinal": (Ordinal, _VALUES_KEYS),
}


def domain_from_dict(spec: Mapping[str, Any]) -> Domain:
    """Build a domain from its spec, as written by :meth:`Domain.to_dict` or a config file.

    Args:
        spec: ``{"type": "uniform" | "loguniform" | "int" | "intuniform" | "choice" |
            "ordinal", ...}`` with ``low`` and ``high`` for the ranges and ``values`` for
            ``choice`` and ``ordinal``, and optionally ``when`` (the conditions under
            which it is active, see :mod:`pbtkit.core.conditions`). Numbers written as
            text (``"1e-4"``) are accepted.

    Returns:
        The domain.

    Raises:
        ConfigError: The type is unknown, a key is missing or unknown, or the domain
            itself is invalid.
    """
    valid_types = ", ".join(_DOMAIN_TYPES)
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"a domain spec must be a mapping like {{'type': 'uniform', 'low': 0, 'high': 1}}, "
            f"got {type(spec).__name__} {spec!r}"
        )
    kind = spec.get("type")
    if not isinstance(kind, str) or kind.lower() not in _DOMAIN_TYPES:
        raise ConfigError(
            f"domain spec {dict(spec)!r} has type {kind!r}; valid types: {valid_types}"
        )
    cls, keys = _DOMAIN_TYPES[kind.lower()]
    check_keys(f"domain spec {dict(spec)!r} of type {kind!r}", spec, keys, ("type", *keys, "when"))
    when = spec.get("when")
    if keys == _RANGE_KEYS:
        low, high = _number_from_text(spec["low"]), _number_from_text(spec["high"])
        return cls(low, high, when=when)  # type: ignore[call-arg]
    return cls(spec["values"], when=when)  # type: ignore[call-arg]


# --- the space --------------------------------------------------------------------------
