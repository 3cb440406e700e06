"""Conditions: when a hyperparameter is *active*, i.e. has a value at all.

A domain given ``when={parent: condition, ...}`` is active only while every condition
holds on its parent's value (and every parent is active itself). The vocabulary is small
and reads the same in Python, TOML, YAML and JSON:

==============================  ===================================  ======================
Python                          config (TOML shown)                  holds when the parent
==============================  ===================================  ======================
``{"optimizer": "sgd"}``        ``when = { optimizer = "sgd" }``     equals the value
``{"optimizer": ["a", "b"]}``   ``when = { optimizer = ["a", "b"] }`` is one of the values
``{"layers": pk.Gte(3)}``       ``when = { layers = { gte = 3 } }``  is ``>= 3``
``pk.Gt(0)``, ``pk.Lt(5)``,     ``{ gt = 0 }``, ``{ lt = 5 }``,      compares so; bounds
``pk.Lte(5)``,                  ``{ lte = 5 }``,                     combine:
``pk.Gte(2) & pk.Lt(5)``        ``{ gte = 2, lt = 5 }``              ``2 <= layers < 5``
==============================  ===================================  ======================

Several parents in one ``when`` must all hold (there is no "or" across parents: list the
values of one parent instead). Equality and membership are for parents with listed values
(:class:`~pbtkit.core.Choice`, :class:`~pbtkit.core.Ordinal`) and integers; comparisons for
numeric parents (ranges, or listed values that are all numbers). Whether a condition fits its
parent, and whether the parents form a DAG, is checked by the
:class:`~pbtkit.core.SearchSpace` that holds them.

Everything here is built from specs that may come over the network, so every field is
checked for type and size before it is used.
"""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pbtkit._exceptions import ConfigError
from pbtkit.core._specs import json_key, json_scalar, number_from_text, real_number

__all__ = [
    "COMPARISONS",
    "MAX_IN_VALUES",
    "MAX_PARENTS",
    "Compare",
    "Condition",
    "Equals",
    "Gt",
    "Gte",
    "In",
    "Lt",
    "Lte",
    "When",
    "condition_from_spec",
]

#: The keys of a comparison spec: ``{"gte": 3}``, ``{"gt": 0, "lte": 5}``.
COMPARISONS = ("gt", "gte", "lt", "lte")
#: At most this many parents in one ``when``.
MAX_PARENTS = 32
#: At most this many values in one membership condition.
MAX_IN_VALUES = 1024

_SCALARS = "str, int, float, bool or None"


class Condition(abc.ABC):
    """A test on one parent's value. Subclasses are frozen and compare by value."""

    __slots__ = ()

    @abc.abstractmethod
    def holds(self, value: Any) -> bool:
        """Whether the parent's ``value`` satisfies the condition (False for a value of
        the wrong type, never an error)."""

    @abc.abstractmethod
    def to_spec(self) -> Any:
        """The JSON form: a scalar, a list, or ``{"gte": 3, ...}``."""

    @abc.abstractmethod
    def describe(self, parent: str) -> str:
        """The condition as text about ``parent``, e.g. ``optimizer == 'sgd'``."""


def _scalar(owner: str, value: Any) -> Any:
    try:
        return json_scalar(value)
    except TypeError:
        raise ConfigError(
            f"{owner}: {value!r} ({type(value).__name__}) is not a value a hyperparameter "
            f"can take; a condition names finite {_SCALARS}, a list of them, or a "
            f"comparison such as {{'gte': 3}}"
        ) from None


@dataclass(frozen=True, slots=True, eq=False)
class Equals(Condition):
    """The parent equals ``value`` (compared as JSON does: ``True`` is not ``1``).

    Args:
        value: A finite JSON scalar (``str``, ``int``, ``float``, ``bool`` or ``None``).

    Raises:
        ConfigError: The value is not a finite JSON scalar.
    """

    value: Any

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _scalar("Equals", self.value))

    def holds(self, value: Any) -> bool:
        try:
            return json_key(json_scalar(value)) == json_key(self.value)
        except TypeError:
            return False

    def to_spec(self) -> Any:
        return self.value

    def describe(self, parent: str) -> str:
        return f"{parent} == {self.value!r}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Equals):
            return NotImplemented
        return json_key(self.value) == json_key(other.value)

    def __hash__(self) -> int:
        return hash(("eq", json_key(self.value)))

    def __repr__(self) -> str:
        return f"Equals({self.value!r})"


@dataclass(frozen=True, slots=True, eq=False)
class In(Condition):
    """The parent is one of ``values``.

    Args:
        values: 1 to :data:`MAX_IN_VALUES` distinct finite JSON scalars.

    Raises:
        ConfigError: ``values`` is not a non-empty list of distinct JSON scalars, or too long.
    """

    values: tuple[Any, ...]
    _keys: frozenset[tuple[str, Any]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        raw = self.values
        if isinstance(raw, str | bytes | Mapping) or not isinstance(
            raw, Sequence | set | frozenset
        ):
            raise ConfigError(f"In({raw!r}): pass a list of values, e.g. ['adam', 'adamw']")
        if not 1 <= len(raw) <= MAX_IN_VALUES:
            raise ConfigError(
                f"In(...): a membership condition lists 1 to {MAX_IN_VALUES} values, got {len(raw)}"
            )
        items = sorted(raw, key=repr) if isinstance(raw, set | frozenset) else list(raw)
        values = []
        keys: set[tuple[str, Any]] = set()
        for item in items:
            value = _scalar("In", item)
            key = json_key(value)
            if key in keys:
                raise ConfigError(f"In({items!r}): {item!r} appears more than once; list it once")
            keys.add(key)
            values.append(value)
        object.__setattr__(self, "values", tuple(values))
        object.__setattr__(self, "_keys", frozenset(keys))

    def holds(self, value: Any) -> bool:
        try:
            return json_key(json_scalar(value)) in self._keys
        except TypeError:
            return False

    def to_spec(self) -> Any:
        return list(self.values)

    def describe(self, parent: str) -> str:
        return f"{parent} in {list(self.values)!r}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, In):
            return NotImplemented
        return self._keys == other._keys

    def __hash__(self) -> int:
        return hash(("in", self._keys))

    def __repr__(self) -> str:
        return f"In({list(self.values)!r})"


def _bound(key: str, value: Any) -> float:
    raw = number_from_text(value)
    number = real_number(raw)
    if number is None or not math.isfinite(number):
        raise ConfigError(
            f"a comparison's {key} must be a finite number, got {type(value).__name__} "
            f"{value!r}; e.g. {{'{key}': 3}}"
        )
    # An integer stays one: as a float, a bound beyond 2**53 would move.
    return int(raw) if isinstance(raw, numbers.Integral) else number


def _number(value: Any) -> float | None:
    """``value`` as a number to compare exactly (an integer stays an int), or None."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    number = real_number(value)
    return None if number is None or math.isnan(number) else number


@dataclass(frozen=True, slots=True)
class Compare(Condition):
    """The parent, a number, lies within the given bounds (each one optional, at least one
    given; at most one lower and one upper). Build it with :func:`Gt`, :func:`Gte`,
    :func:`Lt`, :func:`Lte`, combined with ``&``: ``Gte(2) & Lt(5)``.

    Args:
        gt: The value must be above this.
        gte: The value must be at least this.
        lt: The value must be below this.
        lte: The value must be at most this.

    Raises:
        ConfigError: No bound, two lower or two upper bounds, a bound that is not a finite
            number, or bounds that leave no number between them.
    """

    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    def __post_init__(self) -> None:
        given = {key: getattr(self, key) for key in COMPARISONS if getattr(self, key) is not None}
        if not given:
            raise ConfigError(
                "a comparison needs a bound: gt, gte, lt or lte, e.g. {'gte': 3} or pk.Gte(3)"
            )
        if ("gt" in given and "gte" in given) or ("lt" in given and "lte" in given):
            raise ConfigError(
                f"comparison {given!r}: give one lower bound (gt or gte) and one upper bound "
                f"(lt or lte) at most"
            )
        for key, value in given.items():
            object.__setattr__(self, key, _bound(key, value))
        low, low_strict = self.lower()
        high, high_strict = self.upper()
        if low > high or (low == high and (low_strict or high_strict)):
            raise ConfigError(
                f"comparison {self.to_spec()!r} can never hold: no number lies within its bounds"
            )

    def lower(self) -> tuple[float, bool]:
        """The lower bound and whether it is strict (``-inf`` when there is none)."""
        if self.gt is not None:
            return self.gt, True
        return (self.gte, False) if self.gte is not None else (-math.inf, False)

    def upper(self) -> tuple[float, bool]:
        """The upper bound and whether it is strict (``inf`` when there is none)."""
        if self.lt is not None:
            return self.lt, True
        return (self.lte, False) if self.lte is not None else (math.inf, False)

    def holds(self, value: Any) -> bool:
        number = _number(value)
        if number is None:
            return False
        low, low_strict = self.lower()
        high, high_strict = self.upper()
        above = number > low if low_strict else number >= low
        below = number < high if high_strict else number <= high
        return above and below

    def to_spec(self) -> Any:
        return {key: getattr(self, key) for key in COMPARISONS if getattr(self, key) is not None}

    def describe(self, parent: str) -> str:
        symbols = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
        return " and ".join(
            f"{parent} {symbols[key]} {value!r}" for key, value in self.to_spec().items()
        )

    def __and__(self, other: Compare) -> Compare:
        """Both bounds at once: ``Gte(2) & Lt(5)``.

        Raises:
            ConfigError: Both give a lower (or both an upper) bound, or nothing is left.
        """
        if not isinstance(other, Compare):
            return NotImplemented
        mine, theirs = self.to_spec(), other.to_spec()
        if set(mine) & set(theirs):
            raise ConfigError(
                f"{self!r} & {other!r}: both bound the same side; give one lower bound "
                f"(gt or gte) and one upper bound (lt or lte) at most"
            )
        return Compare(**mine, **theirs)

    def __repr__(self) -> str:
        return " & ".join(
            f"{name.capitalize()}({value!r})" for name, value in self.to_spec().items()
        )


def Gt(value: float) -> Compare:  # noqa: N802 - reads as the condition it builds
    """The parent must be above ``value``: ``when={"lr": pk.Gt(0.01)}``.

    Raises:
        ConfigError: ``value`` is not a finite number.
    """
    return Compare(gt=value)


def Gte(value: float) -> Compare:  # noqa: N802
    """The parent must be at least ``value``: ``when={"layers": pk.Gte(3)}``.

    Raises:
        ConfigError: ``value`` is not a finite number.
    """
    return Compare(gte=value)


def Lt(value: float) -> Compare:  # noqa: N802
    """The parent must be below ``value``: ``when={"layers": pk.Lt(3)}``.

    Raises:
        ConfigError: ``value`` is not a finite number.
    """
    return Compare(lt=value)


def Lte(value: float) -> Compare:  # noqa: N802
    """The parent must be at most ``value``: ``when={"layers": pk.Lte(2)}``.

    Raises:
        ConfigError: ``value`` is not a finite number.
    """
    return Compare(lte=value)


def condition_from_spec(spec: Any) -> Condition:
    """One parent's condition from what a user or a config file wrote.

    Args:
        spec: A :class:`Condition`; a JSON scalar (equality); a list of them
            (membership); or a mapping of comparisons ``{"gte": 3, "lt": 5}``.

    Returns:
        The condition.

    Raises:
        ConfigError: The spec is none of these, or is invalid.
    """
    if isinstance(spec, Condition):
        return spec
    if isinstance(spec, Mapping):
        keys = list(spec)
        unknown = [key for key in keys if key not in COMPARISONS]
        if unknown or len(keys) > len(COMPARISONS):
            shown = ", ".join(repr(key) for key in unknown[:5])
            raise ConfigError(f"a comparison takes the keys {', '.join(COMPARISONS)}; got {shown}")
        return Compare(**{str(key): spec[key] for key in keys})
    if isinstance(spec, list | tuple | set | frozenset):
        ordered = sorted(spec, key=repr) if isinstance(spec, set | frozenset) else spec
        return In(tuple(ordered))
    return Equals(spec)


class When(Mapping[str, Condition]):
    """The conditions of one hyperparameter, by parent; all must hold for it to be active.

    Immutable and hashable, so domains that hold one still compare and hash by value.

    Args:
        spec: ``{parent: condition, ...}``: each condition as :func:`condition_from_spec`
            reads it; 1 to :data:`MAX_PARENTS` parents.

    Raises:
        ConfigError: ``spec`` is not a mapping of parent names to conditions, is empty or
            too large, or a condition is invalid.
    """

    __slots__ = ("_conditions",)

    def __init__(self, spec: Mapping[str, Any]) -> None:
        if isinstance(spec, When):
            self._conditions: dict[str, Condition] = dict(spec._conditions)
            return
        if not isinstance(spec, Mapping):
            raise ConfigError(
                f"when must map parent hyperparameters to conditions, e.g. "
                f"{{'optimizer': 'sgd'}}; got {type(spec).__name__} {_short(spec)}"
            )
        if not 1 <= len(spec) <= MAX_PARENTS:
            raise ConfigError(
                f"when names 1 to {MAX_PARENTS} parent hyperparameters, got {len(spec)}"
            )
        conditions: dict[str, Condition] = {}
        for parent, condition in spec.items():
            if not isinstance(parent, str) or not parent:
                raise ConfigError(
                    f"when: parents are named by non-empty strings, got {_short(parent)}"
                )
            try:
                conditions[parent] = condition_from_spec(condition)
            except ConfigError as error:
                raise ConfigError(f"when {parent!r}: {error}") from None
        self._conditions = conditions

    def __getitem__(self, parent: str) -> Condition:
        return self._conditions[parent]

    def __iter__(self) -> Iterator[str]:
        return iter(self._conditions)

    def __len__(self) -> int:
        return len(self._conditions)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, When):
            return self._conditions == other._conditions
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._conditions.items()))

    def __repr__(self) -> str:
        return repr(self._conditions)

    def holds(self, values: Mapping[str, Any]) -> bool:
        """Whether every parent has a value in ``values`` that satisfies its condition."""
        return all(
            parent in values and condition.holds(values[parent])
            for parent, condition in self._conditions.items()
        )

    def describe(self) -> str:
        """``optimizer == 'sgd' and layers >= 3``."""
        return " and ".join(
            condition.describe(parent) for parent, condition in self._conditions.items()
        )

    def to_spec(self) -> dict[str, Any]:
        """The JSON form, ``{parent: condition spec}``."""
        return {parent: condition.to_spec() for parent, condition in self._conditions.items()}


def when_from_spec(spec: Any) -> When | None:
    """``None`` for no condition (``None`` or an empty mapping), else a :class:`When`.

    Raises:
        ConfigError: The spec is invalid (see :class:`When`).
    """
    if spec is None or (isinstance(spec, Mapping) and not spec):
        return None
    return When(spec)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
