"""Lineage: ancestry, topological order and schedules."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pbtkit._exceptions import NotFound
from pbtkit.core import Schedule, Segment, TrialNode, ancestry, schedule, topological_order


def node(
    trial_id: int, member: int, parent: int | None, start: int, end: int, **hparams: Any
) -> TrialNode:
    return TrialNode(trial_id, member, parent, start, end, hparams)


def two_members() -> dict[int, TrialNode]:
    """Member 0 and 1 train three rounds; member 1 exploits member 0 before the third."""
    trials = [
        node(1, 0, None, 0, 10, lr=0.1),
        node(2, 1, None, 0, 10, lr=0.01),
        node(3, 0, 1, 10, 20, lr=0.1),
        node(4, 1, 2, 10, 20, lr=0.01),
        node(5, 0, 3, 20, 30, lr=0.1),
        node(6, 1, 3, 20, 30, lr=0.12),  # exploit: member 1 starts from member 0's trial 3
        node(7, 1, 6, 30, 40, lr=0.12),
    ]
    return {trial.trial_id: trial for trial in trials}


def test_ancestry_follows_an_exploit_edge_to_another_member() -> None:
    chain = ancestry(two_members(), 7)
    assert [t.trial_id for t in chain] == [1, 3, 6, 7]
    assert [t.member for t in chain] == [0, 0, 1, 1]
    assert [t.trial_id for t in ancestry(two_members(), 1)] == [1]


def test_ancestry_of_a_missing_trial_is_not_found() -> None:
    with pytest.raises(NotFound, match="trial 99 is not among the 7 trials given"):
        ancestry(two_members(), 99)
    trials = two_members()
    del trials[3]
    with pytest.raises(NotFound, match="trial 6 names parent 3, which is not among"):
        ancestry(trials, 7)
    with pytest.raises(KeyError):  # NotFound is a KeyError too
        ancestry({}, 1)


def test_ancestry_detects_cycles() -> None:
    trials = {1: node(1, 0, 3, 0, 10), 2: node(2, 0, 1, 10, 20), 3: node(3, 0, 2, 20, 30)}
    with pytest.raises(ValueError, match="form a cycle"):
        ancestry(trials, 2)


def test_trial_nodes_are_validated() -> None:
    with pytest.raises(ValueError, match="names itself as its parent"):
        node(1, 0, 1, 0, 10)
    with pytest.raises(ValueError, match="need 0 <= start_step <= end_step"):
        node(1, 0, None, 10, 5)
    with pytest.raises(ValueError, match="need 0 <= start_step <= end_step"):
        node(1, 0, None, -1, 5)


def test_topological_order_puts_parents_first_and_ties_by_id() -> None:
    assert topological_order(two_members()) == [1, 2, 3, 4, 5, 6, 7]
    shuffled = {6: node(6, 0, 9, 0, 1), 9: node(9, 0, None, 0, 1), 3: node(3, 0, None, 0, 1)}
    assert topological_order(shuffled) == [3, 9, 6]


def test_topological_order_ignores_parents_outside_the_mapping() -> None:
    trials = {5: node(5, 0, 2, 10, 20), 6: node(6, 0, 5, 20, 30), 4: node(4, 1, None, 0, 10)}
    assert topological_order(trials) == [4, 5, 6]


def test_topological_order_detects_cycles() -> None:
    trials = {1: node(1, 0, 2, 0, 1), 2: node(2, 0, 1, 0, 1), 3: node(3, 0, None, 0, 1)}
    with pytest.raises(ValueError, match=r"the parents of trials \[1, 2\] form a cycle"):
        topological_order(trials)


@st.composite
def random_dags(draw: st.DrawFn) -> dict[int, TrialNode]:
    """Trials with random ids whose parents were created before them (so no cycles)."""
    ids = draw(st.lists(st.integers(0, 10_000), min_size=1, max_size=40, unique=True))
    trials: dict[int, TrialNode] = {}
    for index, trial_id in enumerate(ids):
        parent = draw(st.one_of(st.none(), st.sampled_from(ids[:index]))) if index else None
        trials[trial_id] = node(trial_id, 0, parent, 0, 1)
    keys = draw(st.permutations(list(trials)))
    return {key: trials[key] for key in keys}


@given(random_dags())
def test_topological_order_of_any_dag(trials: dict[int, TrialNode]) -> None:
    order = topological_order(trials)
    assert sorted(order) == sorted(trials)
    position = {trial_id: index for index, trial_id in enumerate(order)}
    for trial in trials.values():
        if trial.parent_id is not None:
            assert position[trial.parent_id] < position[trial.trial_id]
    roots = [trial_id for trial_id in order if trials[trial_id].parent_id is None]
    assert order[0] == min(roots)
    for trial_id in trials:  # every ancestry is a path in the order
        chain = [t.trial_id for t in ancestry(trials, trial_id)]
        assert [position[t] for t in chain] == sorted(position[t] for t in chain)


def test_schedule_merges_equal_consecutive_hparams() -> None:
    plan = schedule(two_members(), 7)
    assert len(plan) == 2
    first, second = plan.segments
    assert (first.start_step, first.end_step, first.trial_id, first.member) == (0, 20, 3, 0)
    assert (second.start_step, second.end_step, second.trial_id, second.member) == (20, 40, 7, 1)
    assert plan.end_step == 40
    assert plan.changes() == [(0, {"lr": 0.1}), (20, {"lr": 0.12})]


@pytest.mark.parametrize(
    ("step", "expected"), [(0, 0.1), (9, 0.1), (10, 0.1), (19, 0.1), (20, 0.12), (39, 0.12)]
)
def test_schedule_at_returns_the_values_in_force(step: int, expected: float) -> None:
    assert schedule(two_members(), 7).at(step) == {"lr": expected}


@pytest.mark.parametrize("step", [-1, 40, 1000])
def test_schedule_at_outside_is_an_error(step: int) -> None:
    with pytest.raises(ValueError, match=r"outside the schedule, which covers steps \[0, 40\)"):
        schedule(two_members(), 7).at(step)


def test_schedule_keeps_changes_that_come_back() -> None:
    trials = {
        1: node(1, 0, None, 0, 10, lr=0.1),
        2: node(2, 0, 1, 10, 20, lr=0.2),
        3: node(3, 0, 2, 20, 25, lr=0.1),
        4: node(4, 0, 3, 25, 25, lr=0.3),  # trained no steps: skipped
        5: node(5, 0, 4, 25, 30, lr=0.1),
    }
    plan = schedule(trials, 5)
    assert plan.changes() == [(0, {"lr": 0.1}), (10, {"lr": 0.2}), (20, {"lr": 0.1})]
    assert plan.segments[-1].trial_id == 5
    assert plan.at(27) == {"lr": 0.1}


def test_schedule_rejects_a_gap_between_parent_and_child() -> None:
    trials = {1: node(1, 0, None, 0, 10, lr=0.1), 2: node(2, 0, 1, 15, 20, lr=0.1)}
    with pytest.raises(ValueError, match="starts at step 15 but its parent 1 ended at step 10"):
        schedule(trials, 2)


@given(
    st.lists(
        st.tuples(st.integers(1, 5), st.sampled_from([0.1, 0.2, 0.3])), min_size=1, max_size=15
    )
)
def test_schedule_of_any_chain(rounds: list[tuple[int, float]]) -> None:
    trials: dict[int, TrialNode] = {}
    step = 0
    for index, (length, lr) in enumerate(rounds):
        parent = index - 1 if index else None
        trials[index] = node(index, index % 3, parent, step, step + length, lr=lr)
        step += length
    plan = schedule(trials, len(rounds) - 1)
    assert plan.end_step == step
    for trial in trials.values():
        for inside in range(trial.start_step, trial.end_step):
            assert plan.at(inside) == trial.hparams
    values = [segment.hparams["lr"] for segment in plan.segments]
    assert all(a != b for a, b in itertools.pairwise(values))
    assert Schedule.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    # a replay calls the training function once per recorded trial
    pieces = [(p.start_step, p.end_step, p.trial_id, dict(p.hparams)) for p in plan.pieces()]
    assert pieces == [(t.start_step, t.end_step, t.trial_id, t.hparams) for t in trials.values()]


def test_schedule_round_trips_through_json() -> None:
    plan = schedule(two_members(), 7)
    assert Schedule.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_schedule_validates_its_segments() -> None:
    with pytest.raises(ValueError, match="one ends at step 10, the next starts at 12"):
        Schedule((Segment(0, 10, 0, 1, {}), Segment(12, 20, 0, 2, {})))
    with pytest.raises(ValueError, match="a segment needs 0 <= start_step < end_step"):
        Segment(5, 5, 0, 1, {})
    with pytest.raises(ValueError, match="is missing hparams"):
        Schedule.from_dict(
            {"segments": [{"start_step": 0, "end_step": 1, "member": 0, "trial_id": 1}]}
        )
    empty = Schedule(())
    assert len(empty) == 0
    assert empty.end_step == 0
    with pytest.raises(ValueError, match="outside the schedule"):
        empty.at(0)


def test_a_schedule_keeps_the_ancestry_as_its_trials() -> None:
    plan = schedule(two_members(), 7)
    assert [t.trial_id for t in plan.trials] == [1, 3, 6, 7]
    assert [(s.start_step, s.end_step, s.trial_id) for s in plan.segments] == [
        (0, 20, 3),
        (20, 40, 7),
    ]
    data = plan.to_dict()
    assert (data["member"], data["trial_id"], data["start_step"], data["end_step"]) == (1, 7, 0, 40)
    assert [t["parent_id"] for t in data["trials"]] == [None, 1, 3, 6]


def test_pieces_cut_the_schedule_at_every_recorded_trial() -> None:
    plan = schedule(two_members(), 7)

    def spans(pieces: list[Segment]) -> list[tuple[int, int, int, int, float]]:
        return [(p.start_step, p.end_step, p.member, p.trial_id, p.hparams["lr"]) for p in pieces]

    assert spans(plan.pieces()) == [
        (0, 10, 0, 1, 0.1),
        (10, 20, 0, 3, 0.1),
        (20, 30, 1, 6, 0.12),
        (30, 40, 1, 7, 0.12),
    ]
    assert spans(plan.pieces(5, 25)) == [
        (5, 10, 0, 1, 0.1),
        (10, 20, 0, 3, 0.1),
        (20, 25, 1, 6, 0.12),
    ]
    # without the trials, one piece per segment
    assert spans(Schedule(plan.segments).pieces(end_step=30)) == [
        (0, 20, 0, 3, 0.1),
        (20, 30, 1, 7, 0.12),
    ]
    for start, end in [(0, 41), (-1, 10), (10, 10), (20, 10)]:
        with pytest.raises(ValueError, match=r"inside the schedule, which covers steps \[0, 40\)"):
            plan.pieces(start, end)


def test_a_schedule_checks_its_trials() -> None:
    plan = schedule(two_members(), 7)
    with pytest.raises(ValueError, match=r"trial 7 .* does not follow trial 3"):
        Schedule(plan.segments, (plan.trials[0], plan.trials[1], plan.trials[3]))
    with pytest.raises(ValueError, match=r"the trials cover steps \[0, 30\) but the segments"):
        Schedule(plan.segments, plan.trials[:3])


def test_schedule_from_dict_says_what_is_malformed() -> None:
    good = schedule(two_members(), 7).to_dict()
    assert Schedule.from_dict({"segments": good["segments"]}).trials == ()
    cases: list[tuple[object, str]] = [
        ([], "must be an object with a 'segments' list, got list"),
        ({"segments": "x"}, "'segments' .* as lists"),
        ({**good, "trials": {}}, "'segments' .* as lists"),
        ({"segments": [1]}, "a schedule segment must be an object, got 1"),
        ({"segments": [{**good["segments"][0], "member": True}]}, "member must be an integer"),
        ({"segments": [{**good["segments"][0], "hparams": [1]}]}, "hparams must be an object"),
        ({**good, "trials": [{"trial_id": 1}]}, "trial .* is missing member, start_step"),
        ({**good, "trials": [{**good["trials"][0], "parent_id": "1"}]}, "parent_id must be"),
        ({**good, "metric": 3}, "'metric' must be a string"),
    ]
    for spec, message in cases:
        with pytest.raises(ValueError, match=message):
            Schedule.from_dict(spec)
