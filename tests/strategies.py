"""Hypothesis strategies for the pure core: domains, search spaces and values inside them."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from pbtkit.core import Choice, Domain, IntUniform, LogUniform, Ordinal, SearchSpace, Uniform

__all__ = [
    "choices",
    "domains",
    "int_uniforms",
    "json_scalars",
    "log_uniforms",
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
