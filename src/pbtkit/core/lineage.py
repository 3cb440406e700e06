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
        inherit: How it took its parent's weights when not as they were:
            ``{"mode": "shrink_perturb", "shrink": s, "noise": n}``; None otherwise.
    """

    trial_id: int
    member: int
    parent_id: int | None
    start_step: int
    end_step: int
    hparams: Mapping[str, Any]
    inherit: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.parent_id == self.trial_id:
            raise ValueError(f"trial {self.trial_id} names itself as its parent")
        if not 0 <= self.start_step <= self.end_step:
            raise ValueError(
                f"trial {self.trial_id}: need 0 <= start_step <= end_step, got "
                f"start_step={self.start_step}, end_step={self.end_step}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The trial as a JSON-able dict; :meth:`from_dict` reads it back."""
        out = {
            "trial_id": self.trial_id,
            "member": self.member,
            "parent_id": self.parent_id,
            "start_step": self.start_step,
            "end_step": self.end_step,
            "hparams": dict(self.hparams),
        }
        if self.inherit is not None:
            out["inherit"] = dict(self.inherit)
        return out

    @classmethod
    def from_dict(cls, spec: Any) -> TrialNode:
        """Build a trial from the dict :meth:`to_dict` writes.

        Raises:
            ValueError: A key is missing or has a value of the wrong type.
        """
        raw = _fields(spec, "trial", ("trial_id", "member", "start_step", "end_step"))
        parent = spec.get("parent_id")
        if parent is not None:
            _integer(spec, "trial", "parent_id")
        inherit = spec.get("inherit")
        if inherit is not None:
            inherit = _inherit(spec)
        return cls(
            raw["trial_id"],
            raw["member"],
            parent,
            raw["start_step"],
            raw["end_step"],
            _hparams(spec, "trial"),
            inherit,
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

    Attributes:
        segments: The stretches of equal hyperparameters, in step order. They say which
            hyperparameters are in force at each step.
        trials: The trials of the lineage, root first, if known. They say where each
            recorded trial began and ended (the ready intervals) and which trial's
            checkpoint each one started from; a replay calls the training function once
            per trial.
        experiment: The experiment the schedule comes from, if known.
        metric: That experiment's objective metric, if known.

    Raises:
        ValueError: The segments (or the trials) do not follow each other without gaps or
            overlaps, or the trials do not span the segments' steps.
    """

    segments: tuple[Segment, ...]
    trials: tuple[TrialNode, ...] = ()
    experiment: str | None = None
    metric: str | None = None

    def __post_init__(self) -> None:
        segments = tuple(self.segments)
        for before, after in itertools.pairwise(segments):
            if after.start_step != before.end_step:
                raise ValueError(
                    f"segments must follow each other: one ends at step {before.end_step}, "
                    f"the next starts at {after.start_step}"
                )
        trials = tuple(self.trials)
        for parent, child in itertools.pairwise(trials):
            if child.parent_id != parent.trial_id or child.start_step != parent.end_step:
                raise ValueError(
                    f"the trials of a schedule must form a chain: trial {child.trial_id} "
                    f"(parent {child.parent_id}, from step {child.start_step}) does not follow "
                    f"trial {parent.trial_id} (which ends at step {parent.end_step})"
                )
        if segments and trials:
            spans = (segments[0].start_step, segments[-1].end_step)
            covered = (trials[0].start_step, trials[-1].end_step)
            if covered != spans:
                raise ValueError(
                    f"the trials cover steps [{covered[0]}, {covered[1]}) but the segments "
                    f"cover [{spans[0]}, {spans[1]}); they must cover the same steps"
                )
        object.__setattr__(self, "segments", segments)
        object.__setattr__(self, "trials", trials)

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

    def pieces(self, start_step: int | None = None, end_step: int | None = None) -> list[Segment]:
        """The steps ``[start_step, end_step)`` cut at every segment and trial boundary.

        Each piece is trained by one call of the training function in a replay: it lies
        inside one recorded trial (or one segment, where the trials are not known) and
        carries the hyperparameters in force there, with the member and id of that trial.

        Args:
            start_step: Where to begin; the schedule's start by default.
            end_step: Where to end (exclusive); the schedule's end by default.

        Raises:
            ValueError: The range is empty or reaches outside the schedule.
        """
        start = self.start_step if start_step is None else start_step
        end = self.end_step if end_step is None else end_step
        if not self.start_step <= start < end <= self.end_step:
            raise ValueError(
                f"steps {start}:{end} are not a non-empty range inside the schedule, which "
                f"covers steps [{self.start_step}, {self.end_step}); pick A:B with "
                f"{self.start_step} <= A < B <= {self.end_step}"
            )
        sources: tuple[TrialNode | Segment, ...] = (
            tuple(t for t in self.trials if t.start_step < t.end_step) or self.segments
        )
        cuts = {start, end}
        for item in (*self.segments, *sources):
            cuts.update(s for s in (item.start_step, item.end_step) if start < s < end)
        bounds = sorted(cuts)
        out: list[Segment] = []
        for begin, finish in itertools.pairwise(bounds):
            source = next(s for s in sources if s.start_step <= begin < s.end_step)
            out.append(Segment(begin, finish, source.member, source.trial_id, self.at(begin)))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The schedule as a JSON-able dict; :meth:`from_dict` reads it back.

        Besides ``segments`` and ``trials`` it names the experiment and metric (when
        known), the member and id of the final trial, and the steps covered; those last
        ones are for people to read and are ignored by :meth:`from_dict`.
        """
        last: TrialNode | Segment | None = (
            self.trials[-1] if self.trials else (self.segments[-1] if self.segments else None)
        )
        return {
            "experiment": self.experiment,
            "metric": self.metric,
            "member": None if last is None else last.member,
            "trial_id": None if last is None else last.trial_id,
            "start_step": self.start_step,
            "end_step": self.end_step,
            "segments": [segment.to_dict() for segment in self.segments],
            "trials": [trial.to_dict() for trial in self.trials],
        }

    @classmethod
    def from_dict(cls, spec: Any) -> Schedule:
        """Build a schedule from the dict :meth:`to_dict` writes.

        Only ``segments`` is required; ``trials``, ``experiment`` and ``metric`` are read
        when present.

        Raises:
            ValueError: The dict is malformed: a key is missing, a value has the wrong
                type, or the segments do not follow each other.
        """
        if not isinstance(spec, Mapping):
            raise ValueError(
                f"a schedule must be an object with a 'segments' list, got {type(spec).__name__}"
            )
        raw_segments = spec.get("segments")
        raw_trials = spec.get("trials")
        raw_trials = [] if raw_trials is None else raw_trials
        if not isinstance(raw_segments, list) or not isinstance(raw_trials, list):
            raise ValueError(
                "a schedule needs 'segments' (and, optionally, 'trials') as lists, got "
                f"segments={type(raw_segments).__name__}, trials={type(raw_trials).__name__}"
            )
        keys = ("start_step", "end_step", "member", "trial_id")
        segments = []
        for raw in raw_segments:
            fields = _fields(raw, "schedule segment", keys)
            segments.append(Segment(**fields, hparams=_hparams(raw, "schedule segment")))
        names = {}
        for key in ("experiment", "metric"):
            value = spec.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"a schedule's {key!r} must be a string, got {value!r}")
            names[key] = value
        return cls(
            tuple(segments),
            tuple(TrialNode.from_dict(raw) for raw in raw_trials),
            experiment=names["experiment"],
            metric=names["metric"],
        )


def _fields(spec: Any, what: str, keys: tuple[str, ...]) -> dict[str, int]:
    """The integer fields ``keys`` of a dict read from JSON, checked."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"a {what} must be an object, got {spec!r}")
    missing = [key for key in (*keys, "hparams") if key not in spec]
    if missing:
        raise ValueError(f"{what} {dict(spec)!r} is missing {', '.join(missing)}")
    return {key: _integer(spec, what, key) for key in keys}


def _integer(spec: Mapping[str, Any], what: str, key: str) -> int:
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} {dict(spec)!r}: {key} must be an integer, got {value!r}")
    return value


def _inherit(spec: Mapping[str, Any]) -> dict[str, Any]:
    value = spec["inherit"]
    if (
        not isinstance(value, Mapping)
        or not isinstance(value.get("mode"), str)
        or not all(isinstance(k, str) for k in value)
    ):
        raise ValueError(
            f"trial {dict(spec)!r}: inherit must be {{'mode': kind, **settings}} (e.g. "
            f"{{'mode': 'shrink_perturb', 'shrink': s, 'noise': n}}), got {value!r}"
        )
    return dict(value)


def _hparams(spec: Mapping[str, Any], what: str) -> dict[str, Any]:
    value = spec["hparams"]
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} {dict(spec)!r}: hparams must be an object, got {value!r}")
    return dict(value)


def schedule(trials: Mapping[int, TrialNode], trial_id: int) -> Schedule:
    """The hyperparameter schedule that produced ``trial_id``'s weights.

    Trials that trained no steps get no segment; consecutive trials with equal
    hyperparameters are merged into one (see :class:`Schedule`). The schedule's
    ``trials`` are the whole ancestry, root first.

    Raises:
        NotFound: ``trial_id`` or one of its ancestors is not in ``trials``.
        ValueError: The parents form a cycle, or a trial does not start where its
            parent ended.
    """
    segments: list[Segment] = []
    previous: TrialNode | None = None
    chain = ancestry(trials, trial_id)
    for node in chain:
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
    return Schedule(tuple(segments), tuple(chain))
