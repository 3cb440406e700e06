"""The PBT policy: stop, exploit or continue, and its spec."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbtkit._exceptions import ConfigError
from pbtkit.core import (
    PBT,
    BinaryTournament,
    Choice,
    Continue,
    Exploit,
    IntUniform,
    LogUniform,
    MemberView,
    Objective,
    Perturb,
    Resample,
    SearchSpace,
    Stop,
    Truncation,
    Uniform,
)
from tests.strategies import seeds

SPACE = SearchSpace(
    {
        "lr": LogUniform(1e-4, 1e-1),
        "momentum": Uniform(0, 0.99),
        "batch": IntUniform(16, 256),
        "optimizer": Choice(["sgd", "adam"]),
    }
)


def policy(**overrides: Any) -> PBT:
    settings: dict[str, Any] = {"ready_every": 10, "total_steps": 100}
    settings.update(overrides)
    return PBT(Objective("acc"), **settings)


def view(member: int, score: float, step: int = 50, **hparams: Any) -> MemberView:
    values = {"lr": 0.001 * (member + 1), "momentum": 0.9, "batch": 32, "optimizer": "sgd"}
    values.update(hparams)
    return MemberView(member=member, trial_id=100 + member, step=step, score=score, hparams=values)


def population(scores: list[float], step: int = 50) -> list[MemberView]:
    return [view(member, score, step) for member, score in enumerate(scores)]


def test_defaults() -> None:
    pbt = policy()
    assert pbt.exploit == Truncation(0.2)
    assert pbt.explore == Perturb((0.8, 1.2), 0.25)


def test_stop_at_the_budget_even_for_the_worst_member() -> None:
    members = population([float(i) for i in range(10)], step=100)
    for member in members:
        decision = policy().decide(member, members, SPACE, np.random.default_rng(0))
        assert decision == Stop("budget reached")
    beyond = view(0, 0.0, step=130)
    assert policy().decide(beyond, members, SPACE, np.random.default_rng(0)) == Stop(
        "budget reached"
    )


def test_exploit_carries_the_donor_trial_and_explored_hparams() -> None:
    members = population([float(i) for i in range(10)])
    worst = members[0]
    for seed in range(50):
        decision = policy().decide(worst, members, SPACE, np.random.default_rng(seed))
        assert isinstance(decision, Exploit)
        assert decision.donor_member in (8, 9)
        assert decision.donor_trial == 100 + decision.donor_member
        assert decision.old_hparams == worst.hparams
        assert SPACE.validate(decision.hparams) == decision.hparams
        # Perturbed by 0.8 / 1.2 or resampled, the donor's lr is almost surely changed.
        assert decision.hparams["lr"] != members[decision.donor_member].hparams["lr"]


def test_exploit_uses_the_explorer_on_the_donors_values() -> None:
    members = population([float(i) for i in range(10)])
    pbt = policy(explore=Perturb((2.0,), resample_probability=0.0))
    decision = pbt.decide(members[0], members, SPACE, np.random.default_rng(0))
    assert isinstance(decision, Exploit)
    donor = members[decision.donor_member].hparams
    assert decision.hparams["lr"] == pytest.approx(donor["lr"] * 2)
    assert decision.hparams["batch"] == donor["batch"] + 1  # integers step to a neighbour


def test_continue_keeps_the_members_hparams() -> None:
    members = population([float(i) for i in range(10)])
    for member in members[2:]:
        decision = policy().decide(member, members, SPACE, np.random.default_rng(0))
        assert decision == Continue(dict(member.hparams))


def test_a_member_with_a_bad_score_continues_when_no_donor_exists() -> None:
    members = population([math.nan, math.nan, math.nan, math.nan, math.nan])
    decision = policy().decide(members[0], members, SPACE, np.random.default_rng(0))
    assert decision == Continue(dict(members[0].hparams))
    lonely = [view(0, math.nan)]
    assert isinstance(policy().decide(lonely[0], lonely, SPACE, np.random.default_rng(0)), Continue)


def test_decide_is_deterministic_given_the_seed() -> None:
    members = population([float(i) for i in range(10)])
    pbt = policy(exploit=BinaryTournament(), explore=Resample(0.5))
    for member in members:
        first = pbt.decide(member, members, SPACE, np.random.default_rng(4))
        assert first == pbt.decide(member, members, SPACE, np.random.default_rng(4))


@given(
    scores=st.lists(st.one_of(st.floats(-10, 10), st.just(math.nan)), min_size=1, max_size=10),
    steps=st.lists(st.integers(0, 120), min_size=10, max_size=10),
    exploit=st.sampled_from([Truncation(0.2), Truncation(0.5), BinaryTournament()]),
    seed=seeds,
)
def test_every_decision_is_well_formed(
    scores: list[float], steps: list[int], exploit: Any, seed: int
) -> None:
    members = [view(i, score, steps[i]) for i, score in enumerate(scores)]
    pbt = policy(exploit=exploit)
    for member in members:
        decision = pbt.decide(member, members, SPACE, np.random.default_rng(seed))
        if member.step >= 100:
            assert decision == Stop("budget reached")
        elif isinstance(decision, Exploit):
            donor = next(m for m in members if m.member == decision.donor_member)
            assert donor.member != member.member
            assert donor.trial_id == decision.donor_trial
            assert pbt.objective.better(donor.score, member.score)
            assert SPACE.validate(decision.hparams) == decision.hparams
            assert decision.old_hparams == member.hparams
        else:
            assert decision == Continue(dict(member.hparams))


@pytest.mark.parametrize(("start", "expected"), [(0, 10), (50, 10), (90, 10), (95, 5), (99, 1)])
def test_trial_steps_stop_at_the_budget(start: int, expected: int) -> None:
    assert policy().trial_steps(start) == expected


@pytest.mark.parametrize("start", [-1, 100, 150])
def test_trial_steps_outside_the_budget_is_an_error(start: int) -> None:
    with pytest.raises(ValueError, match="leaves no steps of total_steps=100"):
        policy().trial_steps(start)


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: policy(ready_every=0), "ready_every must be an integer in [1, 2**62]"),
        (lambda: policy(total_steps=0), "total_steps must be an integer in [1, 2**62]"),
        (lambda: policy(total_steps=-5), "total_steps must be an integer in [1, 2**62]"),
        (lambda: policy(ready_every=2.5), "ready_every must be an integer"),
        (lambda: policy(ready_every=True), "ready_every must be an integer"),
        (lambda: PBT("acc", ready_every=1, total_steps=1), "pass an Objective"),
        (lambda: policy(exploit="truncation"), "pass an Exploiter"),
        (lambda: policy(explore=0.8), "pass an Explorer"),
    ],
)
def test_bad_policies_are_config_errors(build: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        build()
    assert fragment in str(error.value)


@pytest.mark.parametrize(
    "pbt",
    [
        policy(),
        PBT(
            Objective("loss", "min"),
            exploit=BinaryTournament(),
            explore=Resample(0.3),
            ready_every=7,
            total_steps=1000,
        ),
        policy(exploit=Truncation(0.25), explore=Perturb((0.5, 2.0), 0.0)),
    ],
)
def test_policy_spec_round_trips_through_json(pbt: PBT) -> None:
    spec = json.loads(json.dumps(pbt.to_dict()))
    assert PBT.from_dict(spec) == pbt
    assert PBT.from_dict(spec).to_dict() == pbt.to_dict()


def test_policy_spec_defaults_its_parts() -> None:
    spec = {"objective": {"metric": "acc"}, "ready_every": 5, "total_steps": 50}
    assert PBT.from_dict(spec) == PBT(Objective("acc"), ready_every=5, total_steps=50)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"objective": {"metric": "acc"}, "ready_every": 5}, "missing total_steps"),
        (
            {"objective": {"metric": "acc"}, "ready_every": 5, "total_steps": 9, "seed": 1},
            "unknown seed",
        ),
        ({"objective": {"metric": "acc"}, "ready_every": 0, "total_steps": 9}, "ready_every"),
        (
            {
                "objective": {"metric": "acc"},
                "explore": {"type": "bogus"},
                "ready_every": 5,
                "total_steps": 9,
            },
            "valid types: perturb",
        ),
        ("pbt", "a policy spec must be a mapping"),
    ],
)
def test_bad_policy_specs(spec: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        PBT.from_dict(spec)
    assert fragment in str(error.value)
