"""Mutation by type, per-parameter settings, Gaussian noise, Keep, and passing the population."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbtkit._exceptions import ConfigError, OutOfSpace
from pbtkit.core import (
    PBT,
    Choice,
    Exploit,
    Explorer,
    GaussianNoise,
    IntUniform,
    Keep,
    LogUniform,
    MemberView,
    Objective,
    Ordinal,
    Perturb,
    Population,
    SearchSpace,
    Uniform,
    call_explorer,
    explorer_from_dict,
)
from tests.strategies import seeds, space_and_hparams

SPACE = SearchSpace(
    {
        "lr": LogUniform(1e-4, 1e-1),
        "momentum": Uniform(0.0, 0.99),
        "dropout": Uniform(0.0, 0.5),
        "batch": IntUniform(16, 256),
        "optimizer": Choice(["sgd", "adam", "rmsprop"]),
        "depth": Ordinal([2, 4, 8, 16]),
    }
)
HPARAMS = {
    "lr": 0.01,
    "momentum": 0.5,
    "dropout": 0.25,
    "batch": 64,
    "optimizer": "sgd",
    "depth": 4,
}


# --- mutation by type -------------------------------------------------------------------


def test_perturb_moves_each_type_its_own_way() -> None:
    explorer = Perturb((0.8, 1.2), resample_probability=0.0)
    seen: dict[str, set[Any]] = {name: set() for name in SPACE}
    for seed in range(200):
        out = explorer(HPARAMS, SPACE, np.random.default_rng(seed))
        for name, value in out.items():
            seen[name].add(value)
    # continuous: multiplied by a factor
    assert seen["momentum"] == {0.4, 0.6}
    assert seen["lr"] == {0.01 * 0.8, 0.01 * 1.2}
    # integer: the next lower or higher value (Li et al. 2019)
    assert seen["batch"] == {63, 65}
    # ordinal: the next lower or higher value
    assert seen["depth"] == {2, 8}
    # categorical: resampled from the prior
    assert seen["optimizer"] == {"sgd", "adam", "rmsprop"}


def test_integers_may_scale_instead_globally_or_per_parameter() -> None:
    for explorer in (
        Perturb((0.8, 1.2), resample_probability=0.0, integers="scale"),
        Perturb((0.8, 1.2), resample_probability=0.0, per_param={"batch": {"integers": "scale"}}),
    ):
        seen = {explorer(HPARAMS, SPACE, np.random.default_rng(s))["batch"] for s in range(100)}
        assert seen == {51, 77}  # round(64 * 0.8), round(64 * 1.2)
        assert explorer_from_dict(explorer.to_dict()) == explorer


def test_an_integer_step_stays_inside_its_range() -> None:
    explorer = Perturb((1.2,), resample_probability=0.0)
    top = {**HPARAMS, "batch": 256}
    assert explorer(top, SPACE, np.random.default_rng(0))["batch"] == 256


def test_an_unknown_integer_move_is_refused() -> None:
    with pytest.raises(ConfigError, match="integers must be 'step'"):
        Perturb(integers="jump")
    with pytest.raises(ConfigError, match="integers must be 'step'"):
        Perturb(per_param={"batch": {"integers": 2}})


# --- per-parameter settings -------------------------------------------------------------

OVERRIDES = Perturb(
    factors=(0.8, 1.2),
    resample_probability=0.0,
    per_param={"lr": {"factors": (0.5, 2.0)}, "dropout": {"resample_probability": 1.0}},
)


def test_per_param_settings_apply_to_their_hyperparameter_only() -> None:
    lrs, momenta, dropouts = set(), set(), set()
    for seed in range(200):
        out = OVERRIDES(HPARAMS, SPACE, np.random.default_rng(seed))
        lrs.add(out["lr"])
        momenta.add(out["momentum"])
        dropouts.add(out["dropout"])
    assert lrs == {0.005, 0.02}
    assert momenta == {0.4, 0.6}
    # always resampled: many values, none of them a perturbation of 0.25
    assert len(dropouts) > 150
    assert not dropouts & {0.2, 0.3}
    assert OVERRIDES.settings("lr") == ((0.5, 2.0), 0.0)
    assert OVERRIDES.settings("dropout") == ((0.8, 1.2), 1.0)
    assert OVERRIDES.settings("momentum") == ((0.8, 1.2), 0.0)


def test_per_param_names_must_be_in_the_space() -> None:
    explorer = Perturb(per_param={"learning_rate": {"factors": (0.5, 2.0)}})
    with pytest.raises(ConfigError, match="'learning_rate' is not in the search space"):
        explorer(HPARAMS, SPACE, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="its hyperparameters are lr, momentum"):
        explorer.check_space(SPACE)
    pbt = PBT(Objective("acc"), explore=explorer, ready_every=1, total_steps=2)
    with pytest.raises(ConfigError, match="learning_rate"):
        pbt.check_space(SPACE)
    OVERRIDES.check_space(SPACE)
    PBT(Objective("acc"), explore=OVERRIDES, ready_every=1, total_steps=2).check_space(SPACE)


def test_per_param_perturb_is_hashable_and_compares_by_value() -> None:
    same = Perturb(
        (0.8, 1.2),
        0.0,
        per_param={"dropout": {"resample_probability": 1}, "lr": {"factors": [0.5, 2]}},
    )
    assert same == OVERRIDES
    assert hash(same) == hash(OVERRIDES)
    assert OVERRIDES.per_param == {
        "lr": {"factors": (0.5, 2.0)},
        "dropout": {"resample_probability": 1.0},
    }
    assert Perturb((0.8, 1.2), 0.0) != OVERRIDES


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: Perturb(per_param=["lr"]), "per_param must map hyperparameter names"),
        (lambda: Perturb(per_param={"lr": 0.5}), "the settings must be a mapping"),
        (lambda: Perturb(per_param={"lr": {"factor": 2}}), "unknown factor; it takes the keys"),
        (
            lambda: Perturb(per_param={"lr": {"factors": ()}}),
            "Perturb(per_param={'lr': {'factors': ()}}): give at least one factor",
        ),
        (lambda: Perturb(per_param={"lr": {"factors": (0.0,)}}), "is not a finite number above"),
        (
            lambda: Perturb(per_param={"lr": {"resample_probability": 2}}),
            "resample_probability=2 is not a probability",
        ),
        (lambda: Perturb(per_param={"": {}}), "is not a hyperparameter name"),
    ],
)
def test_bad_per_param_settings_are_config_errors(build: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        build()
    assert fragment in str(error.value)


# --- gaussian noise ---------------------------------------------------------------------


def test_gaussian_noise_adds_noise_of_the_given_size_to_continuous_values() -> None:
    space = SearchSpace({"h": Uniform(-10.0, 10.0)})
    rng = np.random.default_rng(0)
    draws = np.array([GaussianNoise(0.1)({"h": 0.0}, space, rng)["h"] for _ in range(4000)])
    assert abs(draws.mean()) < 0.01
    assert draws.std() == pytest.approx(0.1, rel=0.05)


def test_gaussian_noise_clips_into_the_space_and_keeps_discrete_values() -> None:
    rng = np.random.default_rng(0)
    highs = {
        GaussianNoise(0.1)(HPARAMS | {"momentum": 0.99}, SPACE, rng)["momentum"] for _ in range(200)
    }
    assert max(highs) == 0.99
    assert 0.99 in highs  # about half the draws go above and are clipped
    for _ in range(50):
        out = GaussianNoise(0.5)(HPARAMS, SPACE, rng)
        assert out["optimizer"] == "sgd"
        assert out["depth"] == 4
        assert isinstance(out["batch"], int)


def test_gaussian_noise_on_a_log_scale_multiplies() -> None:
    space = SearchSpace({"lr": LogUniform(1e-6, 1.0)})
    rng = np.random.default_rng(1)
    logs = np.log([GaussianNoise(0.2)({"lr": 1e-3}, space, rng)["lr"] for _ in range(4000)])
    assert logs.mean() == pytest.approx(math.log(1e-3), abs=0.02)
    assert logs.std() == pytest.approx(0.2, rel=0.05)


def test_gaussian_noise_of_zero_changes_nothing() -> None:
    assert GaussianNoise(0.0)(HPARAMS, SPACE, np.random.default_rng(0)) == HPARAMS


@given(space_and_hparams(), st.floats(0.0, 1e6), seeds)
def test_gaussian_noise_stays_in_the_space(
    pair: tuple[SearchSpace, dict[str, Any]], sigma: float, seed: int
) -> None:
    space, hparams = pair
    out = GaussianNoise(sigma)(hparams, space, np.random.default_rng(seed))
    assert space.validate(out) == out
    assert GaussianNoise(sigma)(hparams, space, np.random.default_rng(seed)) == out


@pytest.mark.parametrize("sigma", [-0.1, math.nan, math.inf, "0.1", True])
def test_gaussian_noise_sigma_must_be_a_finite_number(sigma: Any) -> None:
    with pytest.raises(ConfigError, match="sigma must be a finite number >= 0"):
        GaussianNoise(sigma)


# --- keep -------------------------------------------------------------------------------


def test_keep_returns_the_values_unchanged_and_checked() -> None:
    out = Keep()(HPARAMS, SPACE, np.random.default_rng(0))
    assert out == HPARAMS
    assert out is not HPARAMS
    with pytest.raises(OutOfSpace):
        Keep()({**HPARAMS, "lr": 5.0}, SPACE, np.random.default_rng(0))


def test_exploit_only_policy_copies_the_donors_values_unchanged() -> None:
    members = [
        MemberView(
            member=i, trial_id=i, step=5, score=float(i), hparams={**HPARAMS, "batch": 16 + i}
        )
        for i in range(5)
    ]
    pbt = PBT(Objective("acc"), explore=Keep(), ready_every=5, total_steps=50)
    decision = pbt.decide(members[0], members, SPACE, np.random.default_rng(0))
    assert isinstance(decision, Exploit)
    assert decision.hparams == members[decision.donor_member].hparams


# --- explorers that read the population -------------------------------------------------


class Recording(Explorer):
    """An explorer that asks for the population and remembers what it got."""

    needs_population: ClassVar[bool] = True

    def __init__(self) -> None:
        self.got: list[tuple[Population, Any]] = []

    def __call__(
        self,
        hparams: Mapping[str, Any],
        space: SearchSpace,
        rng: np.random.Generator,
        *,
        population: Population,
        objective: Any,
    ) -> dict[str, Any]:
        self.got.append((population, objective))
        return dict(hparams)


def test_call_explorer_passes_the_population_only_to_explorers_that_ask() -> None:
    pop = Population.from_views([MemberView(0, 1, 5, 0.5, HPARAMS)])
    recording = Recording()
    assert isinstance(recording, Explorer)
    objective = Objective("acc")
    call_explorer(
        recording, HPARAMS, SPACE, np.random.default_rng(0), population=pop, objective=objective
    )
    assert recording.got == [(pop, objective)]
    # plain explorers take three arguments; a keyword would be a TypeError
    out = call_explorer(
        Keep(), HPARAMS, SPACE, np.random.default_rng(0), population=pop, objective=objective
    )
    assert out == HPARAMS


def test_the_policy_hands_its_population_to_the_explorer() -> None:
    members = [MemberView(i, i, 5, float(i), HPARAMS) for i in range(4)]
    recording = Recording()
    pbt = PBT(Objective("acc"), explore=recording, ready_every=5, total_steps=50)  # type: ignore[arg-type]
    assert isinstance(pbt.decide(members[0], members, SPACE, np.random.default_rng(0)), Exploit)
    ((population, objective),) = recording.got
    assert sorted(population.members) == [0, 1, 2, 3]
    assert objective == Objective("acc")


# --- specs ------------------------------------------------------------------------------


@pytest.mark.parametrize("explorer", [OVERRIDES, GaussianNoise(), GaussianNoise(0.3), Keep()])
def test_new_explorer_specs_round_trip_through_json(explorer: Explorer) -> None:
    spec = json.loads(json.dumps(explorer.to_dict()))
    assert explorer_from_dict(spec) == explorer
    assert explorer_from_dict(spec).to_dict() == explorer.to_dict()


def test_perturb_spec_without_overrides_is_unchanged() -> None:
    assert Perturb().to_dict() == {
        "type": "perturb",
        "factors": [0.8, 1.2],
        "resample_probability": 0.25,
    }
    assert OVERRIDES.to_dict()["per_param"] == {
        "lr": {"factors": [0.5, 2.0]},
        "dropout": {"resample_probability": 1.0},
    }
    assert explorer_from_dict({"type": "gaussian"}) == GaussianNoise(0.1)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"type": "gaussian", "sd": 0.1}, "unknown sd"),
        ({"type": "keep", "x": 1}, "unknown x"),
        ({"type": "perturb", "per_param": {"lr": {"factors": "big"}}}, "must be a list of numbers"),
    ],
)
def test_bad_new_explorer_specs(spec: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        explorer_from_dict(spec)
    assert fragment in str(error.value)
