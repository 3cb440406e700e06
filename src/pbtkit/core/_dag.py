"""The conditions of a search space as a DAG: its order, and the checks that refuse a
cycle, a dangling parent, or a condition that can never hold."""

from __future__ import annotations

import bisect
import heapq
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pbtkit._exceptions import ConfigError, OutOfSpace
from pbtkit.core._specs import json_key as _value_key
from pbtkit.core._specs import real_number
from pbtkit.core.conditions import Compare, Condition, Equals, In, When
from pbtkit.core.domains import (
    Domain,
    IntUniform,
    LogUniform,
    Uniform,
    _Discrete,
    _integral,
    conditions_of,
)

__all__ = ["MAX_CONDITIONAL", "_analyse", "_names", "_not_a_domain"]

#: At most this many hyperparameters of one space may have conditions (a space arriving
#: over the network is checked in time that grows with their number and depth).
MAX_CONDITIONAL = 1000


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
