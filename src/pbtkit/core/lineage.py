"""Lineage: the DAG of trials, its topological order, and hyperparameter schedules.

Every trial but a member's first starts from a parent trial's checkpoint: the member's own
previous trial, or another member's after an exploit. Following the parents of a trial back
to its root gives the *schedule* of hyperparameters that produced its weights, which can be
replayed from scratch.

Steps are counted half-open: a trial with ``start_step=100, end_step=200`` trained the steps
``100 .. 199``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pbtkit._exceptions import NotFound

__all__ = [
    "Schedule",
    "Segment",
    "TrialNode",
    "ancestry",
    "schedule",
    "topological_order",
]


@dataclass(frozen=True, slots=True)
class TrialNode:
    """One trial as the lineage sees it.

    Attributes:
        trial_id: The trial's id.
        member: The member that ran it.
        parent_id: The trial whose checkpoint it started from, or ``None`` for a root.
        start_step: The first step it trained.
        end_step: The step it stopped at (exclusive).
        hparams: The hyperparameters it trained with.
    """

    trial_id: int
    member: int
    parent_id: int | None
    start_step: int
    end_step: int
    hparams: Mapping[str, Any]

    def __post_init__(self) -> None:
        if self.parent_id == self.trial_id:
            raise ValueError(f"trial {self.trial_id} names itself as its parent")
        if not 0 <= self.start_step <= self.end_step:
            raise ValueError(
                f"trial {self.trial_id}: need 0 <= start_step <= end_step, got "
                f"start_step={self.start_step}, end_step={self.end_step}"
            )


def ancestry(trials: Mapping[int, TrialNode], trial_id: int) -> list[TrialNode]:
    """The chain of trials that led to ``trial_id``, root first, ``trial_id`` last.

    Args:
        trials: Trials by id.
        trial_id: The trial whose ancestry to follow.

    Returns:
        The trials from the root to ``trial_id``, following ``parent_id``.

    Raises:
        NotFound: ``trial_id``, or a parent on the way, is not in ``trials``.
        ValueError: The parents form a cycle.
    """
    chain: list[TrialNode] = []
    seen: set[int] = set()
    current: int | None = trial_id
    while current is not None:
        if current in seen:
            raise ValueError(
                f"the parents of trial {trial_id} form a cycle through trial {current}; "
                f"a trial's parent must have finished before it started"
            )
        if current not in trials:
            if current == trial_id:
                raise NotFound(f"trial {trial_id} is not among the {len(trials)} trials given")
            raise NotFound(
                f"trial {chain[-1].trial_id} names parent {current}, which is not among the "
                f"trials given; pass every trial of the lineage"
            )
        seen.add(current)
        node = trials[current]
        chain.append(node)
        current = node.parent_id
    chain.reverse()
    return chain


def topological_order(trials: Mapping[int, TrialNode]) -> list[int]:
    """Trial ids ordered so that every parent comes before its children.

    Kahn's algorithm; among trials that are ready at the same time the lowest id comes
    first, so the order is deterministic. A parent id that is not in ``trials`` is ignored
    (the trial counts as a root).

    Raises:
        ValueError: The parents form a cycle.
    """
    children: dict[int, list[int]] = {trial_id: [] for trial_id in trials}
    waiting: dict[int, int] = {}
    for trial_id, node in trials.items():
        parent = node.parent_id
        if parent is not None and parent in trials:
            children[parent].append(trial_id)
            waiting[trial_id] = 1
        else:
            waiting[trial_id] = 0
    ready = [trial_id for trial_id, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        trial_id = heapq.heappop(ready)
        order.append(trial_id)
        for child in children[trial_id]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, child)
    if len(order) != len(trials):
        stuck = sorted(set(trials) - set(order))
        raise ValueError(f"the parents of trials {stuck} form a cycle; no order exists")
    return order


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of steps trained with one set of hyperparameters.

    Attributes:
        start_step: The first step of the stretch.
        end_step: The step it ends at (exclusive).
        member: The member that ran the stretch's last trial.
        trial_id: The id of the stretch's last trial.
        hparams: The hyperparameters in force.
    """

    start_step: int
    end_step: int
    member: int
    trial_id: int
    hparams: Mapping[str, Any]

    def __post_init__(self) -> None:
        if not 0 <= self.start_step < self.end_step:
            raise ValueError(
                f"a segment needs 0 <= start_step < end_step, got start_step="
                f"{self.start_step}, end_step={self.end_step}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The segment as a JSON-able dict."""
        return {
            "start_step": self.start_step,
            "end_step": self.end_step,
            "member": self.member,
            "trial_id": self.trial_id,
            "hparams": dict(self.hparams),
        }


@dataclass(frozen=True, slots=True)
class Schedule:
    """The hyperparameters in force over a lineage, one :class:`Segment` per change.

    Consecutive trials with identical hyperparameters are merged into one segment, which
    keeps the id and member of the *last* trial merged into it (the one whose checkpoint
    holds the weights at the segment's end).

    Raises:
        ValueError: The segments do not follow each other without gaps or overlaps.
    """

    segments: tuple[Segment, ...]

    def __post_init__(self) -> None:
        segments = tuple(self.segments)
        for before, after in itertools.pairwise(segments):
            if after.start_step != before.end_step:
                raise ValueError(
                    f"segments must follow each other: one ends at step {before.end_step}, "
                    f"the next starts at {after.start_step}"
                )
        object.__setattr__(self, "segments", segments)

    def __len__(self) -> int:
        return len(self.segments)

    @property
    def start_step(self) -> int:
        """The first step the schedule covers (0 for an empty schedule)."""
        return self.segments[0].start_step if self.segments else 0

    @property
    def end_step(self) -> int:
        """The step the schedule ends at (exclusive; 0 for an empty schedule)."""
        return self.segments[-1].end_step if self.segments else 0

    def at(self, step: int) -> dict[str, Any]:
        """The hyperparameters in force at ``step``.

        Raises:
            ValueError: ``step`` lies outside ``[start_step, end_step)``.
        """
        for segment in self.segments:
            if segment.start_step <= step < segment.end_step:
                return dict(segment.hparams)
        raise ValueError(
            f"step {step} is outside the schedule, which covers steps "
            f"[{self.start_step}, {self.end_step}); ask for a step in that range"
        )

    def changes(self) -> list[tuple[int, dict[str, Any]]]:
        """The step at which each segment starts, with the values it sets."""
        return [(segment.start_step, dict(segment.hparams)) for segment in self.segments]

    def to_dict(self) -> dict[str, Any]:
        """The schedule as a JSON-able dict; :meth:`from_dict` reads it back."""
        return {"segments": [segment.to_dict() for segment in self.segments]}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> Schedule:
        """Build a schedule from the dict :meth:`to_dict` writes.

        Raises:
            ValueError: A segment is missing a key or the segments do not follow each other.
        """
        keys = ("start_step", "end_step", "member", "trial_id", "hparams")
        segments = []
        for raw in spec["segments"]:
            missing = [key for key in keys if key not in raw]
            if missing:
                raise ValueError(f"schedule segment {raw!r} is missing {', '.join(missing)}")
            segments.append(Segment(**{key: raw[key] for key in keys}))
        return cls(tuple(segments))


def schedule(trials: Mapping[int, TrialNode], trial_id: int) -> Schedule:
    """The hyperparameter schedule that produced ``trial_id``'s weights.

    Trials that trained no steps are skipped; consecutive trials with equal
    hyperparameters are merged (see :class:`Schedule`).

    Raises:
        NotFound: ``trial_id`` or one of its ancestors is not in ``trials``.
        ValueError: The parents form a cycle, or a trial does not start where its
            parent ended.
    """
    segments: list[Segment] = []
    previous: TrialNode | None = None
    for node in ancestry(trials, trial_id):
        if previous is not None and node.start_step != previous.end_step:
            raise ValueError(
                f"trial {node.trial_id} starts at step {node.start_step} but its parent "
                f"{previous.trial_id} ended at step {previous.end_step}; a trial must start "
                f"where its parent's checkpoint left off"
            )
        previous = node
        if node.start_step == node.end_step:
            continue
        if segments and dict(segments[-1].hparams) == dict(node.hparams):
            segments[-1] = Segment(
                segments[-1].start_step, node.end_step, node.member, node.trial_id, node.hparams
            )
        else:
            segments.append(
                Segment(node.start_step, node.end_step, node.member, node.trial_id, node.hparams)
            )
    return Schedule(tuple(segments))
