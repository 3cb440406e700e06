"""The search space: one :class:`Domain` (a prior) per hyperparameter.

A domain knows how to draw a value from its prior (:meth:`Domain.sample`), how to check and
normalise a value a user or a config file gave (:meth:`Domain.validate`), and how to move a
value a little (:meth:`Domain.perturb`, the *explore* step of PBT). Every value a domain
hands out is a plain Python scalar (``float``, ``int``, ``str``, ``bool`` or ``None``),
never a numpy scalar, so hyperparameters can be written to JSON as they are.

A value never leaves its space: perturbing clips into the domain's range, and
:meth:`SearchSpace.validate` is the gate every set of hyperparameters passes through.

A domain may be *conditional* (``when={"optimizer": "sgd"}``, see
:mod:`pbtkit.core.conditions`): its hyperparameter is active only while the conditions on
its parents hold. The parents form a DAG that the space checks when it is built; a member
holds exactly its active hyperparameters.
"""

from __future__ import annotations

import abc
import bisect
import heapq
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from pbtkit._exceptions import ConfigError, OutOfSpace
from pbtkit.core._specs import check_keys, real_number
from pbtkit.core._specs import json_key as _value_key
from pbtkit.core._specs import json_scalar as _plain
from pbtkit.core._specs import number_from_text as _number_from_text
from pbtkit.core.conditions import Compare, Condition, Equals, In, When, when_from_spec

__all__ = [
    "Choice",
    "Domain",
    "IntUniform",
    "LogUniform",
    "Ordinal",
    "SearchSpace",
    "Uniform",
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


#: At most this many hyperparameters of one space may have conditions (a space arriving
#: over the network is checked in time that grows with their number and depth).
MAX_CONDITIONAL = 1000


class SearchSpace(Mapping[str, Domain]):
    """An immutable mapping of hyperparameter names to their domains.

    A domain with ``when={parent: condition}`` makes its hyperparameter *conditional*:
    active, and present in a member's values, only while its conditions hold. The parents
    must form a DAG; the space is walked in topological order (:attr:`order`), so a
    member holds exactly its active hyperparameters (:meth:`sample`, :meth:`validate`).

    Args:
        domains: The domains by name, in the order hyperparameters should be listed.

    Raises:
        ConfigError: The space is empty, a name is not a non-empty string, a value is
            not a :class:`Domain`, or the conditions are invalid: a parent that is not
            in the space, a cycle, a condition that does not fit its parent's domain or
            that can never hold.
    """

    __slots__ = ("_domains", "_order", "_when")

    def __init__(self, domains: Mapping[str, Domain]) -> None:
        if isinstance(domains, SearchSpace):
            self._domains: dict[str, Domain] = dict(domains._domains)
            self._order: tuple[str, ...] = domains._order
            self._when: dict[str, When] = dict(domains._when)
            return
        if not isinstance(domains, Mapping):
            raise ConfigError(
                f"a search space must be a mapping of names to domains, e.g. "
                f"{{'lr': pk.LogUniform(1e-4, 1e-1)}}; got {type(domains).__name__}"
            )
        if not domains:
            raise ConfigError(
                "the search space is empty; give at least one hyperparameter, e.g. "
                "{'lr': pk.LogUniform(1e-4, 1e-1)}"
            )
        checked: dict[str, Domain] = {}
        for name, domain in domains.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"hyperparameter names must be non-empty strings, got {name!r}")
            if not isinstance(domain, Domain):
                raise ConfigError(_not_a_domain(name, domain))
            checked[name] = domain
        self._domains = checked
        self._when, self._order = _analyse(checked)

    def __getitem__(self, name: str) -> Domain:
        return self._domains[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._domains)

    def __len__(self) -> int:
        return len(self._domains)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SearchSpace):
            return self._domains == other._domains
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._domains.items()))

    def __repr__(self) -> str:
        return f"SearchSpace({self._domains!r})"

    @property
    def conditional(self) -> bool:
        """Whether some hyperparameter has conditions (is not always active)."""
        return bool(self._when)

    @property
    def order(self) -> tuple[str, ...]:
        """The names in topological order: every parent before the hyperparameters that
        depend on it, otherwise in the space's order (the space's order when flat)."""
        return self._order

    def conditions(self, name: str) -> When | None:
        """The conditions under which ``name`` is active (None: always active).

        Raises:
            KeyError: ``name`` is not in the space.
        """
        self._domains[name]
        return self._when.get(name)

    def parents(self, name: str) -> tuple[str, ...]:
        """The hyperparameters whose values decide whether ``name`` is active.

        Raises:
            KeyError: ``name`` is not in the space.
        """
        self._domains[name]
        when = self._when.get(name)
        return tuple(when) if when is not None else ()

    def is_active(self, name: str, values: Mapping[str, Any]) -> bool:
        """Whether ``name``'s conditions hold on ``values``.

        Args:
            name: A hyperparameter of the space.
            values: The values of the *active* hyperparameters, at least the parents of
                ``name`` (an inactive parent is absent, so what depends on it is inactive).

        Raises:
            KeyError: ``name`` is not in the space.
        """
        self._domains[name]
        when = self._when.get(name)
        return when is None or when.holds(values)

    def active(self, values: Mapping[str, Any]) -> list[str]:
        """The hyperparameters active under ``values``, in the space's order.

        Walked parents first: a parent's value counts only when the parent is active and
        has a value in ``values``, so stale values of inactive hyperparameters are ignored.
        """
        seen: dict[str, Any] = {}
        active: set[str] = set()
        for name in self._order:
            if self.is_active(name, seen):
                active.add(name)
                if name in values:
                    seen[name] = values[name]
        return [name for name in self._domains if name in active]

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw every active hyperparameter from its prior, parents first.

        In a flat space every hyperparameter is drawn, in the space's order.

        Args:
            rng: The source of randomness.

        Returns:
            A fresh dict of plain Python values, in the space's order.
        """
        if not self._when:
            return {name: domain.sample(rng) for name, domain in self._domains.items()}
        return self.complete({}, rng)

    def complete(self, values: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Make ``values`` a member of the space: walk it parents first, keep the active
        values given, draw the active ones missing from their priors, and drop the values
        that are inactive.

        The tool for your own explore function when it changes a parent:
        ``return space.complete({**hparams, "optimizer": "adam"}, rng)``.

        Args:
            values: Values by name (some may be missing or inactive).
            rng: The source of randomness for the values drawn.

        Returns:
            A fresh dict that :meth:`validate` accepts as it is, in the space's order.

        Raises:
            OutOfSpace: ``values`` is not a mapping, names a hyperparameter the space
                lacks, or holds an active value outside its domain.
        """
        self._check_names(values)
        out: dict[str, Any] = {}
        for name in self._order:
            if not self.is_active(name, out):
                continue
            domain = self._domains[name]
            given = name in values
            out[name] = domain.validate(name, values[name]) if given else domain.sample(rng)
        return {name: out[name] for name in self._domains if name in out}

    def validate(self, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Check a full set of hyperparameters against the space and normalise it.

        Args:
            hparams: A value for every *active* hyperparameter in the space (all of them
                in a flat space), and nothing else: no inactive one.

        Returns:
            The values normalised by their domains, in the space's order.

        Raises:
            OutOfSpace: A name is missing or unknown, a value lies outside its domain, or
                an inactive hyperparameter has a value.
        """
        if not isinstance(hparams, Mapping):
            raise OutOfSpace(
                f"hyperparameters must be a mapping of name -> value, "
                f"got {type(hparams).__name__} {hparams!r}"
            )
        if self._when:
            return self._validate_conditional(hparams)
        missing = [name for name in self._domains if name not in hparams]
        unknown = [repr(name) for name in hparams if name not in self._domains]
        if missing or unknown:
            problems = []
            if missing:
                problems.append(f"missing {', '.join(missing)}")
            if unknown:
                problems.append(f"unknown {', '.join(unknown)}")
            raise OutOfSpace(
                f"hyperparameters {dict(hparams)!r} do not match the search space: "
                f"{'; '.join(problems)}; give exactly the names {', '.join(self._domains)}"
            )
        return {
            name: domain.validate(name, hparams[name]) for name, domain in self._domains.items()
        }

    def _check_names(self, hparams: Mapping[str, Any]) -> None:
        if not isinstance(hparams, Mapping):
            raise OutOfSpace(
                f"hyperparameters must be a mapping of name -> value, "
                f"got {type(hparams).__name__} {hparams!r}"
            )
        unknown = [repr(name) for name in hparams if name not in self._domains]
        if unknown:
            raise OutOfSpace(
                f"hyperparameters {dict(hparams)!r} do not match the search space: unknown "
                f"{', '.join(unknown)}; its names are {_names(self._domains)}"
            )

    def _validate_conditional(self, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`validate` for a space with conditions: parents first, each value
        checked, each hyperparameter's presence checked against its conditions."""
        self._check_names(hparams)
        out: dict[str, Any] = {}
        undecided: set[str] = set()  # a parent is missing: activity unknown
        missing: list[str] = []
        inactive: list[str] = []
        for name in self._order:
            parents = self.parents(name)
            if any(parent in undecided for parent in parents):
                undecided.add(name)
                continue
            if self.is_active(name, out):
                if name in hparams:
                    out[name] = self._domains[name].validate(name, hparams[name])
                else:
                    missing.append(name)
                    undecided.add(name)
            elif name in hparams:
                inactive.append(self._why_inactive(name, out))
        if missing or inactive:
            problems = [f"missing {', '.join(missing)}"] if missing else []
            problems += [f"inactive {'; '.join(inactive)}"] if inactive else []
            raise OutOfSpace(
                f"hyperparameters {dict(hparams)!r} do not match the search space: "
                f"{'; '.join(problems)}. Give a value for every active hyperparameter and "
                f"none for an inactive one (space.complete(values, rng) drops the inactive "
                f"and draws the missing)"
            )
        return {name: out[name] for name in self._domains if name in out}

    def _why_inactive(self, name: str, values: Mapping[str, Any]) -> str:
        when = self._when[name]
        now = ", ".join(
            f"{parent} is {values[parent]!r}" if parent in values else f"{parent} is inactive"
            for parent in when
        )
        return f"{name} (it needs {when.describe()}; {now})"

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The space as JSON-able specs by name; :meth:`from_dict` reads it back."""
        return {name: domain.to_dict() for name, domain in self._domains.items()}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Mapping[str, Any]]) -> SearchSpace:
        """Build a space from specs by name (as :meth:`to_dict` writes them).

        Raises:
            ConfigError: The spec is not a mapping, or a domain spec is invalid.
        """
        if not isinstance(spec, Mapping):
            raise ConfigError(
                f"a search space spec must be a mapping of names to domain specs, "
                f"got {type(spec).__name__}"
            )
        domains: dict[str, Domain] = {}
        for name, domain_spec in spec.items():
            if not isinstance(domain_spec, Mapping):
                raise ConfigError(_not_a_domain(name, domain_spec))
            try:
                domains[name] = domain_from_dict(domain_spec)
            except ConfigError as error:
                raise ConfigError(f"hyperparameter {name!r}: {error}") from None
        return cls(domains)

    @staticmethod
    def coerce(space: SearchSpace | Mapping[str, Domain | Mapping[str, Any]]) -> SearchSpace:
        """Turn what a user may pass as a space into a :class:`SearchSpace`.

        Args:
            space: A :class:`SearchSpace`, a mapping of names to domains, or a mapping of
                names to domain specs (as read from a TOML or YAML config); both may mix.

        Returns:
            The space (the same object when it already is one).

        Raises:
            ConfigError: Something in it is neither a domain nor a valid domain spec.
        """
        if isinstance(space, SearchSpace):
            return space
        if not isinstance(space, Mapping):
            raise ConfigError(
                f"a search space must be a mapping of names to domains, e.g. "
                f"{{'lr': pk.LogUniform(1e-4, 1e-1)}}; got {type(space).__name__}"
            )
        domains: dict[str, Domain] = {}
        for name, value in space.items():
            if isinstance(value, Domain):
                domains[name] = value
            elif isinstance(value, Mapping):
                try:
                    domains[name] = domain_from_dict(value)
                except ConfigError as error:
                    raise ConfigError(f"hyperparameter {name!r}: {error}") from None
            else:
                raise ConfigError(_not_a_domain(name, value))
        return SearchSpace(domains)


def _names(names: Iterable[str], most: int = 20) -> str:
    listed = list(names)
    shown = ", ".join(repr(name) for name in listed[:most])
    return shown + (f" and {len(listed) - most} more" if len(listed) > most else "")


# --- conditions: the DAG of parents -----------------------------------------------------


def _analyse(domains: Mapping[str, Domain]) -> tuple[dict[str, When], tuple[str, ...]]:
    """The conditions by hyperparameter and the topological order, after checking that
    the parents exist, form a DAG, fit their domains and can all hold together."""
    whens = {name: when for name, domain in domains.items() if (when := conditions_of(domain))}
    if not whens:
        return {}, tuple(domains)
    if len(whens) > MAX_CONDITIONAL:
        raise ConfigError(
            f"{len(whens)} hyperparameters have conditions; a space may have at most "
            f"{MAX_CONDITIONAL}"
        )
    for name, when in whens.items():
        for parent in when:
            if parent == name:
                raise ConfigError(
                    f"hyperparameter {name!r} has a condition on itself; a condition names "
                    f"another hyperparameter (its parent)"
                )
            if parent not in domains:
                raise ConfigError(
                    f"hyperparameter {name!r} depends on {parent!r}, which is not in the "
                    f"search space (its names are {_names(domains)}); add {parent!r} to the "
                    f"space or fix the condition"
                )
    order = _topological_order(domains, whens)
    facts: dict[str, tuple[set[tuple[str, Any]], bool]] = {}  # per parent, computed once
    for name, when in whens.items():
        for parent, condition in when.items():
            _check_fits(name, parent, condition, domains[parent], facts)
    _check_satisfiable(order, whens, domains)
    return whens, order


def _topological_order(domains: Mapping[str, Domain], whens: Mapping[str, When]) -> tuple[str, ...]:
    """Parents first, otherwise the space's order (Kahn's algorithm, lowest index first).

    Raises:
        ConfigError: The conditions form a cycle (named in the message).
    """
    names = list(domains)
    index = {name: i for i, name in enumerate(names)}
    waiting = {name: len(whens[name]) if name in whens else 0 for name in names}
    children: dict[str, list[str]] = {name: [] for name in names}
    for name, when in whens.items():
        for parent in when:
            children[parent].append(name)
    ready = [index[name] for name in names if waiting[name] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        for child in children[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, index[child])
    if len(order) < len(names):
        placed = set(order)
        # Every hyperparameter left waits on a parent that is left too: follow parents
        # until one repeats, and that loop is a cycle.
        current = next(name for name in names if name not in placed)
        path: list[str] = []
        seen: dict[str, int] = {}
        while current not in seen:
            seen[current] = len(path)
            path.append(current)
            current = next(p for p in whens[current] if p not in placed)
        cycle = [*path[seen[current] :], current]
        steps = ", which depends on ".join(repr(name) for name in cycle)
        raise ConfigError(
            f"the conditions form a cycle: {steps}; a hyperparameter cannot depend on itself "
            f"through others, so remove one of these conditions"
        )
    return tuple(order)


def _is_numeric_domain(domain: Domain) -> bool:
    if isinstance(domain, Uniform | LogUniform | IntUniform):
        return True
    if isinstance(domain, _Discrete):
        return all(real_number(value) is not None for value in domain.values)
    return False


def _check_fits(
    name: str,
    parent: str,
    condition: Condition,
    domain: Domain,
    facts: dict[str, tuple[set[tuple[str, Any]], bool]],
) -> None:
    """Refuse a condition that cannot be tested on ``parent`` or can never hold on it.

    ``facts`` keeps, per parent, the keys of its listed values and whether they are all
    numbers, so a long list of values is read once however many children test it.
    """
    where = f"hyperparameter {name!r}: the condition {condition.describe(parent)}"
    if parent not in facts:
        keys = set(domain._keys()) if isinstance(domain, _Discrete) else set()
        facts[parent] = (keys, _is_numeric_domain(domain))
    keys, numeric = facts[parent]
    if isinstance(condition, Equals | In):
        values = (condition.value,) if isinstance(condition, Equals) else condition.values
        if isinstance(domain, Uniform | LogUniform):
            raise ConfigError(
                f"{where} tests a continuous value ({parent} is {domain!r}) for equality, "
                f"which almost never holds; use a comparison, e.g. {{'gte': {domain.low!r}}} "
                f"(pk.Gte(...))"
            )
        if isinstance(domain, _Discrete):
            outside = [value for value in values if _value_key(value) not in keys]
        elif isinstance(domain, IntUniform):
            outside = [
                value
                for value in values
                if (number := _integral(value)) is None or not domain.low <= number <= domain.high
            ]
        else:
            outside = [value for value in values if not _accepts(domain, parent, value)]
        if outside:
            shown = ", ".join(repr(value) for value in outside[:10])
            raise ConfigError(
                f"{where} can never hold: {shown} {'is' if len(outside) == 1 else 'are'} not "
                f"{'a value' if len(outside) == 1 else 'values'} of {parent} ({_short(domain)}); "
                f"name values its domain has"
            )
        return
    if isinstance(condition, Compare):
        if not numeric:
            if isinstance(domain, _Discrete | Uniform | LogUniform | IntUniform):
                raise ConfigError(
                    f"{where} compares, but {parent} is {_short(domain)}, whose values are not "
                    f"all numbers; list the values it must take instead, e.g. "
                    f"{{{parent!r}: [...]}}"
                )
            return  # a domain of the user's own: its range is unknown here
        if not _can_hold(domain, [condition], {}):
            raise ConfigError(
                f"{where} can never hold: {parent} is {_short(domain)}; give bounds that "
                f"some of its values meet"
            )


def _accepts(domain: Domain, name: str, value: Any) -> bool:
    try:
        domain.validate(name, value)
    except OutOfSpace:
        return False
    return True


def _short(domain: Domain) -> str:
    text = repr(domain)
    return text if len(text) <= 120 else f"{text[:117]}..."


def _can_hold(
    domain: Domain, conditions: Sequence[Condition], sorted_cache: dict[int, list[float]]
) -> bool:
    """Whether some value of ``domain`` meets every one of ``conditions`` (each already
    known to fit the domain). ``sorted_cache`` keeps the sorted numbers of listed
    domains between calls, so a long list is sorted once."""
    explicit = [c for c in conditions if isinstance(c, Equals | In)]
    if explicit:
        first = explicit[0]
        candidates = (first.value,) if isinstance(first, Equals) else first.values
        return any(all(c.holds(value) for c in conditions) for value in candidates)
    compares = [c for c in conditions if isinstance(c, Compare)]
    if len(compares) < len(conditions):
        return True  # a condition of the user's own kind: assume it can hold
    low, low_strict = max((c.lower() for c in compares), key=lambda b: (b[0], b[1]))
    high, high_strict = min((c.upper() for c in compares), key=lambda b: (b[0], not b[1]))
    if isinstance(domain, Uniform | LogUniform):
        if domain.low > low or (domain.low == low and not low_strict):
            low, low_strict = domain.low, False
        if domain.high < high or (domain.high == high and not high_strict):
            high, high_strict = domain.high, False
        return low < high or (low == high and not low_strict and not high_strict)
    if isinstance(domain, IntUniform):
        first_int = (
            domain.low
            if low == -math.inf
            else max(domain.low, math.floor(low) + 1 if low_strict else math.ceil(low))
        )
        last_int = (
            domain.high
            if high == math.inf
            else min(domain.high, math.ceil(high) - 1 if high_strict else math.floor(high))
        )
        return first_int <= last_int
    if isinstance(domain, _Discrete):
        numbers_sorted = sorted_cache.get(id(domain))
        if numbers_sorted is None:
            numbers_sorted = sorted(
                int(value) if isinstance(value, numbers.Integral) else float(value)
                for value in domain.values
                if real_number(value) is not None
            )
            sorted_cache[id(domain)] = numbers_sorted
        at = (
            bisect.bisect_right(numbers_sorted, low)
            if low_strict
            else bisect.bisect_left(numbers_sorted, low)
        )
        return at < len(numbers_sorted) and (
            numbers_sorted[at] < high if high_strict else numbers_sorted[at] <= high
        )
    return True


def _check_satisfiable(
    order: Sequence[str], whens: Mapping[str, When], domains: Mapping[str, Domain]
) -> None:
    """Refuse a hyperparameter whose conditions, with those of its ancestors, cannot all
    hold at once (e.g. it needs ``optimizer == 'sgd'`` while its parent needs ``'adam'``).

    A hyperparameter is active when each of its conditions holds and each parent is
    active; unrolled, that is the conditions of itself and of all its ancestors, each on
    one hyperparameter's value. Values are drawn independently, so they can all hold
    exactly when, for each hyperparameter they test, some value of its domain meets all
    of them. One condition alone was checked against its parent already; only a
    hyperparameter tested by two or more can hide a conflict.
    """
    testers: dict[str, list[str]] = {}  # parent -> the hyperparameters that test it
    for name in order:
        for parent in whens.get(name, ()):
            testers.setdefault(parent, []).append(name)
    shared = {parent: names for parent, names in testers.items() if len(names) > 1}
    if not shared:
        return
    ancestors: dict[str, frozenset[str]] = {}
    cache: dict[int, list[float]] = {}
    for name in order:
        when = whens.get(name)
        if when is None:
            ancestors[name] = frozenset()
            continue
        lineage = frozenset(when).union(*(ancestors[parent] for parent in when))
        ancestors[name] = lineage
        family = lineage | {name}
        for tested, names in shared.items():
            if tested not in family:
                continue
            found = [(whens[child][tested], child) for child in names if child in family]
            distinct = list(dict.fromkeys(condition for condition, _ in found))
            if len(distinct) > 1 and not _can_hold(domains[tested], distinct, cache):
                reasons = " and ".join(
                    f"{condition.describe(tested)} (for {child!r})"
                    for condition, child in found[:10]
                ) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
                raise ConfigError(
                    f"hyperparameter {name!r} can never be active: it needs {reasons}, and "
                    f"no value of {tested} ({_short(domains[tested])}) meets them all; fix "
                    f"the conditions"
                )


def _not_a_domain(name: Any, value: Any) -> str:
    hint = "pass a domain such as pk.Uniform(0, 1), pk.LogUniform(1e-4, 1e-1) or pk.Choice([...])"
    if isinstance(value, list | tuple | set | frozenset):
        hint = f"use pk.Choice({list(value)!r}) (or pk.Ordinal([...]) if the order matters)"
    elif isinstance(value, str | int | float | bool) or value is None:
        hint = f"use pk.Choice([{value!r}]) for a constant"
    return f"hyperparameter {name!r} is {type(value).__name__} {value!r}, not a domain; {hint}"
