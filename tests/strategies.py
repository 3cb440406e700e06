"""Hypothesis strategies for the pure core: domains, search spaces and values inside them."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from pbtkit._exceptions import ConfigError
from pbtkit.core import Choice, Domain, IntUniform, LogUniform, Ordinal, SearchSpace, Uniform

__all__ = [
    "choices",
    "condition_holds",
    "conditional_spaces",
    "conditions_for",
    "domains",
    "int_uniforms",
    "json_scalars",
    "log_uniforms",
    "member_violations",
    "ordinals",
    "seeds",
    "space_and_hparams",
    "search_spaces",
    "uniforms",
    "value_in",
]

seeds = st.integers(min_value=0, max_value=2**32 - 1)

# Bounds reach from subnormal-tiny to near the float limit, on both sides of zero.
_finite = st.floats(
    min_value=-1e300, max_value=1e300, allow_nan=False, allow_infinity=False, allow_subnormal=True
)
_positive = st.floats(min_value=5e-324, max_value=1e300, allow_nan=False, allow_infinity=False)


@st.composite
def _ordered_pair(draw: st.DrawFn, numbers: st.SearchStrategy[float]) -> tuple[float, float]:
    low = draw(numbers)
    high = draw(numbers.filter(lambda x: x != low))
    return (low, high) if low < high else (high, low)


def uniforms() -> st.SearchStrategy[Uniform]:
    """Uniform domains: tiny, huge, negative and straddling zero."""
    return st.one_of(
        _ordered_pair(_finite),
        _ordered_pair(st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)),
        st.just((-1e300, 1e300)),
    ).map(lambda pair: Uniform(*pair))


def log_uniforms() -> st.SearchStrategy[LogUniform]:
    """LogUniform domains, from subnormal lows to huge highs."""
    return _ordered_pair(_positive).map(lambda pair: LogUniform(*pair))


def int_uniforms() -> st.SearchStrategy[IntUniform]:
    """IntUniform domains: ranges of two values up to the whole int64 range."""
    small = st.integers(min_value=-20, max_value=20)
    big = st.integers(min_value=-(2**63), max_value=2**63 - 1)
    return st.one_of(_ordered_pair(small), _ordered_pair(big), st.just((-(2**63), 2**63 - 1))).map(
        lambda pair: IntUniform(*pair)
    )


def json_scalars() -> st.SearchStrategy[Any]:
    """Finite JSON scalars."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-1000, max_value=1000),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
    )


def _json_key(value: Any) -> tuple[str, Any]:
    # JSON tells True from 1 but not 1 from 1.0.
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", value)
    return (type(value).__name__, value)


def _value_lists() -> st.SearchStrategy[list[Any]]:
    return st.lists(json_scalars(), min_size=1, max_size=6, unique_by=_json_key)


def choices() -> st.SearchStrategy[Choice]:
    """Choice domains of 1 to 6 distinct JSON scalars."""
    return _value_lists().map(Choice)


def ordinals() -> st.SearchStrategy[Ordinal]:
    """Ordinal domains of 1 to 6 distinct JSON scalars in a random order."""
    return _value_lists().map(Ordinal)


def domains() -> st.SearchStrategy[Domain]:
    """Any kind of domain."""
    return st.one_of(uniforms(), log_uniforms(), int_uniforms(), choices(), ordinals())


def search_spaces() -> st.SearchStrategy[SearchSpace]:
    """Search spaces of 1 to 5 hyperparameters."""
    # A fixed pool of names keeps generation cheap; names are opaque to the core anyway.
    names = st.sampled_from(["lr", "momentum", "batch_size", "depth", "opt", "x", "y.z", "學習率"])
    return st.dictionaries(names, domains(), min_size=1, max_size=5).map(SearchSpace)


def value_in(domain: Domain) -> st.SearchStrategy[Any]:
    """Values inside ``domain``, bounds included, as plain Python scalars."""
    if isinstance(domain, Uniform | LogUniform):
        return st.one_of(
            st.sampled_from([domain.low, domain.high]),
            st.floats(min_value=domain.low, max_value=domain.high),
        )
    if isinstance(domain, IntUniform):
        return st.one_of(
            st.sampled_from([domain.low, domain.high]),
            st.integers(min_value=domain.low, max_value=domain.high),
        )
    if isinstance(domain, Choice | Ordinal):
        return st.sampled_from(domain.values)
    raise TypeError(f"no strategy for {domain!r}")


@st.composite
def space_and_hparams(draw: st.DrawFn) -> tuple[SearchSpace, dict[str, Any]]:
    """A search space and a valid set of hyperparameters for it."""
    space = draw(search_spaces())
    hparams = {name: draw(value_in(domain)) for name, domain in space.items()}
    return space, hparams


# --- conditional spaces -----------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@st.composite
def _compare_within(
    draw: st.DrawFn, low: Any, high: Any, pick: st.SearchStrategy[Any]
) -> dict[str, Any]:
    """A comparison spec that some value ``pick`` draws (between ``low`` and ``high``,
    both among them) meets."""
    kind = draw(st.sampled_from(["gte", "lte", "gt", "lt", "range"]))
    if kind == "range":
        a, b = sorted((draw(pick), draw(pick)))
        return {"gte": a, "lte": b}
    bound = draw(pick)
    if kind == "gt" and bound >= high:
        kind = "gte"
    if kind == "lt" and bound <= low:
        kind = "lte"
    return {kind: bound}


def conditions_for(parent: Domain) -> st.SearchStrategy[Any]:
    """Condition specs (as written in config files) that some value of ``parent`` meets:
    equality and membership for listed values and integers, comparisons for numbers."""
    if isinstance(parent, Choice | Ordinal):
        values = list(parent.values)
        options: list[st.SearchStrategy[Any]] = [
            st.sampled_from(values),
            st.lists(
                st.sampled_from(values), min_size=1, max_size=len(values), unique_by=_json_key
            ),
        ]
        numbers = [v for v in values if _is_number(v)]
        if len(numbers) == len(values):
            listed = st.sampled_from(numbers)
            options.append(_compare_within(min(numbers), max(numbers), listed))
        return st.one_of(options)
    if isinstance(parent, IntUniform):
        ints = st.integers(parent.low, parent.high)
        return st.one_of(
            ints,
            st.lists(ints, min_size=1, max_size=4, unique=True),
            _compare_within(parent.low, parent.high, ints),
        )
    assert isinstance(parent, Uniform | LogUniform)
    return _compare_within(parent.low, parent.high, st.floats(parent.low, parent.high))


_NAMES = ["optimizer", "lr", "momentum", "beta1", "layers", "width.3", "學習率", "x"]


@st.composite
def conditional_spaces(draw: st.DrawFn) -> SearchSpace:
    """DAG-shaped spaces of 2 to 7 hyperparameters, most with conditions on 1 to 3 earlier
    ones, listed in a shuffled order (so the order to walk differs from the listed one).

    Conditions that cannot hold together (a child needs ``a == 1`` and its parent needs
    ``a == 2``) are refused by the space; such draws are rejected.
    """
    size = draw(st.integers(min_value=2, max_value=7))
    names = _NAMES[:size]
    built: list[Domain] = []
    for i in range(size):
        domain = draw(domains())
        if i and draw(st.integers(0, 3)):
            parents = draw(
                st.lists(st.integers(0, i - 1), min_size=1, max_size=min(3, i), unique=True)
            )
            when = {names[p]: draw(conditions_for(built[p])) for p in parents}
            domain = dataclasses.replace(domain, when=when)  # type: ignore[type-var]
        built.append(domain)
    order = draw(st.permutations(range(size)))
    try:
        return SearchSpace({names[i]: built[i] for i in order})
    except ConfigError as error:
        # Each condition fits its parent by construction; only a conflict between them
        # may be refused.
        if "can never be active" not in str(error):
            raise
        assume(False)
        raise


def condition_holds(spec: Any, value: Any) -> bool:
    """Whether the condition written as ``spec`` holds on ``value``: read from the spec,
    independently of the library's own conditions."""
    if isinstance(spec, Mapping):
        if not _is_number(value):
            return False
        tests = {
            "gt": lambda b: value > b,
            "gte": lambda b: value >= b,
            "lt": lambda b: value < b,
            "lte": lambda b: value <= b,
        }
        return all(tests[key](bound) for key, bound in spec.items())
    options = spec if isinstance(spec, list) else [spec]
    return any(_json_key(option) == _json_key(value) for option in options)


def member_violations(space: SearchSpace, values: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``values`` as a member of ``space`` (empty when nothing): an
    active hyperparameter missing, an inactive one present, a value outside its domain.

    Active is decided from the specs alone: every condition of the hyperparameter holds
    on its parent's value, and the parent has a value (is active) itself.
    """
    problems = []
    for name, domain in space.items():
        when = domain.to_dict().get("when", {})
        active = all(
            parent in values and condition_holds(condition, values[parent])
            for parent, condition in when.items()
        )
        if active and name not in values:
            problems.append(f"{name} is active but missing")
        if not active and name in values:
            problems.append(f"{name} is inactive but has {values[name]!r}")
        if name in values:
            value = values[name]
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{name}={value!r} is not finite")
            elif domain.validate(name, value) != value:
                problems.append(f"{name}={value!r} is not its domain's own value")
    problems += [f"{name} is not in the space" for name in values if name not in space]
    return problems
