"""T-test selection, initiator-based evolution and the explore-only policy."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbtkit._exceptions import ConfigError
from pbtkit.core import (
    PBT,
    Continue,
    Exploiter,
    Initiator,
    MemberView,
    MultiObjective,
    NoExploit,
    Objective,
    Perturb,
    Population,
    SearchSpace,
    TTest,
    Uniform,
    exploiter_from_dict,
)
from tests.strategies import seeds

MAX = Objective("acc", "max")
MIN = Objective("loss", "min")


def view(member: int, score: float, *, trial_id: int | None = None, **extra: Any) -> MemberView:
    return MemberView(
        member=member,
        trial_id=100 + member if trial_id is None else trial_id,
        step=10,
        score=score,
        hparams={"x": 0.1 * member},
        **extra,
    )


# --- t-test -----------------------------------------------------------------------------


def with_history(
    scores: Sequence[float],
    histories: dict[int, list[float]],
    calls: list[tuple[int, int]] | None = None,
) -> Population:
    def history(member: int, k: int) -> list[float]:
        if calls is not None:
            calls.append((member, k))
        return histories[member][-k:]

    return Population.from_views([view(i, s) for i, s in enumerate(scores)], history=history)


def test_ttest_copies_a_significantly_better_member() -> None:
    rng = np.random.default_rng(1)
    histories = {0: list(rng.normal(0.0, 0.1, 10)), 1: list(rng.normal(1.0, 0.1, 10))}
    pop = with_history([0.0, 1.0], histories)
    for seed in range(10):
        donor = TTest().select_donor(pop.view(0), pop, MAX, np.random.default_rng(seed))
        assert donor is not None
        assert donor.member == 1
    # the better member never copies the worse one
    assert TTest().select_donor(pop.view(1), pop, MAX, np.random.default_rng(0)) is None


def test_ttest_does_not_copy_when_the_difference_is_not_significant() -> None:
    # member 1's latest score is better, but its recent values are the same as member 0's
    same = [float(v) for v in range(10)]
    pop = with_history([5.0, 6.0], {0: same, 1: list(reversed(same))})
    assert TTest().select_donor(pop.view(0), pop, MAX, np.random.default_rng(0)) is None


def test_ttest_copies_rarely_between_equal_distributions() -> None:
    rng = np.random.default_rng(7)
    copies = 0
    runs = 400
    for _ in range(runs):
        histories = {0: list(rng.normal(0, 1, 10)), 1: list(rng.normal(0, 1, 10))}
        # member 1 is ahead on its latest value, so only the t-test can refuse the copy
        pop = with_history([histories[0][-1], histories[0][-1] + 1.0], histories)
        copies += TTest(alpha=0.05).select_donor(pop.view(0), pop, MAX, rng) is not None
    assert copies / runs < 0.1


def test_ttest_in_min_mode_copies_lower_losses_and_asks_for_k_values() -> None:
    rng = np.random.default_rng(3)
    histories = {0: list(rng.normal(1.0, 0.1, 30)), 1: list(rng.normal(0.5, 0.1, 30))}
    calls: list[tuple[int, int]] = []
    pop = with_history([1.0, 0.5], histories, calls)
    donor = TTest(k=5).select_donor(pop.view(0), pop, MIN, np.random.default_rng(0))
    assert donor is not None
    assert donor.member == 1
    assert sorted(calls) == [(0, 5), (1, 5)]


def test_ttest_needs_two_finite_values_on_each_side() -> None:
    pop = with_history([0.0, 1.0], {0: [0.0, math.nan], 1: [1.0, 1.1, 1.2]})
    assert TTest().select_donor(pop.view(0), pop, MAX, np.random.default_rng(0)) is None
    # constant but higher values count as better
    pop = with_history([0.0, 1.0], {0: [0.0, 0.0, 0.0], 1: [1.0, 1.0, 1.0]})
    assert TTest().select_donor(pop.view(0), pop, MAX, np.random.default_rng(0)) is not None


def test_ttest_with_a_fraction_draws_from_the_top_only() -> None:
    histories = {i: [float(i), i + 0.1, i - 0.1, float(i)] for i in range(10)}
    pop = with_history([float(i) for i in range(10)], histories)
    donors = Counter(
        d.member if (d := TTest(fraction=0.2).select_donor(pop.view(0), pop, MAX, rng)) else None
        for rng in (np.random.default_rng(seed) for seed in range(100))
    )
    assert set(donors) == {8, 9}


def test_ttest_without_history_or_scipy_is_a_config_error(monkeypatch: Any) -> None:
    pop = Population.from_views([view(0, 0.0), view(1, 1.0)])
    with pytest.raises(ConfigError, match="no history source"):
        TTest().select_donor(pop.view(0), pop, MAX, np.random.default_rng(0))
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    pop = with_history([0.0, 1.0], {0: [0.0, 0.2, 0.1], 1: [1.0, 1.2, 1.1]})
    with pytest.raises(ConfigError, match=r"pip install 'pbtkit\[stats\]'"):
        TTest().select_donor(pop.view(0), pop, MAX, np.random.default_rng(0))


# --- initiator --------------------------------------------------------------------------


def generations(count: int, size: int) -> list[MemberView]:
    """``count`` generations of ``size`` members; later generations score higher."""
    return [
        view(m, float(g * size + m), trial_id=1000 * g + m, generation=g)
        for g in range(count)
        for m in range(size)
    ]


def initiator_population(trials: list[MemberView], seen: list[int]) -> Population:
    last = max(t.generation for t in trials)
    latest = [t for t in trials if t.generation == last]

    def recent(window: int) -> list[MemberView]:
        seen.append(window)
        return [t for t in trials if t.generation > last - window]

    return Population.from_views(latest, recent=recent)


def test_initiator_draws_its_opponent_from_the_window_only() -> None:
    trials = generations(5, 4)
    seen: list[int] = []
    pop = initiator_population(trials, seen)
    weakest = view(0, -1.0, trial_id=4000, generation=4)  # every opponent beats it
    drawn: Counter[int] = Counter()
    for seed in range(600):
        donor = Initiator(window=2).select_donor(weakest, pop, MAX, np.random.default_rng(seed))
        assert donor is not None  # one tournament, lost: the opponent is the donor
        drawn[donor.trial_id] += 1
    assert set(seen) == {2}
    # generations 3 and 4 of the other members: older trials included, its own left out
    assert set(drawn) == {3001, 3002, 3003, 4001, 4002, 4003}
    assert all(70 < count < 130 for count in drawn.values()), drawn


def test_initiator_continues_when_it_wins_or_ties() -> None:
    trials = generations(2, 3)
    pop = initiator_population(trials, [])
    best = view(0, 100.0, trial_id=1000, generation=1)
    for seed in range(50):
        assert Initiator().select_donor(best, pop, MAX, np.random.default_rng(seed)) is None
    tied = [view(m, 1.0, trial_id=m, generation=0) for m in range(3)]
    pop = initiator_population(tied, [])
    for seed in range(20):
        assert Initiator().select_donor(tied[0], pop, MAX, np.random.default_rng(seed)) is None


def test_initiator_opponent_must_be_able_to_donate() -> None:
    trials = [
        view(1, 5.0, trial_id=11, generation=0, has_checkpoint=False),
        view(2, math.nan, trial_id=12, generation=0),
        view(3, math.inf, trial_id=13, generation=0),
    ]
    me = view(0, 0.0, trial_id=10, generation=0)
    pop = initiator_population([me, *trials], [])
    for seed in range(30):
        assert Initiator().select_donor(me, pop, MAX, np.random.default_rng(seed)) is None


def test_initiator_alone_continues_and_works_in_min_mode() -> None:
    me = view(0, 1.0, generation=0)
    assert Initiator().select_donor(me, [me], MAX, np.random.default_rng(0)) is None
    other = view(1, 0.5, generation=0)
    donor = Initiator(window=1).select_donor(me, [me, other], MIN, np.random.default_rng(0))
    assert donor is not None
    assert (donor.member, donor.trial_id) == (1, other.trial_id)


def test_initiator_ranks_pareto_trials_among_the_pool() -> None:
    pareto = MultiObjective({"acc": "max", "latency": "min"}, combine="pareto")
    dominated = view(0, 0.1, generation=0, metrics={"acc": 0.1, "latency": 9.0})
    better = view(1, 0.9, generation=0, metrics={"acc": 0.9, "latency": 1.0})
    donor = Initiator().select_donor(
        dominated, [dominated, better], pareto, np.random.default_rng(0)
    )
    # without a trial source the population's latest trials are the pool
    assert donor is not None
    assert donor.trial_id == better.trial_id
    assert (
        Initiator().select_donor(better, [dominated, better], pareto, np.random.default_rng(0))
        is None
    )


@given(
    scores=st.lists(
        st.one_of(st.integers(-3, 3).map(float), st.just(math.nan)), min_size=1, max_size=12
    ),
    window=st.integers(1, 3),
    seed=seeds,
)
def test_initiator_donors_are_better_trials_of_other_members_in_the_window(
    scores: list[float], window: int, seed: int
) -> None:
    trials = [view(i % 4, s, trial_id=i, generation=i // 4) for i, s in enumerate(scores)]
    pop = initiator_population(trials, [])
    last = max(t.generation for t in trials)
    for me in (t for t in trials if t.generation == last):
        donor = Initiator(window).select_donor(me, pop, MAX, np.random.default_rng(seed))
        if donor is not None:
            assert donor in trials
            assert donor.member != me.member
            assert donor.generation > last - window
            assert MAX.better(donor.score, me.score)


# --- no exploit: explore only -----------------------------------------------------------

SPACE = SearchSpace({"x": Uniform(0.0, 1.0)})


def test_no_exploit_never_copies() -> None:
    members = [view(i, float(i)) for i in range(5)]
    for explore in (True, False):
        for member in members:
            assert (
                NoExploit(explore).select_donor(member, members, MAX, np.random.default_rng(0))
                is None
            )


def test_explore_only_policy_explores_the_members_own_hyperparameters() -> None:
    members = [view(i, float(i)) for i in range(1, 5)]
    pbt = PBT(
        MAX,
        exploit=NoExploit(),
        explore=Perturb((2.0,), 0.0),
        ready_every=5,
        total_steps=50,
    )
    for member in members:
        decision = pbt.decide(member, members, SPACE, np.random.default_rng(0))
        assert decision == Continue({"x": min(member.hparams["x"] * 2.0, 1.0)})
    frozen = PBT(MAX, exploit=NoExploit(explore=False), ready_every=5, total_steps=50)
    assert frozen.decide(members[0], members, SPACE, np.random.default_rng(0)) == Continue(
        dict(members[0].hparams)
    )


# --- specs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exploiter",
    [
        TTest(),
        TTest(k=5, alpha=0.01, fraction=0.25),
        Initiator(),
        Initiator(1),
        NoExploit(),
        NoExploit(False),
    ],
)
def test_new_exploiter_specs_round_trip_through_json(exploiter: Exploiter) -> None:
    assert exploiter_from_dict(json.loads(json.dumps(exploiter.to_dict()))) == exploiter


def test_new_exploiter_specs_take_defaults() -> None:
    assert exploiter_from_dict({"type": "ttest"}) == TTest(10, 0.05, 1.0)
    assert exploiter_from_dict({"type": "initiator"}) == Initiator(2)
    assert exploiter_from_dict({"type": "no_exploit"}) == NoExploit(True)


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        (lambda: TTest(k=1), "k must be an integer >= 2"),
        (lambda: TTest(k=2.5), "k must be an integer"),
        (lambda: TTest(alpha=0), "alpha must be in (0, 1)"),
        (lambda: TTest(alpha=1.0), "alpha must be in (0, 1)"),
        (lambda: TTest(fraction=0), "fraction must be in (0, 1]"),
        (lambda: TTest(fraction=1.5), "fraction must be in (0, 1]"),
        (lambda: Initiator(0), "window must be an integer >= 1"),
        (lambda: Initiator(True), "window must be an integer"),
        (lambda: NoExploit("yes"), "explore must be True or False"),
        (lambda: exploiter_from_dict({"type": "ttest", "window": 2}), "unknown window"),
        (lambda: exploiter_from_dict({"type": "initiator", "k": 2}), "unknown k"),
    ],
)
def test_bad_new_exploiters_are_config_errors(build: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        build()
    assert fragment in str(error.value)
