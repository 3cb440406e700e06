"""Search space: domains, validation, perturbation, specs."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbtkit._exceptions import ConfigError, OutOfSpace
from pbtkit.core import (
    Choice,
    Domain,
    IntUniform,
    LogUniform,
    Ordinal,
    SearchSpace,
    Uniform,
    domain_from_dict,
)
from tests.strategies import (
    choices,
    domains,
    int_uniforms,
    log_uniforms,
    ordinals,
    search_spaces,
    seeds,
    space_and_hparams,
    uniforms,
    value_in,
)

PLAIN = (float, int, str, bool, type(None))
FACTORS = st.sampled_from([0.5, 0.8, 0.95, 1.0, 1.05, 1.2, 2.0, 10.0])


def typed(values: dict[str, Any]) -> dict[str, tuple[type, Any]]:
    """Values with their exact types, so 1 and 1.0 and True do not compare equal."""
    return {name: (type(value), value) for name, value in values.items()}


# --- properties -------------------------------------------------------------------------


@given(domain=domains(), seed=seeds)
def test_sample_is_a_plain_value_inside_the_domain(domain: Domain, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(5):
        value = domain.sample(rng)
        assert type(value) in PLAIN
        assert typed({"x": domain.validate("x", value)}) == typed({"x": value})


@given(space=search_spaces(), seed=seeds)
def test_space_sample_validates_and_the_spec_round_trips(space: SearchSpace, seed: int) -> None:
    hparams = space.sample(np.random.default_rng(seed))
    assert list(hparams) == list(space)
    assert typed(space.validate(hparams)) == typed(hparams)
    spec = json.loads(json.dumps(space.to_dict()))
    assert SearchSpace.from_dict(spec) == space
    assert SearchSpace.coerce(spec) == space


@given(space_and_hparams())
def test_validate_is_idempotent(pair: tuple[SearchSpace, dict[str, Any]]) -> None:
    space, hparams = pair
    once = space.validate(hparams)
    assert typed(space.validate(once)) == typed(once)
    assert once == hparams


@given(st.data(), st.one_of(uniforms(), log_uniforms()), FACTORS)
def test_continuous_perturb_is_value_times_factor_clipped(
    data: st.DataObject, domain: Uniform | LogUniform, factor: float
) -> None:
    value = data.draw(value_in(domain))
    out = domain.perturb(value, factor, np.random.default_rng(0))
    assert type(out) is float
    assert out == min(max(value * factor, domain.low), domain.high)
    assert domain.validate("x", out) == out


@given(st.data(), int_uniforms(), FACTORS)
def test_int_perturb_moves_at_least_one_unless_clipped(
    data: st.DataObject, domain: IntUniform, factor: float
) -> None:
    value = data.draw(value_in(domain))
    out = domain.perturb(value, factor, np.random.default_rng(0))
    assert type(out) is int
    assert domain.low <= out <= domain.high
    if factor > 1:
        assert out >= value + 1 or out == domain.high
    elif factor < 1:
        assert out <= value - 1 or out == domain.low
    else:
        assert out == value


@pytest.mark.parametrize(
    ("value", "factor", "expected"),
    [
        (1, 1.2, 2),  # round(1.2) = 1 would not move: forced up by one
        (1, 0.8, 1),  # clipped at low
        (3, 0.8, 2),
        (50, 1.2, 60),
        (50, 0.8, 40),
        (99, 1.2, 100),  # clipped at high
        (100, 1.2, 100),
    ],
)
def test_int_perturb_examples(value: int, factor: float, expected: int) -> None:
    assert IntUniform(1, 100).perturb(value, factor, np.random.default_rng(0)) == expected


def test_int_perturb_negative_values_move_in_the_factor_direction() -> None:
    domain = IntUniform(-100, 100)
    rng = np.random.default_rng(0)
    assert domain.perturb(-10, 1.2, rng) == -9
    assert domain.perturb(-10, 0.8, rng) == -11
    assert domain.perturb(0, 1.2, rng) == 1
    assert domain.perturb(0, 0.8, rng) == -1


@given(st.data(), ordinals(), FACTORS)
def test_ordinal_moves_exactly_one_index_unless_at_an_end(
    data: st.DataObject, domain: Ordinal, factor: float
) -> None:
    index = data.draw(st.integers(min_value=0, max_value=len(domain.values) - 1))
    out = domain.perturb(domain.values[index], factor, np.random.default_rng(0))
    new_index = [i for i, v in enumerate(domain.values) if type(v) is type(out) and v == out]
    assert len(new_index) == 1
    last = len(domain.values) - 1
    if factor > 1:
        assert new_index[0] == min(index + 1, last)
    elif factor < 1:
        assert new_index[0] == max(index - 1, 0)
    else:
        assert new_index[0] == index


def test_ordinal_keeps_the_given_order() -> None:
    domain = Ordinal([32, 8, 16])
    rng = np.random.default_rng(0)
    assert domain.values == (32, 8, 16)
    assert domain.perturb(8, 1.2, rng) == 16
    assert domain.perturb(8, 0.8, rng) == 32
    assert domain.perturb(16, 1.2, rng) == 16


@given(choices(), seeds)
def test_choice_perturb_resamples_inside_the_values(domain: Choice, seed: int) -> None:
    rng = np.random.default_rng(seed)
    out = domain.perturb(domain.values[0], 1.2, rng)
    assert domain.validate("x", out) == out


def test_choice_perturb_reaches_every_value_uniformly() -> None:
    domain = Choice(["a", "b", "c", "d"])
    rng = np.random.default_rng(7)
    counts = Counter(domain.perturb("a", 0.8, rng) for _ in range(4000))
    assert set(counts) == {"a", "b", "c", "d"}
    assert all(800 < count < 1200 for count in counts.values()), counts


def test_loguniform_samples_evenly_per_decade() -> None:
    domain = LogUniform(1e-4, 1.0)
    rng = np.random.default_rng(3)
    decades = Counter(math.floor(math.log10(domain.sample(rng))) for _ in range(8000))
    assert set(decades) == {-4, -3, -2, -1}
    assert all(1700 < count < 2300 for count in decades.values()), decades


def test_int_uniform_samples_both_ends() -> None:
    domain = IntUniform(0, 2)
    rng = np.random.default_rng(5)
    assert {domain.sample(rng) for _ in range(200)} == {0, 1, 2}


@given(domains())
def test_domain_spec_round_trips_through_json(domain: Domain) -> None:
    spec = json.loads(json.dumps(domain.to_dict()))
    assert domain_from_dict(spec) == domain


# --- normalisation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "value", "expected"),
    [
        (Uniform(0, 10), 3, 3.0),
        (Uniform(0, 10), np.float32(2.5), 2.5),
        (Uniform(0, 10), np.int64(4), 4.0),
        (LogUniform(1e-3, 1), np.float64(0.01), 0.01),
        (IntUniform(0, 10), 3.0, 3),
        (IntUniform(0, 10), np.int64(7), 7),
        (IntUniform(0, 10), np.float64(2.0), 2),
        (Choice([1, 2]), 1.0, 1),
        (Choice([1, 2]), np.int64(2), 2),
        (Choice([1, True]), True, True),
        (Choice([1, True]), 1, 1),
        (Choice(["a", None]), None, None),
        (Ordinal([0.5, 1.5]), np.float32(1.5), 1.5),
    ],
)
def test_validate_normalises_to_plain_python(domain: Domain, value: Any, expected: Any) -> None:
    out = domain.validate("x", value)
    assert out == expected
    assert type(out) is type(expected)


def test_uniform_normalises_its_bounds() -> None:
    domain = Uniform(0, 1)
    assert (type(domain.low), type(domain.high)) == (float, float)
    assert domain == Uniform(0.0, 1.0)
    assert hash(domain) == hash(Uniform(0.0, 1.0))
    assert IntUniform(1.0, 3.0) == IntUniform(1, 3)


def test_reprs() -> None:
    assert repr(Uniform(0, 1)) == "Uniform(0.0, 1.0)"
    assert repr(LogUniform(1e-4, 0.1)) == "LogUniform(0.0001, 0.1)"
    assert repr(IntUniform(1, 8)) == "IntUniform(1, 8)"
    assert repr(Choice(["a", "b"])) == "Choice(['a', 'b'])"
    assert repr(Ordinal([1, 2])) == "Ordinal([1, 2])"


def test_discrete_equality_follows_json() -> None:
    assert Choice([1, 2]) == Choice([1.0, 2.0])
    assert Choice([1]) != Choice([True])
    assert Choice([1, 2]) != Ordinal([1, 2])
    assert Ordinal([1, 2]) != Ordinal([2, 1])
    assert len({Choice(["a"]), Choice(["a"]), Ordinal(["a"])}) == 2


def test_choice_accepts_a_set_in_a_stable_order() -> None:
    assert Choice({"b", "a", "c"}).values == ("a", "b", "c")


# --- bad input --------------------------------------------------------------------------

BAD_DOMAINS: list[tuple[Callable[[], Any], str]] = [
    (lambda: Uniform(1, 0), "Uniform(low=1, high=0): low must be below high"),
    (lambda: Uniform(1, 1), "low must be below high"),
    (lambda: Uniform(0, math.inf), "high must be finite"),
    (lambda: Uniform(math.nan, 1), "low must be finite"),
    (lambda: Uniform("0", 1), "low must be a real number"),
    (lambda: Uniform(True, 2), "low must be a real number"),
    (lambda: LogUniform(0, 1), "low must be above 0"),
    (lambda: LogUniform(-1, 1), "low must be above 0"),
    (lambda: LogUniform(0.1, 0.01), "low must be below high"),
    (lambda: LogUniform(1e-3, math.inf), "high must be finite"),
    (lambda: IntUniform(5, 5), "low must be below high"),
    (lambda: IntUniform(0, 2.5), "high must be an integer"),
    (lambda: IntUniform(0, 2**64), "int64"),
    (lambda: Choice([]), "values must not be empty"),
    (lambda: Ordinal([]), "values must not be empty"),
    (lambda: Choice(["a", "a"]), "appears more than once"),
    (lambda: Choice([1, 1.0]), "appears more than once"),
    (lambda: Ordinal([2, 1, 2]), "appears more than once"),
    (lambda: Choice([[1, 2]]), "is not a JSON scalar"),
    (lambda: Choice([{"a": 1}]), "is not a JSON scalar"),
    (lambda: Choice([object()]), "is not a JSON scalar"),
    (lambda: Choice([math.nan]), "is not a JSON scalar"),
    (lambda: Choice("abc"), "values must be a list"),
    (lambda: Choice(3), "values must be a list"),
    (lambda: Ordinal({1, 2}), "a set has no order"),
]


@pytest.mark.parametrize(("build", "fragment"), BAD_DOMAINS)
def test_bad_domains_are_config_errors(build: Callable[[], Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        build()
    assert fragment in str(error.value)


BAD_VALUES: list[tuple[Domain, Any, str]] = [
    (LogUniform(1e-4, 0.1), 2.0, "lr=2.0 is outside LogUniform(0.0001, 0.1); pass a number in"),
    (Uniform(0, 1), -0.5, "outside Uniform(0.0, 1.0)"),
    (Uniform(0, 1), math.nan, "outside Uniform(0.0, 1.0)"),
    (Uniform(-math.pi, math.pi), math.inf, "outside Uniform"),
    (Uniform(0, 1), "0.5", "is not a number"),
    (Uniform(0, 1), True, "is not a number"),
    (Uniform(0, 1), None, "is not a number"),
    (IntUniform(1, 8), 3.5, "is not an integer"),
    (IntUniform(1, 8), True, "is not an integer"),
    (IntUniform(1, 8), math.nan, "is not an integer"),
    (IntUniform(1, 8), 9, "an integer in [1, 8]"),
    (Choice(["sgd", "adam"]), "rmsprop", "one of 'sgd', 'adam'"),
    (Choice([1, 2]), True, "one of 1, 2"),
    (Choice([True, False]), 1, "one of True, False"),
    (Ordinal([1, 2, 4]), 3, "one of 1, 2, 4"),
    (Ordinal([1, 2, 4]), [1], "outside Ordinal([1, 2, 4])"),
]


@pytest.mark.parametrize(("domain", "value", "fragment"), BAD_VALUES)
def test_values_outside_the_domain_are_out_of_space(
    domain: Domain, value: Any, fragment: str
) -> None:
    with pytest.raises(OutOfSpace) as error:
        domain.validate("lr", value)
    assert fragment in str(error.value)
    assert "lr=" in str(error.value)


@given(st.data(), st.one_of(uniforms(), log_uniforms(), int_uniforms()))
def test_values_just_outside_a_range_are_rejected(
    data: st.DataObject, domain: Uniform | LogUniform | IntUniform
) -> None:
    below = domain.low - 1 if isinstance(domain, IntUniform) else np.nextafter(domain.low, -np.inf)
    above = domain.high + 1 if isinstance(domain, IntUniform) else np.nextafter(domain.high, np.inf)
    value = data.draw(st.sampled_from([below, above]))
    with pytest.raises(OutOfSpace, match="outside"):
        domain.validate("x", value)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"type": "gaussian", "mu": 0}, "valid types: uniform, loguniform, int, intuniform"),
        ({"low": 0, "high": 1}, "has type None; valid types"),
        ({"type": "uniform", "low": 0}, "missing high"),
        ({"type": "uniform", "low": 0, "high": 1, "step": 2}, "unknown step"),
        ({"type": "choice"}, "of type 'choice': missing values; it takes the keys type, values"),
        ({"type": "loguniform", "low": 0, "high": 1}, "low must be above 0"),
        ({"type": "uniform", "low": "zero", "high": 1}, "low must be a real number"),
        (["uniform", 0, 1], "a domain spec must be a mapping"),
    ],
)
def test_bad_domain_specs(spec: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        domain_from_dict(spec)
    assert fragment in str(error.value)


def test_domain_specs_accept_aliases_and_numbers_as_text() -> None:
    # YAML 1.1 reads 1e-4 as the string "1e-4".
    assert domain_from_dict({"type": "loguniform", "low": "1e-4", "high": "1e-1"}) == LogUniform(
        1e-4, 0.1
    )
    assert domain_from_dict({"type": "intuniform", "low": "1", "high": 8}) == IntUniform(1, 8)
    assert domain_from_dict({"type": "INT", "low": 1, "high": 8}) == IntUniform(1, 8)


# --- the space --------------------------------------------------------------------------


def make_space() -> SearchSpace:
    return SearchSpace(
        {
            "lr": LogUniform(1e-4, 1e-1),
            "momentum": Uniform(0, 0.99),
            "batch": IntUniform(16, 256),
            "optimizer": Choice(["sgd", "adam"]),
            "depth": Ordinal([2, 4, 8]),
        }
    )


def test_space_is_an_immutable_mapping() -> None:
    space = make_space()
    assert len(space) == 5
    assert space["lr"] == LogUniform(1e-4, 1e-1)
    assert list(space) == ["lr", "momentum", "batch", "optimizer", "depth"]
    with pytest.raises(TypeError):
        space["lr"] = Uniform(0, 1)  # type: ignore[index]
    with pytest.raises(AttributeError):
        space.extra = 1  # type: ignore[attr-defined]


def test_space_equality_is_by_contents() -> None:
    assert make_space() == make_space()
    assert hash(make_space()) == hash(make_space())
    assert make_space() != SearchSpace({"lr": LogUniform(1e-4, 1e-1)})
    reordered = SearchSpace(dict(reversed(list(make_space().items()))))
    assert reordered == make_space()


def test_space_validate_normalises_in_space_order() -> None:
    space = make_space()
    given_values = {
        "depth": 4,
        "optimizer": "adam",
        "batch": 32.0,
        "momentum": 0,
        "lr": np.float64(0.01),
    }
    out = space.validate(given_values)
    assert list(out) == list(space)
    assert typed(out) == typed(
        {"lr": 0.01, "momentum": 0.0, "batch": 32, "optimizer": "adam", "depth": 4}
    )


def test_space_validate_lists_missing_and_unknown_names() -> None:
    space = make_space()
    with pytest.raises(OutOfSpace) as error:
        space.validate({"lr": 0.01, "momentum": 0.9, "batch": 32, "optimiser": "sgd"})
    message = str(error.value)
    assert "missing optimizer, depth" in message
    assert "unknown 'optimiser'" in message
    assert "give exactly the names lr, momentum, batch, optimizer, depth" in message


def test_space_validate_names_the_bad_value() -> None:
    space = make_space()
    values = {"lr": 2.0, "momentum": 0.9, "batch": 32, "optimizer": "sgd", "depth": 2}
    with pytest.raises(OutOfSpace, match=r"lr=2.0 is outside LogUniform\(0.0001, 0.1\)"):
        space.validate(values)
    with pytest.raises(OutOfSpace, match="hyperparameters must be a mapping"):
        space.validate([("lr", 0.01)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("domains_given", "fragment"),
    [
        ({}, "the search space is empty"),
        ({"": Uniform(0, 1)}, "names must be non-empty strings"),
        ({3: Uniform(0, 1)}, "names must be non-empty strings"),
        ({"opt": ["sgd", "adam"]}, "use pk.Choice(['sgd', 'adam'])"),
        ({"lr": 0.1}, "use pk.Choice([0.1]) for a constant"),
        ({"lr": {"type": "uniform", "low": 0, "high": 1}}, "not a domain"),
        ([("lr", Uniform(0, 1))], "must be a mapping of names to domains"),
    ],
)
def test_bad_spaces(domains_given: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        SearchSpace(domains_given)
    assert fragment in str(error.value)


def test_coerce_accepts_spaces_domains_and_specs() -> None:
    space = make_space()
    assert SearchSpace.coerce(space) is space
    assert SearchSpace.coerce(dict(space)) == space
    mixed = {name: domain.to_dict() for name, domain in space.items()}
    mixed["lr"] = space["lr"]  # type: ignore[assignment]
    assert SearchSpace.coerce(mixed) == space


@pytest.mark.parametrize(
    ("given_space", "fragment"),
    [
        ({"opt": ["sgd", "adam"]}, "use pk.Choice(['sgd', 'adam'])"),
        ({"lr": {"type": "uniform", "low": 1, "high": 0}}, "hyperparameter 'lr': Uniform"),
        ({"lr": {"type": "normal"}}, "hyperparameter 'lr': domain spec"),
        ({}, "the search space is empty"),
        ("lr", "must be a mapping"),
    ],
)
def test_coerce_errors(given_space: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        SearchSpace.coerce(given_space)
    assert fragment in str(error.value)
    with pytest.raises(ConfigError):
        SearchSpace.from_dict(given_space)
