"""The logger contract: what a tracker is told about a run, and when.

A :class:`Logger` never reads the store itself. One reader (:class:`~pbtkit.loggers.StoreTail`)
looks at the experiment from the driver, in a thread of its own, and hands every logger
the same :class:`Update`: what is new since the last one. So the trackers cost the workers
nothing (they never wait for MLflow, W&B or the disk of the event files), and each report
is read once, while the run goes on, not again at its end.

Order of calls: :meth:`Logger.open` once, :meth:`Logger.log` for each update (the first
one holds everything stored so far: a logger attached to a finished run gets it all at
once), :meth:`Logger.close` once, even after an error.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pbtkit.store import EventRecord, ExperimentRecord, MemberRecord, ReportRecord, TrialRecord

__all__ = [
    "Logger",
    "RunInfo",
    "INACTIVE",
    "Update",
    "changed_hparams",
    "describe_changes",
    "hparam_value",
    "sanitize_key",
]


@dataclass(frozen=True, slots=True)
class RunInfo:
    """The experiment a logger writes, as stored when it was opened.

    Attributes:
        name: The experiment's name.
        config: Its stored settings (plain JSON: ``population``, ``policy``, ``space``...).
        metric: The objective metric (the first one of several).
        mode: ``max`` or ``min``.
        space: Hyperparameter name -> its domain as stored (``{"type": "choice",
            "values": [...]}``).
        checkpoint_root: Where the checkpoints are (a directory or an object store's URL).
    """

    name: str
    config: Mapping[str, Any]
    metric: str
    mode: str
    space: Mapping[str, Mapping[str, Any]]
    checkpoint_root: str

    @classmethod
    def of(cls, experiment: ExperimentRecord) -> RunInfo:
        """Read the parts loggers need from a stored experiment (no policy is rebuilt,
        so a custom explore function named in the settings is never imported)."""
        config = experiment.config
        policy = _mapping(config.get("policy"))
        objective = _mapping(policy.get("objective"))
        metric = objective.get("metric")
        if metric is None:  # several objectives: the first names the curves
            parts = objective.get("metrics") or []
            first = parts[0] if isinstance(parts, list) and parts else {}
            metric = _mapping(first).get("metric", "")
        space = {str(k): _mapping(v) for k, v in _mapping(config.get("space")).items()}
        return cls(
            name=experiment.name,
            config=config,
            metric=str(metric or ""),
            mode="min" if objective.get("mode") == "min" else "max",
            space=space,
            checkpoint_root=str(config.get("checkpoint_root", "")),
        )

    @property
    def population(self) -> int:
        """Members in the population."""
        value = self.config.get("population")
        return value if isinstance(value, int) else 0

    def best(self, members: Sequence[MemberRecord]) -> MemberRecord | None:
        """The member with the best score (lowest index on a tie), None while no trial
        has finished."""
        best: MemberRecord | None = None
        for m in members:
            if m.latest_trial_id is not None and (best is None or self.better(m.score, best.score)):
                best = m
        return best

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` beats ``b`` (NaN never does)."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a > b if self.mode == "max" else a < b


@dataclass(frozen=True, slots=True)
class Update:
    """What changed in an experiment since the previous update.

    Attributes:
        experiment: The experiment now (its ``status`` says whether it has finished).
        members: Every member now.
        trials: Every trial now, by id (to look up an event's trial).
        started: Trials seen running (or done) for the first time, oldest first: their
            hyperparameters are in force from their ``start_step``.
        reports: New reports, of running and finished trials alike, in the order they
            were made. A trial that failed and runs again reports its steps again.
        finished: Trials that finished since, oldest first.
        events: New events but ``continue`` (exploits, stops, retries, failures).
        members_finished: Members that became ``done`` or ``failed`` since.
    """

    experiment: ExperimentRecord
    members: tuple[MemberRecord, ...]
    trials: Mapping[int, TrialRecord]
    started: tuple[TrialRecord, ...] = ()
    reports: tuple[ReportRecord, ...] = ()
    finished: tuple[TrialRecord, ...] = ()
    events: tuple[EventRecord, ...] = ()
    members_finished: tuple[MemberRecord, ...] = field(default=())

    @property
    def empty(self) -> bool:
        """Whether nothing is new."""
        return not (
            self.started or self.reports or self.finished or self.events or self.members_finished
        )

    def event_step(self, event: EventRecord) -> int:
        """The member's step at which an event happened: an exploit or a retry at the
        start of the trial it concerns, a stop or a failure at its end."""
        trial = self.trials.get(event.trial_id) if event.trial_id is not None else None
        if trial is None:
            member = next((m for m in self.members if m.member == event.member), None)
            return member.step if member is not None else 0
        return trial.end_step if event.kind in ("stop", "failed") else trial.start_step


class Logger(abc.ABC):
    """A tracker that is told about a run as it goes (see the module docstring).

    Subclasses implement :meth:`log`, and :meth:`open` and :meth:`close` when they hold
    something open. They are called from one thread, never at once.
    """

    #: A short name for messages (``"mlflow"``).
    kind: str = "logger"

    def open(self, run: RunInfo) -> None:  # noqa: B027 - optional hook
        """Called once, before the first update."""

    @abc.abstractmethod
    def log(self, update: Update) -> None:
        """Write what is new."""

    def close(self, update: Update | None) -> None:  # noqa: B027 - optional hook
        """Called once at the end, with the last update (None if none was read).

        Args:
            update: The experiment as it stands at the end (its ``experiment.status``
                says whether the run finished or was stopped before).
        """


def hparam_value(
    name: str, value: Any, space: Mapping[str, Mapping[str, Any]]
) -> tuple[float | None, str | None]:
    """A hyperparameter's value as a curve point, and as text when it is not a number.

    Numbers (and booleans) are their own point. A categorical or ordinal value that is not
    a number is drawn at its index among the domain's values, with the value as text
    beside it; one that is not among them has no point.

    Returns:
        ``(point, text)``: ``point`` None when it has none; ``text`` None for numbers.
    """
    if isinstance(value, bool | int | float):
        return float(value), None
    values = space.get(name, {}).get("values")
    text = str(value)
    if isinstance(values, list):
        for i, candidate in enumerate(values):
            if candidate == value:
                return float(i), text
    return None, text


def changed_hparams(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """The hyperparameters an exploit changed, as ``(name, old, new)``.

    A hyperparameter one side leaves out (a conditional one, inactive there) counts as
    changed when the other has it; its value on that side is :data:`INACTIVE`.
    """
    names = list(dict.fromkeys([*new, *old]))
    return [
        (k, old.get(k, INACTIVE), new.get(k, INACTIVE))
        for k in names
        if (k in old) != (k in new) or old[k] != new[k]
    ]


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``"lr 0.01 -> 0.012, act relu -> tanh"``; ``inactive`` for a value left out."""
    parts = [f"{k} {_short(a)} -> {_short(b)}" for k, a, b in changed_hparams(old, new)]
    return ", ".join(parts) or "same hyperparameters"


class _Inactive:
    """The value of a hyperparameter that a trial does not have (a conditional one)."""

    def __repr__(self) -> str:
        return "inactive"


#: Stands for a hyperparameter left out of a trial's values (inactive under a condition).
INACTIVE: Any = _Inactive()


def _short(value: Any) -> str:
    if value is INACTIVE:
        return "inactive"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def sanitize_key(name: str, allowed: str = "-_./ ") -> str:
    """A name fit for a tracker's keys: letters, digits and ``allowed``; others become ``_``."""
    cleaned = "".join(c if c.isalnum() or c in allowed else "_" for c in name)
    return cleaned or "_"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
