"""What an exploiting member inherits, how the policy says so, and shrink-and-perturb."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from pbtkit._exceptions import ConfigError
from pbtkit.core import (
    PBT,
    Exploit,
    MemberView,
    Objective,
    SearchSpace,
    ShrinkPerturb,
    Uniform,
    inherit_from_dict,
    shrink_perturb,
)

SPACE = SearchSpace({"x": Uniform(0.0, 1.0)})
MEMBERS = [
    MemberView(member=i, trial_id=100 + i, step=10, score=float(i), hparams={"x": 0.1 * i})
    for i in range(5)
]


def policy(**overrides: Any) -> PBT:
    return PBT(Objective("acc"), ready_every=10, total_steps=100, **overrides)


def exploit_of(pbt: PBT) -> Exploit:
    decision = pbt.decide(MEMBERS[0], MEMBERS, SPACE, np.random.default_rng(0))
    assert isinstance(decision, Exploit)
    return decision


def test_the_default_inherits_weights_and_hyperparameters() -> None:
    decision = exploit_of(policy())
    assert (decision.inherit, decision.shrink, decision.noise) == ("all", 1.0, 0.0)
    assert decision.donor_trial == 104


def test_hparams_only_says_so_on_the_decision() -> None:
    decision = exploit_of(policy(inherit="hparams"))
    assert decision.inherit == "hparams"
    # the donor is still named: its values are what the member takes
    assert decision.donor_member == 4


def test_weights_only_explores_the_members_own_hyperparameters() -> None:
    from pbtkit.core import Keep

    decision = exploit_of(policy(inherit="weights", explore=Keep()))
    assert decision.inherit == "weights"
    assert decision.donor_trial == 104  # the donor's weights...
    assert decision.hparams == {"x": 0.0}  # ...and member 0's own values, not 0.4
    explored = exploit_of(policy(inherit="weights"))
    assert explored.hparams["x"] in (0.0, pytest.approx(0.0))  # x0.8/x1.2 of 0 is 0


def test_shrink_perturb_carries_its_numbers() -> None:
    decision = exploit_of(policy(inherit=ShrinkPerturb(shrink=0.5, noise=0.01)))
    assert (decision.inherit, decision.shrink, decision.noise) == ("shrink_perturb", 0.5, 0.01)


@pytest.mark.parametrize(
    "inherit", ["all", "hparams", "weights", ShrinkPerturb(), ShrinkPerturb(1.0, 0.0)]
)
def test_inheritance_round_trips_through_the_policy_spec(inherit: Any) -> None:
    pbt = policy(inherit=inherit)
    spec = json.loads(json.dumps(pbt.to_dict()))
    assert PBT.from_dict(spec) == pbt
    assert PBT.from_dict(spec).inherit == inherit
    # the default is left out, so specs stored before inheritance existed read back equal
    assert ("inherit" in spec) == (inherit != "all")


def test_inherit_specs() -> None:
    assert inherit_from_dict("hparams") == "hparams"
    assert inherit_from_dict({"type": "shrink_perturb"}) == ShrinkPerturb(0.4, 0.1)
    assert ShrinkPerturb(0.3, 0.2).to_dict() == {
        "type": "shrink_perturb",
        "shrink": 0.3,
        "noise": 0.2,
    }


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: policy(inherit="genes"), "inherit must be 'all'"),
        (lambda: policy(inherit=None), "inherit must be 'all'"),
        (lambda: ShrinkPerturb(shrink=1.5), "shrink must be a number in [0, 1]"),
        (lambda: ShrinkPerturb(shrink=True), "shrink must be a number"),
        (lambda: ShrinkPerturb(noise=-0.1), "noise must be a finite number >= 0"),
        (lambda: ShrinkPerturb(noise=math.inf), "noise must be a finite number >= 0"),
        (lambda: inherit_from_dict({"type": "copy"}), "valid types: shrink_perturb"),
        (lambda: inherit_from_dict({"type": "shrink_perturb", "sigma": 1}), "unknown sigma"),
        (
            lambda: PBT.from_dict(
                {"objective": {"metric": "a"}, "ready_every": 1, "total_steps": 2, "inherit": 3}
            ),
            "inherit must be 'all'",
        ),
    ],
)
def test_bad_inheritance_is_a_config_error(build: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        build()
    assert fragment in str(error.value)


def test_an_exploit_refuses_an_unknown_inheritance() -> None:
    with pytest.raises(
        ValueError, match="inherit must be one of all, hparams, weights, shrink_perturb"
    ):
        Exploit(1, 2, {}, {}, inherit="genes")
    with pytest.raises(ValueError, match="shrink must be in"):
        Exploit(1, 2, {}, {}, inherit="shrink_perturb", shrink=2.0)


# --- the helper ---------------------------------------------------------------------------


def test_shrink_without_noise_scales_float_arrays_only() -> None:
    arrays = {
        "w": np.array([[1.0, -2.0], [4.0, 0.5]], dtype=np.float32),
        "steps": np.array(7, dtype=np.int64),
        "mask": np.array([True, False]),
    }
    before = {name: array.copy() for name, array in arrays.items()}
    out = shrink_perturb(arrays, 0.5, 0.0, np.random.default_rng(0))
    assert out["w"].dtype == np.float32
    np.testing.assert_array_equal(out["w"], before["w"] * 0.5)
    np.testing.assert_array_equal(out["steps"], before["steps"])
    np.testing.assert_array_equal(out["mask"], before["mask"])
    for name, array in arrays.items():  # the input is left alone
        np.testing.assert_array_equal(array, before[name])


def test_noise_has_the_given_standard_deviation_and_follows_the_seed() -> None:
    arrays = {"w": np.ones(20000)}
    out = shrink_perturb(arrays, 0.4, 0.1, np.random.default_rng(1))
    assert out["w"].mean() == pytest.approx(0.4, abs=0.005)
    assert out["w"].std() == pytest.approx(0.1, rel=0.05)
    again = shrink_perturb(arrays, 0.4, 0.1, np.random.default_rng(1))
    np.testing.assert_array_equal(out["w"], again["w"])


@pytest.mark.parametrize(
    ("shrink", "noise"), [(-0.1, 0.0), (1.1, 0.0), (0.5, -1.0), (0.5, math.nan)]
)
def test_shrink_perturb_checks_its_numbers(shrink: float, noise: float) -> None:
    with pytest.raises(ConfigError):
        shrink_perturb({"w": np.ones(2)}, shrink, noise, np.random.default_rng(0))


def test_member_views_know_gain_and_generation() -> None:
    plain = MemberView(member=0, trial_id=1, step=0, score=0.0)
    assert math.isnan(plain.gain)
    assert plain.generation == -1
    assert MemberView(0, 1, 0, 0.0, gain=0.5, generation=3).gain == 0.5
