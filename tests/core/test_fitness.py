"""Objective: scores, sort keys and the messages for missing metrics."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbtkit._exceptions import ConfigError, MetricError
from pbtkit.core import Objective, objective_from_dict

any_score = st.floats(allow_nan=True, allow_infinity=True)


def test_max_keeps_the_score_and_min_negates_it() -> None:
    assert Objective("acc").key(0.9) == 0.9
    assert Objective("loss", "min").key(0.9) == -0.9
    assert Objective("acc").better(0.9, 0.8)
    assert Objective("loss", "min").better(0.8, 0.9)
    assert not Objective("loss", "min").better(0.9, 0.8)


@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scores_rank_last(mode: Any, bad: float) -> None:
    objective = Objective("m", mode)
    assert objective.key(bad) == -math.inf
    assert objective.key(-1e308) > objective.key(bad)
    assert objective.key(1e308) > objective.key(bad)
    assert not objective.better(bad, 0.0)
    assert objective.better(0.0, bad)
    assert not objective.better(bad, bad)


@given(st.lists(any_score, min_size=1), st.sampled_from(["max", "min"]))
def test_sorting_by_key_puts_the_best_first_and_non_finite_last(
    scores: list[float], mode: Any
) -> None:
    objective = Objective("m", mode)
    ranked = sorted(scores, key=objective.key, reverse=True)
    finite = [s for s in ranked if math.isfinite(s)]
    assert ranked[: len(finite)] == finite
    assert finite == sorted(finite, reverse=(mode == "max"))


@given(any_score, any_score, st.sampled_from(["max", "min"]))
def test_better_is_strict_and_asymmetric(a: float, b: float, mode: Any) -> None:
    objective = Objective("m", mode)
    assert not (objective.better(a, b) and objective.better(b, a))
    assert not objective.better(a, a)
    if objective.better(a, b):
        assert math.isfinite(a)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1, 1.0), (0.5, 0.5), (np.float32(0.25), 0.25), (np.int64(3), 3.0), (-math.inf, -math.inf)],
)
def test_score_returns_a_float(value: Any, expected: float) -> None:
    score = Objective("acc").score({"acc": value, "loss": 1.0})
    assert score == expected
    assert type(score) is float


def test_score_returns_nan_as_nan() -> None:
    assert math.isnan(Objective("acc").score({"acc": math.nan}))


def test_missing_metric_names_the_reported_ones_and_suggests_a_close_match() -> None:
    with pytest.raises(MetricError) as error:
        Objective("accuracy").score({"loss": 0.3, "acuracy": 0.9})
    message = str(error.value)
    assert "the objective metric 'accuracy' was never reported" in message
    assert "reported: acuracy, loss" in message
    assert "(did you mean 'acuracy'?)" in message
    assert "trial.report(step, accuracy=...)" in message


def test_missing_metric_without_a_close_match() -> None:
    with pytest.raises(MetricError) as error:
        Objective("accuracy").score({"loss": 0.3})
    assert "reported: loss —" in str(error.value)
    assert "did you mean" not in str(error.value)
    with pytest.raises(MetricError, match="reported: nothing"):
        Objective("accuracy").score({})


@pytest.mark.parametrize("value", ["0.9", None, True, [0.9]])
def test_non_numeric_metric_is_a_metric_error(value: Any) -> None:
    with pytest.raises(MetricError, match=r"the objective metric 'acc' is .*; report a number"):
        Objective("acc").score({"acc": value})


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: Objective(""), "metric must be the non-empty name"),
        (lambda: Objective("  "), "metric must be the non-empty name"),
        (lambda: Objective(3), "Objective(metric=3)"),
        (lambda: Objective("acc", "maximize"), "mode must be 'max' (higher is better) or 'min'"),
        (lambda: objective_from_dict({"mode": "max"}), "missing metric"),
        (lambda: objective_from_dict({"metric": "a", "goal": "max"}), "unknown goal"),
        (lambda: objective_from_dict({"metric": "a", "mode": "down"}), "mode must be"),
        (lambda: objective_from_dict("acc"), "an objective spec must be a mapping"),
    ],
)
def test_bad_objectives_are_config_errors(build: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        build()
    assert fragment in str(error.value)


@pytest.mark.parametrize("objective", [Objective("acc"), Objective("val/loss", "min")])
def test_objective_spec_round_trips_through_json(objective: Objective) -> None:
    assert objective_from_dict(json.loads(json.dumps(objective.to_dict()))) == objective


def test_objective_spec_defaults_to_max() -> None:
    assert objective_from_dict({"metric": "acc"}) == Objective("acc", "max")
