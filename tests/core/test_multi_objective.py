"""MultiObjective: weighted sums, Pareto fronts with crowding, and every exploiter on top."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbtkit._exceptions import ConfigError, MetricError
from pbtkit.core import (
    PBT,
    BinaryTournament,
    Fitness,
    MemberView,
    MultiObjective,
    Objective,
    Population,
    Truncation,
    objective_from_dict,
)
from pbtkit.core.fitness import pareto_keys

WEIGHTED = MultiObjective({"acc": "max", "latency": "min"}, weights={"acc": 1.0, "latency": 0.5})
PARETO = MultiObjective({"acc": "max", "latency": "min"}, combine="pareto")


def members(objective: Fitness, rows: list[dict[str, float]]) -> Population:
    """A population whose member i reported ``rows[i]``, scored by ``objective``."""
    return Population.from_views(
        MemberView(
            member=i,
            trial_id=100 + i,
            step=10,
            score=objective.score(metrics),
            hparams={"x": i},
            metrics=metrics,
        )
        for i, metrics in enumerate(rows)
    )


def pareto_population(points: list[tuple[float, float]]) -> Population:
    return members(PARETO, [{"acc": a, "latency": lat} for a, lat in points])


# --- weighted ---------------------------------------------------------------------------


def test_weighted_score_is_the_sum_of_sign_adjusted_weighted_values() -> None:
    assert WEIGHTED.score({"acc": 0.9, "latency": 0.2, "other": 5}) == pytest.approx(0.8)
    assert WEIGHTED.mode == "max"
    assert WEIGHTED.metric == "acc"
    assert WEIGHTED.metric_names == ("acc", "latency")
    assert WEIGHTED.label == "weighted(acc, -0.5*latency)"
    assert WEIGHTED.better(0.8, 0.7)
    assert math.isnan(WEIGHTED.score({"acc": math.nan, "latency": 0.2}))
    assert math.isnan(WEIGHTED.score({"acc": 0.9, "latency": math.inf}))


def test_weights_default_to_one() -> None:
    both = MultiObjective({"a": "max", "b": "max"})
    assert both.weights == (1.0, 1.0)
    assert both.score({"a": 1.0, "b": 2.0}) == 3.0


def test_every_metric_must_be_reported() -> None:
    for objective in (WEIGHTED, PARETO):
        with pytest.raises(MetricError, match="'latency' was never reported"):
            objective.score({"acc": 0.9})
        with pytest.raises(MetricError, match="report a number"):
            objective.score({"acc": 0.9, "latency": "fast"})


def test_weighted_objective_ranks_by_the_weighted_sum() -> None:
    # by accuracy alone member 0 is best; the weighted sum prefers member 2
    pop = members(
        WEIGHTED,
        [
            {"acc": 0.95, "latency": 0.9},  # 0.5
            {"acc": 0.5, "latency": 0.5},  # 0.25
            {"acc": 0.9, "latency": 0.1},  # 0.85
            {"acc": 0.1, "latency": 0.1},  # 0.05
        ],
    )
    assert list(pop.order(WEIGHTED)) == [2, 0, 1, 3]
    donor = Truncation(0.25).select_donor(pop.view(3), pop, WEIGHTED, np.random.default_rng(0))
    assert donor is not None
    assert donor.member == 2


# --- pareto -----------------------------------------------------------------------------


def front_of(keys: np.ndarray) -> list[int]:
    """The front each key encodes: ``-front <= key <= -front + 0.5``."""
    return [math.ceil(-key) for key in keys]


def test_pareto_fronts_of_a_known_set() -> None:
    # (acc, latency): acc higher and latency lower are better
    points = [
        (0.9, 5.0),  # front 0: best accuracy
        (0.5, 1.0),  # front 0: best latency
        (0.7, 3.0),  # front 0: a trade-off
        (0.6, 4.0),  # front 1: dominated by (0.7, 3)
        (0.4, 2.0),  # front 1: dominated by (0.5, 1)
        (0.3, 6.0),  # front 2: dominated by (0.6, 4) and (0.4, 2)
    ]
    keys = pareto_population(points).keys(PARETO)
    assert front_of(keys) == [0, 0, 0, 1, 1, 2]
    assert all(-f <= k <= -f + 0.5 for f, k in zip(front_of(keys), keys, strict=True))


def test_crowding_prefers_the_extremes_and_sparse_regions_of_a_front() -> None:
    front = [(0.0, 10.0), (1.0, 9.0), (5.0, 5.0), (9.0, 1.0), (10.0, 0.0)]
    # two metrics to maximise: a trade-off line, all on front 0
    keys = pareto_keys(np.array(front))
    assert front_of(keys) == [0] * 5
    # extremes first; then (5, 5), which has the most room around it; (1, 9) and (9, 1) tie
    assert keys[0] == keys[4] == 0.5
    assert keys[0] > keys[2] > keys[1] == keys[3] >= 0.0


def test_pareto_unusable_rows_rank_last_and_equal_rows_tie() -> None:
    keys = pareto_keys(np.array([[1.0, 1.0], [np.nan, 5.0], [1.0, 1.0], [0.0, np.inf]]))
    assert keys[1] == keys[3] == -np.inf
    assert keys[0] == keys[2]
    assert np.all(pareto_keys(np.full((3, 2), np.nan)) == -np.inf)


def test_pareto_score_is_the_first_metrics_raw_value() -> None:
    assert PARETO.score({"acc": 0.7, "latency": 3.0}) == 0.7
    assert PARETO.mode == "max"
    loss_first = MultiObjective({"loss": "min", "acc": "max"}, combine="pareto")
    assert loss_first.mode == "min"
    assert loss_first.metric == "loss"
    assert loss_first.key(0.2) > loss_first.key(0.3)


def test_pareto_needs_the_members_metrics() -> None:
    bare = Population.from_views(
        [MemberView(member=0, trial_id=1, step=1, score=0.5), MemberView(1, 2, 1, 0.6)]
    )
    with pytest.raises(MetricError, match="the population carries no metrics"):
        PARETO.keys(bare)


def test_truncation_over_pareto_copies_from_the_front() -> None:
    points = [(0.9, 5.0), (0.5, 1.0), (0.7, 3.0), (0.6, 4.0), (0.4, 2.0), (0.3, 6.0)]
    pop = pareto_population(points)
    worst = pop.view(5)
    donors = {
        donor.member
        for seed in range(100)
        if (donor := Truncation(0.5).select_donor(worst, pop, PARETO, np.random.default_rng(seed)))
    }
    # the top half by key: the three members of front 0
    assert donors == {0, 1, 2}


def test_tournament_over_pareto_copies_only_a_higher_ranked_opponent() -> None:
    pop = pareto_population([(0.9, 5.0), (0.5, 1.0), (0.7, 3.0), (0.6, 4.0)])
    keys = pop.keys(PARETO)
    for seed in range(50):
        for row in range(4):
            donor = BinaryTournament().select_donor(
                pop.view(row), pop, PARETO, np.random.default_rng(seed)
            )
            if donor is not None:
                assert keys[pop.index(donor.member)] > keys[row]
    # the dominated member 3 copies whenever it meets anyone: all are better
    assert all(
        BinaryTournament().select_donor(pop.view(3), pop, PARETO, np.random.default_rng(seed))
        for seed in range(20)
    )


@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)),
        min_size=1,
        max_size=12,
    ),
    st.randoms(use_true_random=False),
)
def test_pareto_keys_respect_dominance_and_ignore_row_order(
    rows: list[tuple[int, int, int]], shuffler: Any
) -> None:
    values = np.array(rows, dtype=float)
    keys = pareto_keys(values)
    for i in range(len(values)):
        for j in range(len(values)):
            if np.all(values[i] >= values[j]) and np.any(values[i] > values[j]):
                assert keys[i] > keys[j]
            if np.array_equal(values[i], values[j]):
                assert keys[i] == keys[j]
    order = list(range(len(values)))
    shuffler.shuffle(order)
    assert np.array_equal(pareto_keys(values[order]), keys[order])


# --- specs and validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "objective",
    [
        WEIGHTED,
        PARETO,
        MultiObjective({"a": "max", "b": "max", "c": "min"}),
        MultiObjective([Objective("loss", "min"), Objective("acc")], combine="pareto"),
    ],
)
def test_multi_objective_specs_round_trip_through_json(objective: MultiObjective) -> None:
    rebuilt = objective_from_dict(json.loads(json.dumps(objective.to_dict())))
    assert rebuilt == objective
    assert hash(rebuilt) == hash(objective)
    assert rebuilt.metric_names == objective.metric_names


def test_multi_objective_spec_keeps_the_order_and_defaults() -> None:
    spec = {"metrics": [{"metric": "latency", "mode": "min"}, {"metric": "acc"}]}
    objective = objective_from_dict(spec)
    assert objective == MultiObjective({"latency": "min", "acc": "max"})
    assert objective.metric == "latency"
    assert WEIGHTED.to_dict() == {
        "metrics": [
            {"metric": "acc", "mode": "max", "weight": 1.0},
            {"metric": "latency", "mode": "min", "weight": 0.5},
        ],
        "combine": "weighted",
    }


def test_a_policy_takes_a_multi_objective() -> None:
    pbt = PBT(PARETO, ready_every=5, total_steps=50)
    assert PBT.from_dict(json.loads(json.dumps(pbt.to_dict()))) == pbt


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: MultiObjective({}), "give at least one metric"),
        (lambda: MultiObjective("acc"), "pass the metrics and their modes"),
        (lambda: MultiObjective(["acc"]), "'acc' is not an Objective"),
        (lambda: MultiObjective({"a": "up"}), "mode must be 'max'"),
        (lambda: MultiObjective([Objective("a"), Objective("a")]), "appears more than once"),
        (lambda: MultiObjective({"a": "max"}, combine="sum"), "combine must be 'weighted'"),
        (
            lambda: MultiObjective({"a": "max"}, weights={"a": 1}, combine="pareto"),
            "weights are only for combine='weighted'",
        ),
        (lambda: MultiObjective({"a": "max", "b": "max"}, weights={"a": 1}), "missing b"),
        (lambda: MultiObjective({"a": "max"}, weights={"a": 1, "z": 2}), "unknown z"),
        (lambda: MultiObjective({"a": "max"}, weights={"a": -1}), "weights must be finite"),
        (lambda: MultiObjective({"a": "max"}, weights={"a": math.nan}), "above 0"),
        (lambda: objective_from_dict({"metrics": "acc"}), "metrics must be a list"),
        (lambda: objective_from_dict({"metrics": [{"mode": "max"}]}), "with a metric"),
        (
            lambda: objective_from_dict({"metrics": [{"metric": "a", "goal": 1}]}),
            "unknown goal",
        ),
        (
            lambda: objective_from_dict({"metrics": [{"metric": "a"}], "mode": "max"}),
            "unknown mode; an objective over several metrics takes the keys metrics, combine",
        ),
        (
            lambda: objective_from_dict(
                {"metrics": [{"metric": "a", "weight": 2}], "combine": "pareto"}
            ),
            "weights are only for",
        ),
    ],
)
def test_bad_multi_objectives_are_config_errors(build: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        build()
    assert fragment in str(error.value)
