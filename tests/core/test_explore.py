"""Explore strategies: Perturb, Resample, CustomExplore and their specs."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbtkit._exceptions import ConfigError, OutOfSpace
from pbtkit.core import (
    Choice,
    CustomExplore,
    Explorer,
    IntUniform,
    LogUniform,
    Ordinal,
    Perturb,
    Resample,
    SearchSpace,
    Uniform,
    explorer_from_dict,
)
from tests.strategies import seeds, space_and_hparams

probabilities = st.floats(min_value=0.0, max_value=1.0)
factor_tuples = st.lists(st.floats(min_value=0.01, max_value=100.0), min_size=1, max_size=4).map(
    tuple
)


def typed(values: Mapping[str, Any]) -> dict[str, tuple[type, Any]]:
    return {name: (type(value), value) for name, value in values.items()}


def double_lr(
    hparams: Mapping[str, Any], space: SearchSpace, rng: np.random.Generator
) -> dict[str, Any]:
    """An explore function importable as ``tests.core.test_explore:double_lr``."""
    return {**hparams, "lr": hparams["lr"] * 2}


class Namespace:
    @staticmethod
    def keep(
        hparams: Mapping[str, Any], space: SearchSpace, rng: np.random.Generator
    ) -> dict[str, Any]:
        return dict(hparams)


SPACE = SearchSpace(
    {
        "lr": LogUniform(1e-4, 1e-1),
        "momentum": Uniform(0, 0.99),
        "batch": IntUniform(16, 256),
        "optimizer": Choice(["sgd", "adam"]),
        "depth": Ordinal([2, 4, 8]),
    }
)
HPARAMS = {"lr": 0.01, "momentum": 0.5, "batch": 64, "optimizer": "sgd", "depth": 4}


# --- properties -------------------------------------------------------------------------


@given(space_and_hparams(), factor_tuples, probabilities, seeds)
def test_perturb_stays_in_the_space_and_is_deterministic(
    pair: tuple[SearchSpace, dict[str, Any]],
    factors: tuple[float, ...],
    probability: float,
    seed: int,
) -> None:
    space, hparams = pair
    before = dict(hparams)
    explorer = Perturb(factors, probability)
    out = explorer(hparams, space, np.random.default_rng(seed))
    assert list(out) == list(space)
    assert typed(space.validate(out)) == typed(out)
    assert hparams == before  # the input is not modified
    assert typed(explorer(hparams, space, np.random.default_rng(seed))) == typed(out)


@given(space_and_hparams(), probabilities, seeds)
def test_resample_stays_in_the_space_and_is_deterministic(
    pair: tuple[SearchSpace, dict[str, Any]], probability: float, seed: int
) -> None:
    space, hparams = pair
    out = Resample(probability)(hparams, space, np.random.default_rng(seed))
    assert typed(space.validate(out)) == typed(out)
    assert typed(Resample(probability)(hparams, space, np.random.default_rng(seed))) == typed(out)
    unchanged = Resample(0.0)(hparams, space, np.random.default_rng(seed))
    assert typed(unchanged) == typed(space.validate(hparams))


# --- behaviour --------------------------------------------------------------------------


def test_perturb_without_resampling_multiplies_by_one_of_the_factors() -> None:
    space = SearchSpace({"x": Uniform(0, 100), "y": LogUniform(1e-3, 1e3)})
    explorer = Perturb((0.8, 1.2), resample_probability=0.0)
    rng = np.random.default_rng(1)
    seen_x, seen_y = set(), set()
    for _ in range(200):
        out = explorer({"x": 10.0, "y": 1.0}, space, rng)
        assert out["x"] in (10.0 * 0.8, 10.0 * 1.2)
        assert out["y"] in (0.8, 1.2)
        seen_x.add(out["x"])
        seen_y.add(out["y"])
    assert len(seen_x) == 2
    assert len(seen_y) == 2


def test_perturb_factors_are_drawn_per_hyperparameter() -> None:
    space = SearchSpace({name: Uniform(0, 100) for name in "abcdefgh"})
    out = Perturb((0.8, 1.2), 0.0)(dict.fromkeys("abcdefgh", 10.0), space, np.random.default_rng(0))
    assert set(out.values()) == {8.0, 12.0}


def test_perturb_resamples_at_the_given_rate() -> None:
    # With the factor 1 a perturbed value stays put, so any change is a resample.
    space = SearchSpace({"x": Uniform(0, 1)})
    explorer = Perturb((1.0,), resample_probability=0.25)
    rng = np.random.default_rng(2)
    changed = sum(explorer({"x": 0.5}, space, rng)["x"] != 0.5 for _ in range(4000))
    assert 850 < changed < 1150


def test_resample_draws_from_the_prior_at_the_given_rate() -> None:
    space = SearchSpace({"x": Uniform(0, 1), "y": Uniform(0, 1)})
    rng = np.random.default_rng(3)
    changed = 0
    for _ in range(2000):
        out = Resample(0.5)({"x": 0.5, "y": 0.5}, space, rng)
        changed += (out["x"] != 0.5) + (out["y"] != 0.5)
    assert 1800 < changed < 2200
    always = Resample()({"x": 0.5, "y": 0.5}, space, rng)
    assert always["x"] != 0.5
    assert always["y"] != 0.5


def test_perturb_normalises_its_input() -> None:
    out = Perturb((1.0,), 0.0)(
        {**HPARAMS, "batch": 64.0, "lr": np.float32(0.5) / 50}, SPACE, np.random.default_rng(0)
    )
    assert type(out["batch"]) is int
    assert type(out["lr"]) is float


def test_explorers_reject_hparams_outside_the_space() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(OutOfSpace, match=r"lr=1\.0 is outside"):
        Perturb()({**HPARAMS, "lr": 1.0}, SPACE, rng)
    with pytest.raises(OutOfSpace, match="missing depth"):
        Resample()({k: v for k, v in HPARAMS.items() if k != "depth"}, SPACE, rng)


def test_explorers_satisfy_the_protocol() -> None:
    for explorer in (Perturb(), Resample(), CustomExplore(double_lr)):
        assert isinstance(explorer, Explorer)


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: Perturb(()), "give at least one factor"),
        (lambda: Perturb((0.8, 0.0)), "0.0 is not a finite number above 0"),
        (lambda: Perturb((-1.2,)), "-1.2 is not a finite number above 0"),
        (lambda: Perturb((math.inf,)), "inf is not a finite number above 0"),
        (lambda: Perturb((math.nan,)), "nan is not a finite number above 0"),
        (lambda: Perturb(("1.2",)), "'1.2' is not a finite number"),
        (lambda: Perturb(1.2), "factors must be a list of numbers"),
        (
            lambda: Perturb(resample_probability=1.5),
            "resample_probability=1.5 is not a probability",
        ),
        (
            lambda: Perturb(resample_probability=-0.1),
            "is not a probability; pass a value in [0, 1]",
        ),
        (lambda: Perturb(resample_probability=math.nan), "is not a probability"),
        (lambda: Resample(2), "probability=2 is not a probability"),
        (lambda: Resample("half"), "probability must be a number in [0, 1]"),
        (lambda: CustomExplore(42), "fn must be a function"),
        (lambda: CustomExplore(double_lr, "no_colon"), "must be an import path 'module:qualname'"),
    ],
)
def test_bad_explorers_are_config_errors(build: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        build()
    assert fragment in str(error.value)


def test_perturb_normalises_its_settings() -> None:
    explorer = Perturb([0.5, 2], 0)  # type: ignore[arg-type]
    assert explorer.factors == (0.5, 2.0)
    assert explorer == Perturb((0.5, 2.0), 0.0)


# --- custom -----------------------------------------------------------------------------


def test_custom_explore_checks_what_the_function_returns() -> None:
    rng = np.random.default_rng(0)
    explorer = CustomExplore(double_lr)
    assert explorer.target == "tests.core.test_explore:double_lr"
    assert explorer(HPARAMS, SPACE, rng) == {**HPARAMS, "lr": 0.02}
    with pytest.raises(OutOfSpace) as error:
        explorer({**HPARAMS, "lr": 0.09}, SPACE, rng)
    assert "your explore function tests.core.test_explore:double_lr returned" in str(error.value)
    assert "lr=0.18 is outside LogUniform" in str(error.value)


def test_custom_explore_rejects_non_mappings_and_missing_names() -> None:
    rng = np.random.default_rng(0)
    as_list = CustomExplore(lambda h, s, r: list(h.items()), "m:f")  # type: ignore[arg-type, return-value]
    with pytest.raises(OutOfSpace, match="your explore function m:f returned list"):
        as_list(HPARAMS, SPACE, rng)
    drops = CustomExplore(lambda h, s, r: {"lr": h["lr"]}, "m:g")
    with pytest.raises(OutOfSpace, match=r"your explore function m:g returned .* missing momentum"):
        drops(HPARAMS, SPACE, rng)


def test_custom_explore_gets_a_copy() -> None:
    def mutate(hparams: Any, space: SearchSpace, rng: np.random.Generator) -> Any:
        hparams["lr"] = 0.05
        return hparams

    original = dict(HPARAMS)
    CustomExplore(mutate, "m:mutate")(original, SPACE, np.random.default_rng(0))
    assert original == HPARAMS


# --- specs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "explorer",
    [
        Perturb(),
        Perturb((0.5, 0.9, 1.1, 2.0), 0.0),
        Resample(),
        Resample(0.3),
        CustomExplore(double_lr),
        CustomExplore(Namespace.keep),
    ],
)
def test_explorer_specs_round_trip_through_json(explorer: Explorer) -> None:
    spec = json.loads(json.dumps(explorer.to_dict()))
    rebuilt = explorer_from_dict(spec)
    assert rebuilt == explorer
    assert rebuilt.to_dict() == explorer.to_dict()


def test_explorer_specs_take_defaults() -> None:
    assert explorer_from_dict({"type": "perturb"}) == Perturb()
    assert explorer_from_dict({"type": "resample"}) == Resample()


def test_custom_spec_imports_nested_names() -> None:
    explorer = explorer_from_dict(
        {"type": "custom", "target": "tests.core.test_explore:Namespace.keep"}
    )
    assert isinstance(explorer, CustomExplore)
    assert explorer(HPARAMS, SPACE, np.random.default_rng(0)) == HPARAMS


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"type": "mutate"}, "valid types: perturb, resample, gaussian, keep, custom, pb2"),
        ({"factors": [0.8]}, "has type None"),
        (
            {"type": "perturb", "resample": 0.2},
            "unknown resample; it takes the keys type, factors, resample_probability",
        ),
        ({"type": "resample", "probability": 3}, "not a probability"),
        ({"type": "custom"}, "missing target"),
        ({"type": "custom", "target": "explore_fn"}, "must be an import path 'module:qualname'"),
        ("perturb", "an explore spec must be a mapping"),
    ],
)
def test_bad_explorer_specs(spec: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        explorer_from_dict(spec)
    assert fragment in str(error.value)


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("no_such_module_xyz:fn", "cannot import module"),
        ("tests.core.test_explore:nope", "has no attribute 'nope'"),
        ("json:dumps.nope", "has no attribute 'dumps.nope'"),
        ("json:__doc__", "is str, not a function"),
    ],
)
def test_a_custom_target_is_imported_only_when_called(target: str, fragment: str) -> None:
    # Reading the spec imports nothing (a stored spec is shown without running code) ...
    explorer = explorer_from_dict({"type": "custom", "target": target})
    assert explorer.to_dict() == {"type": "custom", "target": target}
    # ... and the first call says what is wrong with the target.
    with pytest.raises(ConfigError) as error:
        explorer(HPARAMS, SPACE, np.random.default_rng(0))
    assert fragment in str(error.value)


def test_custom_spec_loads_a_function_from_a_file(tmp_path: Any) -> None:
    script = tmp_path / "my_search.py"
    script.write_text(
        "def explore(hparams, space, rng):\n    return {**hparams, 'lr': hparams['lr'] / 2}\n"
    )
    target = f"{script}:explore"
    explorer = explorer_from_dict({"type": "custom", "target": target})
    assert explorer.to_dict() == {"type": "custom", "target": target}
    assert explorer(HPARAMS, SPACE, np.random.default_rng(0)) == {**HPARAMS, "lr": 0.005}
    assert explorer_from_dict(explorer.to_dict()) == explorer
