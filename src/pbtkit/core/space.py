"""The search space: one :class:`Domain` (a prior) per hyperparameter.

A domain knows how to draw a value from its prior (:meth:`Domain.sample`), how to check and
normalise a value a user or a config file gave (:meth:`Domain.validate`), and how to move a
value a little (:meth:`Domain.perturb`, the *explore* step of PBT). Every value a domain
hands out is a plain Python scalar (``float``, ``int``, ``str``, ``bool`` or ``None``),
never a numpy scalar, so hyperparameters can be written to JSON as they are.

A value never leaves its space: perturbing clips into the domain's range, and
:meth:`SearchSpace.validate` is the gate every set of hyperparameters passes through.
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from pbtkit._exceptions import ConfigError, OutOfSpace
from pbtkit.core._specs import check_keys, real_number

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

    Subclasses are frozen dataclasses, so domains compare and hash by value.
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

    Raises:
        ConfigError: A bound is not a finite number or ``low >= high``.
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        low = _bound("Uniform", "low", self.low, self.low, self.high)
        high = _bound("Uniform", "high", self.high, self.low, self.high)
        _check_range("Uniform", low, high, self.low, self.high)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def __repr__(self) -> str:
        return f"Uniform({self.low!r}, {self.high!r})"

    def sample(self, rng: np.random.Generator) -> float:
        u = float(rng.random())
        # Written as a weighted mean so a huge range (high - low overflowing) stays finite.
        return _clip(self.low * (1.0 - u) + self.high * u, self.low, self.high)

    def validate(self, name: str, value: Any) -> float:
        return _validate_float(self, name, value)

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> float:
        return _clip(float(value) * factor, self.low, self.high)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "uniform", "low": self.low, "high": self.high}


@dataclass(frozen=True, slots=True, repr=False)
class LogUniform(Domain):
    """A positive float whose logarithm is uniform on ``[log(low), log(high)]``.

    Args:
        low: The lower bound (inclusive), a finite number above 0.
        high: The upper bound (inclusive), a finite number above ``low``.

    Raises:
        ConfigError: A bound is not finite, ``low <= 0`` or ``low >= high``.
    """

    low: float
    high: float

    def __post_init__(self) -> None:
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
        return f"LogUniform({self.low!r}, {self.high!r})"

    def sample(self, rng: np.random.Generator) -> float:
        u = float(rng.random())
        log_low, log_high = math.log(self.low), math.log(self.high)
        return _clip(math.exp(log_low * (1.0 - u) + log_high * u), self.low, self.high)

    def validate(self, name: str, value: Any) -> float:
        return _validate_float(self, name, value)

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> float:
        return _clip(float(value) * factor, self.low, self.high)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "loguniform", "low": self.low, "high": self.high}


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

    Raises:
        ConfigError: A bound is not an integer within the int64 range, or ``low >= high``.
    """

    low: int
    high: int

    def __post_init__(self) -> None:
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
        return f"IntUniform({self.low!r}, {self.high!r})"

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
        return {"type": "int", "low": self.low, "high": self.high}


# --- discrete ---------------------------------------------------------------------------

_JSON_SCALARS = "str, int, float, bool or None"


def _value_key(value: Any) -> tuple[str, Any]:
    """A key that tells JSON scalars apart the way JSON does: ``True`` is not ``1``."""
    if value is None:
        return ("none", None)
    if _is_bool(value):
        return ("bool", bool(value))
    if isinstance(value, str):
        return ("str", value)
    return ("num", value)


def _plain(value: Any) -> Any:
    """A JSON scalar as a plain Python object, or raise ``TypeError`` if it is none."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise TypeError("non-finite")
        return number
    raise TypeError(type(value).__name__)


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
        return f"{type(self).__name__}({list(self.values)!r})"

    def sample(self, rng: np.random.Generator) -> Any:
        return self.values[int(rng.integers(len(self.values)))]

    def validate(self, name: str, value: Any) -> Any:
        index = self._index(value)
        if index is None:
            listed = ", ".join(repr(v) for v in self.values)
            raise self._out(name, value, f"one of {listed}")
        return self.values[index]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self._type, "values": list(self.values)}

    def _keys(self) -> tuple[tuple[str, Any], ...]:
        return tuple(_value_key(value) for value in self.values)

    # Compared the way JSON sees values: Choice([1]) is not Choice([True]).
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Discrete) or type(other) is not type(self):
            return NotImplemented
        return self._keys() == other._keys()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._keys()))


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Choice(_Discrete):
    """A categorical value drawn uniformly from ``values``; the values have no order.

    Args:
        values: The allowed values, finite JSON scalars (``str``, ``int``, ``float``,
            ``bool``, ``None``), each once. A single value is allowed (a constant).

    Raises:
        ConfigError: ``values`` is empty, holds a duplicate or a non-JSON value.
    """

    values: tuple[Any, ...]
    _type: ClassVar[str] = "choice"

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _discrete_values("Choice", self.values))

    def perturb(self, value: Any, factor: float, rng: np.random.Generator) -> Any:
        """Resample from the prior: categories have no neighbours to move to."""
        return self.sample(rng)


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Ordinal(_Discrete):
    """An ordered discrete value; the order of ``values`` as given is the order.

    Args:
        values: The allowed values in order (lowest first), finite JSON scalars, each once.

    Raises:
        ConfigError: ``values`` is empty, unordered (a set), holds a duplicate or a
            non-JSON value.
    """

    values: tuple[Any, ...]
    _type: ClassVar[str] = "ordinal"

    def __post_init__(self) -> None:
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


def _number_from_text(value: Any) -> Any:
    # YAML 1.1 reads ``1e-4`` as a string; take such bounds as the numbers they spell.
    if isinstance(value, str):
        try:
            return float(value) if not value.strip().lstrip("+-").isdigit() else int(value)
        except ValueError:
            return value
    return value


def domain_from_dict(spec: Mapping[str, Any]) -> Domain:
    """Build a domain from its spec, as written by :meth:`Domain.to_dict` or a config file.

    Args:
        spec: ``{"type": "uniform" | "loguniform" | "int" | "intuniform" | "choice" |
            "ordinal", ...}`` with ``low`` and ``high`` for the ranges and ``values`` for
            ``choice`` and ``ordinal``. Numbers written as text (``"1e-4"``) are accepted.

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
    check_keys(f"domain spec {dict(spec)!r} of type {kind!r}", spec, keys, ("type", *keys))
    if keys == _RANGE_KEYS:
        return cls(_number_from_text(spec["low"]), _number_from_text(spec["high"]))  # type: ignore[call-arg]
    return cls(spec["values"])  # type: ignore[call-arg]


# --- the space --------------------------------------------------------------------------


class SearchSpace(Mapping[str, Domain]):
    """An immutable mapping of hyperparameter names to their domains.

    Args:
        domains: The domains by name, in the order hyperparameters should be listed.

    Raises:
        ConfigError: The space is empty, a name is not a non-empty string, or a value is
            not a :class:`Domain`.
    """

    __slots__ = ("_domains",)

    def __init__(self, domains: Mapping[str, Domain]) -> None:
        if isinstance(domains, SearchSpace):
            self._domains: dict[str, Domain] = dict(domains._domains)
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

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """Draw every hyperparameter from its prior.

        Args:
            rng: The source of randomness.

        Returns:
            A fresh dict of plain Python values, in the space's order.
        """
        return {name: domain.sample(rng) for name, domain in self._domains.items()}

    def validate(self, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """Check a full set of hyperparameters against the space and normalise it.

        Args:
            hparams: A value for every hyperparameter in the space, and nothing else.

        Returns:
            The values normalised by their domains, in the space's order.

        Raises:
            OutOfSpace: A name is missing or unknown, or a value lies outside its domain.
        """
        if not isinstance(hparams, Mapping):
            raise OutOfSpace(
                f"hyperparameters must be a mapping of name -> value, "
                f"got {type(hparams).__name__} {hparams!r}"
            )
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


def _not_a_domain(name: Any, value: Any) -> str:
    hint = "pass a domain such as pk.Uniform(0, 1), pk.LogUniform(1e-4, 1e-1) or pk.Choice([...])"
    if isinstance(value, list | tuple | set | frozenset):
        hint = f"use pk.Choice({list(value)!r}) (or pk.Ordinal([...]) if the order matters)"
    elif isinstance(value, str | int | float | bool) or value is None:
        hint = f"use pk.Choice([{value!r}]) for a constant"
    return f"hyperparameter {name!r} is {type(value).__name__} {value!r}, not a domain; {hint}"
