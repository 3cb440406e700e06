"""PB2: a GP bandit over recent trials picks the new hyperparameters."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbtkit._exceptions import ConfigError
from pbtkit.core import (
    PB2,
    PBT,
    Choice,
    Exploit,
    IntUniform,
    LogUniform,
    MemberView,
    Objective,
    Ordinal,
    Perturb,
    Population,
    Resample,
    SearchSpace,
    Uniform,
    explorer_from_dict,
)
from tests.strategies import seeds

MAX = Objective("acc", "max")
MIN = Objective("loss", "min")
SPACE = SearchSpace({"x": Uniform(0.0, 1.0)})


def trials(
    gain_of: Any, *, n: int = 48, seed: int = 0, space: SearchSpace = SPACE
) -> list[MemberView]:
    """``n`` finished trials over 4 generations with random values and ``gain_of(values)``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        hparams = space.sample(rng)
        out.append(
            MemberView(
                member=i % 12,
                trial_id=i,
                step=10 * (1 + i // 12),
                score=0.0,
                hparams=hparams,
                gain=float(gain_of(hparams) + 0.01 * rng.standard_normal()),
                generation=i // 12,
            )
        )
    return out


def population_of(recent: list[MemberView]) -> Population:
    latest = {view.member: view for view in recent}
    return Population.from_views(latest.values(), recent=lambda generations: recent)


def suggestions(explorer: PB2, pop: Population, objective: Objective) -> list[dict[str, Any]]:
    """What ``explorer`` suggests from x = 0.1 under 12 seeds."""
    return [
        explorer(
            {"x": 0.1}, SPACE, np.random.default_rng(seed), population=pop, objective=objective
        )
        for seed in range(12)
    ]


def test_pb2_goes_where_improvement_was_high() -> None:
    pop = population_of(trials(lambda h: -((h["x"] - 0.8) ** 2)))
    xs = [out["x"] for out in suggestions(PB2(), pop, MAX)]
    assert abs(float(np.median(xs)) - 0.8) < 0.12, xs


def test_pb2_reads_gains_in_the_objectives_direction() -> None:
    # for a loss, a gain is good when it is negative: lowest near x = 0.2
    pop = population_of(trials(lambda h: (h["x"] - 0.2) ** 2))
    xs = [out["x"] for out in suggestions(PB2(), pop, MIN)]
    assert abs(float(np.median(xs)) - 0.2) < 0.12, xs


def test_pb2_works_on_a_log_scale_and_resamples_categories() -> None:
    space = SearchSpace(
        {
            "lr": LogUniform(1e-5, 1e-1),
            "optimizer": Choice(["sgd", "adam", "rmsprop"]),
        }
    )
    recent = trials(lambda h: -((math.log10(h["lr"]) + 2) ** 2), space=space)
    pop = population_of(recent)
    outs = [
        PB2()(
            {"lr": 1e-5, "optimizer": "sgd"},
            space,
            np.random.default_rng(seed),
            population=pop,
            objective=MAX,
        )
        for seed in range(12)
    ]
    logs = [math.log10(out["lr"]) for out in outs]
    assert abs(float(np.median(logs)) + 2) < 0.6, logs
    assert {out["optimizer"] for out in outs} == {"sgd", "adam", "rmsprop"}


def test_pb2_falls_back_with_too_little_data() -> None:
    few = trials(lambda h: h["x"], n=3)
    pop = population_of(few)
    unknown = [
        MemberView(member=i, trial_id=i, step=10, score=0.0, hparams={"x": 0.5}) for i in range(9)
    ]
    for seed in range(5):
        rng = np.random.default_rng(seed)
        expected = Perturb()({"x": 0.5}, SPACE, np.random.default_rng(seed))
        assert PB2(min_data=4)({"x": 0.5}, SPACE, rng, population=pop, objective=MAX) == expected
        # gains unknown (NaN) do not count as data
        no_gain = population_of(unknown)
        assert (
            PB2()({"x": 0.5}, SPACE, np.random.default_rng(seed), population=no_gain, objective=MAX)
            == expected
        )
        # without a population (called as a plain explorer) it falls back too
        assert PB2()({"x": 0.5}, SPACE, np.random.default_rng(seed)) == expected
    resample = PB2(fallback=Resample())
    assert resample({"x": 0.5}, SPACE, np.random.default_rng(1)) == Resample()(
        {"x": 0.5}, SPACE, np.random.default_rng(1)
    )


MIXED = SearchSpace(
    {
        "a": Uniform(-3.0, 5.0),
        "lr": LogUniform(1e-6, 1.0),
        "n": IntUniform(1, 9),
        "depth": Ordinal([1, 2, 4, 8]),
        "kind": Choice(["x", "y"]),
        "fixed": Ordinal(["only"]),
    }
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=seeds, data_seed=seeds, kappa=st.one_of(st.none(), st.floats(0.0, 10.0)))
def test_pb2_suggestions_stay_inside_the_space(
    seed: int, data_seed: int, kappa: float | None
) -> None:
    rng = np.random.default_rng(data_seed)
    weights = rng.normal(size=3)
    recent = trials(
        lambda h: weights[0] * h["a"] + weights[1] * math.log(h["lr"]) + weights[2] * h["n"],
        n=20,
        seed=data_seed,
        space=MIXED,
    )
    start = MIXED.sample(rng)
    explorer = PB2(kappa=kappa, candidates=64)
    out = explorer(
        start, MIXED, np.random.default_rng(seed), population=population_of(recent), objective=MAX
    )
    assert MIXED.validate(out) == out
    assert list(out) == list(MIXED)
    again = explorer(
        start, MIXED, np.random.default_rng(seed), population=population_of(recent), objective=MAX
    )
    assert again == out


def test_pb2_in_a_policy_explores_the_donors_values_with_the_population() -> None:
    recent = trials(lambda h: -((h["x"] - 0.8) ** 2))
    latest = [
        MemberView(member=m, trial_id=100 + m, step=40, score=float(m), hparams={"x": 0.05})
        for m in range(10)
    ]
    pop = Population.from_views(latest, recent=lambda generations: recent)
    pbt = PBT(MAX, explore=PB2(), ready_every=10, total_steps=100)
    decision = pbt.decide(latest[0], pop, SPACE, np.random.default_rng(0))
    assert isinstance(decision, Exploit)
    assert abs(decision.hparams["x"] - 0.8) < 0.2


def test_pb2_without_scikit_learn_says_which_extra_to_install(monkeypatch: Any) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.gaussian_process", None)
    pop = population_of(trials(lambda h: h["x"]))
    with pytest.raises(ConfigError, match=r"pip install 'pbtkit\[pb2\]'"):
        PB2()({"x": 0.5}, SPACE, np.random.default_rng(0), population=pop, objective=MAX)


@pytest.mark.parametrize(
    "explorer",
    [
        PB2(),
        PB2(
            generations=2, min_data=8, candidates=100, kappa=1.5, fallback=Perturb((0.5, 2.0), 0.1)
        ),
    ],
)
def test_pb2_spec_round_trips_through_json(explorer: PB2) -> None:
    spec = json.loads(json.dumps(explorer.to_dict()))
    assert explorer_from_dict(spec) == explorer
    assert explorer_from_dict({"type": "pb2"}) == PB2()


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: PB2(generations=0), "generations must be an integer >= 1"),
        (lambda: PB2(min_data=1), "min_data must be an integer >= 2"),
        (lambda: PB2(candidates=0), "candidates must be an integer >= 1"),
        (lambda: PB2(kappa=-1.0), "kappa must be a finite number >= 0"),
        (lambda: PB2(fallback=PB2()), "pass an explorer that needs no population"),
        (lambda: PB2(fallback="perturb"), "pass an explorer that needs no population"),
        (lambda: explorer_from_dict({"type": "pb2", "beta": 2}), "unknown beta"),
        (lambda: explorer_from_dict({"type": "pb2", "fallback": {"type": "x"}}), "valid types"),
    ],
)
def test_bad_pb2_settings_are_config_errors(build: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        build()
    assert fragment in str(error.value)


def test_pb2_spreads_a_batch_away_from_the_trials_already_training() -> None:
    """GP-BUCB: a suggestion already handed out (pending) is added to the model at its
    predicted gain, which lowers the uncertainty there, so the rest of a batch (a
    generation decided at once) spreads along what the data leaves open."""
    space = SearchSpace({"x": Uniform(0.0, 1.0), "y": Uniform(0.0, 1.0)})
    recent = trials(lambda h: h["x"], n=24, space=space)  # gains grow with x; y is noise

    def batch(spread: bool) -> list[dict[str, Any]]:
        handed_out: list[dict[str, Any]] = []
        for seed in range(4):
            pop = Population.from_views(
                {v.member: v for v in recent}.values(),
                recent=lambda generations: recent,
                pending=(lambda: list(handed_out)) if spread else None,
            )
            rng = np.random.default_rng(seed)
            handed_out.append(
                PB2(kappa=2.0)({"x": 0.5, "y": 0.5}, space, rng, population=pop, objective=MAX)
            )
        return handed_out

    alone, spread = batch(False), batch(True)
    assert all(h["x"] > 0.9 for h in alone + spread)  # both follow the gains in x...
    ys = [h["y"] for h in alone]
    assert max(ys) - min(ys) < 0.1, ys  # ...one batch piles onto one point
    ys = [h["y"] for h in spread]
    assert max(ys) - min(ys) > 0.5, ys  # ...the other spreads along y
