"""Training replay: re-train from scratch along the schedule a lineage recorded.

A member's final weights came out of a chain of trials: its own, and across each exploit
the donor's before. :func:`replay_schedule` reads that chain back from the store as a
:class:`~pbtkit.Schedule` (the hyperparameters in force at each step, and the trials that
trained them). :func:`replay` then trains a fresh model along it with the user's own
``train(trial)``: once per recorded trial, each warm-started from the checkpoint of the
replay's previous call, never from another member (no exploits), with the hyperparameters
the schedule gives. ``trial.replay`` is True there, so the function can train on training
plus validation data, say. Any stretch ``A..B`` of the schedule may be replayed, starting
from the weights at step ``A``.

Steps are those of the lineage: the schedule counts the steps the weights received along
it, which is where the original run trained them, since a trial starts where its parent's
checkpoint left off.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pbtkit._exceptions import ConfigError, NotFound
from pbtkit.checkpoints import CheckpointStore, open_checkpoints
from pbtkit.controller import Controller, Lease
from pbtkit.core.lineage import Schedule, Segment
from pbtkit.result import Result
from pbtkit.store import ReportRecord, TrialRecord, normalize_url, open_store
from pbtkit.worker import TrainFn, Trial

__all__ = ["ReplayResult", "ReplayedTrial", "load_schedule", "replay", "replay_schedule"]


def replay_schedule(
    storage: str, experiment: str, *, member: int | None = None, trial: int | None = None
) -> Schedule:
    """The schedule that produced a trial's weights, read from an experiment's store.

    Args:
        storage: The experiment's storage URL (``sqlite:///pbt.db``, ``postgresql://...``).
        experiment: The experiment's name.
        member: Follow this member's latest finished trial.
        trial: Follow this finished trial. With neither, the best member's latest.

    Returns:
        The schedule, with the experiment's name and metric, and the lineage's trials.

    Raises:
        NotFound: No database at a SQLite path, no such experiment (the message names
            those there are), member, or finished trial.
        ConfigError: Both ``member`` and ``trial`` were given.
    """
    url = normalize_url(storage)
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :].split("?", 1)[0])
        if not path.is_file():
            raise NotFound(f"no database at {path}; pass the storage URL the experiment ran on")
    with open_store(url, create=False) as store:
        return Result(Controller(store), experiment).schedule(member, trial=trial)


def load_schedule(path: str | os.PathLike[str]) -> Schedule:
    """Read a schedule from a JSON file written with ``Schedule.to_dict()``
    (``pbtkit replay ... --out FILE``).

    Raises:
        ConfigError: The file is missing, is not JSON, or is not a schedule.
    """
    where = Path(path)
    try:
        text = where.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the schedule file {where}: {exc.strerror}") from exc
    hint = "write one with `pbtkit replay --storage URL --experiment NAME --out FILE`"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where} is not a pbtkit schedule: not valid JSON ({exc}); {hint}"
        ) from None
    try:
        return Schedule.from_dict(data)
    except ValueError as exc:
        raise ConfigError(f"{where} is not a pbtkit schedule: {exc}; {hint}") from exc


@dataclass(frozen=True, slots=True)
class ReplayedTrial:
    """One call of the training function in a replay.

    Attributes:
        start_step: The first step it trained.
        end_step: The step it stopped at (exclusive).
        member: The member that ran the recorded trial it replays.
        trial_id: The id of that recorded trial.
        hparams: The hyperparameters it trained with.
        reports: What it reported.
        checkpoint: Where its checkpoint is: a local directory, or a URL under an object
            store; None if it saved nothing, or the checkpoint was deleted once the next
            call had saved its own (see ``keep_checkpoints``).
    """

    start_step: int
    end_step: int
    member: int
    trial_id: int
    hparams: Mapping[str, Any]
    reports: tuple[ReportRecord, ...]
    checkpoint: Path | str | None


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay trained: the calls in step order and what they reported.

    Attributes:
        schedule: The schedule it followed.
        trials: One entry per call of the training function.
    """

    schedule: Schedule
    trials: tuple[ReplayedTrial, ...]

    @property
    def start_step(self) -> int:
        """The first step replayed."""
        return self.trials[0].start_step

    @property
    def end_step(self) -> int:
        """The step the replay ended at (exclusive)."""
        return self.trials[-1].end_step

    @property
    def checkpoint(self) -> Path | str | None:
        """The final weights: the last call's checkpoint (None if it saved nothing)."""
        return self.trials[-1].checkpoint

    @property
    def hparams(self) -> dict[int, dict[str, Any]]:
        """The hyperparameters the training function was given at each step."""
        return {
            step: dict(trial.hparams)
            for trial in self.trials
            for step in range(trial.start_step, trial.end_step)
        }

    @property
    def reports(self) -> list[ReportRecord]:
        """Every report, in the order they were made."""
        return [report for trial in self.trials for report in trial.reports]

    @property
    def metrics(self) -> dict[str, float]:
        """The last reported value of each metric."""
        out: dict[str, float] = {}
        for report in self.reports:
            out.update(report.metrics)
        return out

    def summary_text(self) -> str:
        """A few lines for a terminal: what was replayed and the final metrics."""
        name = self.schedule.experiment
        source = f"the schedule of experiment {name!r}" if name else "the schedule"
        changes = sum(
            dict(before.hparams) != dict(after.hparams)
            for before, after in itertools.pairwise(self.trials)
        )
        metrics = ", ".join(f"{name}={_fmt(value)}" for name, value in self.metrics.items())
        return (
            f"replayed steps {self.start_step}..{self.end_step} of {source}: "
            f"{len(self.trials)} trials, hyperparameters changed {changes} times\n"
            f"final metrics: {metrics or 'none reported'}\n"
            f"checkpoint: {self.checkpoint}"
        )


def replay(
    train: TrainFn | str,
    schedule: Schedule,
    *,
    checkpoint_dir: str | os.PathLike[str],
    start_step: int | None = None,
    end_step: int | None = None,
    start_checkpoint: str | os.PathLike[str] | None = None,
    extra_hparams: Mapping[str, Any] | None = None,
    keep_checkpoints: bool = False,
) -> ReplayResult:
    """Train from scratch along a schedule with the user's training function.

    The function is called once per recorded trial of the schedule (once per segment
    when the schedule does not list its trials), in step order, with a
    :class:`~pbtkit.Trial` whose ``hparams`` are those in force, whose
    ``parent_checkpoint`` is the checkpoint the previous call saved (None for the first
    call from step 0), and whose ``replay`` is True. Nothing is exploited: every call
    continues the replay's own weights. Its reports are collected, not stored.

    Args:
        train: ``train(trial)``, as for :func:`pbtkit.run`, or its import path
            ``"package.module:function"``.
        schedule: What to follow: :func:`replay_schedule`, ``result.schedule()``, or
            :func:`load_schedule`.
        checkpoint_dir: Where the replay's checkpoints go (a directory or an fsspec URL),
            under ``replay-<experiment>/``. Use another directory than the run's, so
            its checkpoints stay as they are.
        start_step: Replay from this step (the schedule's start by default).
        end_step: Replay up to this step, exclusive (the schedule's end by default).
        start_checkpoint: A local directory holding the weights at ``start_step``:
            required when replaying from a later step than the schedule's start (a
            checkpoint of an earlier replay with ``keep_checkpoints=True``, say).
        extra_hparams: Added to the hyperparameters of every call, replacing those of the
            same name (``{"data": "train+val"}``, say).
        keep_checkpoints: Keep every call's checkpoint; by default each is deleted once
            the next call has saved its own, and only the final one is left.

    Returns:
        The calls made, with the hyperparameters and reports of each.

    Raises:
        ConfigError: The steps are outside the schedule or the schedule is empty; a
            later start without ``start_checkpoint``, or one that is not a directory.
        CheckpointError: A checkpoint cannot be written or read.
        Exception: Whatever the training function raises, after its unfinished
            checkpoint is removed.
    """
    if not schedule.segments:
        raise ConfigError("the schedule is empty: it has no steps to replay")
    try:
        pieces = schedule.pieces(start_step, end_step)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    parent = _start_checkpoint(schedule, pieces[0].start_step, start_checkpoint)
    if isinstance(train, str):
        from pbtkit._target import load_target

        train = load_target(train)
    checkpoints = open_checkpoints(checkpoint_dir)
    label = f"replay-{schedule.experiment}" if schedule.experiment else "replay"
    done: list[ReplayedTrial] = []
    previous: str | None = None
    recorded = {node.trial_id: node for node in schedule.trials}
    for index, piece in enumerate(pieces):
        hparams = {**dict(piece.hparams), **dict(extra_hparams or {})}
        # A recorded trial that shrank and perturbed its parent's weights does so again
        # where it began (seeded by its id, as in the run), so the replay's weights are
        # the run's.
        node = recorded.get(piece.trial_id)
        inherit = node.inherit if node is not None and node.start_step == piece.start_step else None
        name, reports = _call(
            train, checkpoints, label, index, piece, hparams, parent, schedule, inherit
        )
        # A hand-written schedule may name one trial twice: never delete what was just saved.
        if previous is not None and previous != name and not keep_checkpoints:
            checkpoints.delete(previous)
            done[-1] = dataclasses.replace(done[-1], checkpoint=None)
        done.append(
            ReplayedTrial(
                piece.start_step,
                piece.end_step,
                piece.member,
                piece.trial_id,
                hparams,
                tuple(reports),
                None if name is None else _where(checkpoints, name),
            )
        )
        previous = name
        # Just written by this process: fetch without re-hashing every file.
        parent = None if name is None else checkpoints.fetch(name, verify=False)
    return ReplayResult(schedule, tuple(done))


def _start_checkpoint(
    schedule: Schedule, start: int, given: str | os.PathLike[str] | None
) -> Path | None:
    if given is None:
        if start > schedule.start_step:
            raise ConfigError(
                f"replaying from step {start} needs the weights at step {start}: pass "
                "start_checkpoint (--start-checkpoint DIR), a checkpoint saved there, e.g. "
                "by an earlier replay with keep_checkpoints=True (--keep-checkpoints)"
            )
        return None
    path = Path(given).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"the start checkpoint {path} is not a directory")
    return path


def _call(
    train: TrainFn,
    checkpoints: CheckpointStore,
    label: str,
    index: int,
    piece: Segment,
    hparams: dict[str, Any],
    parent: Path | None,
    schedule: Schedule,
    inherit: Mapping[str, Any] | None = None,
) -> tuple[str | None, list[ReportRecord]]:
    """Run the training function on one piece and commit its checkpoint."""
    record = TrialRecord(
        id=piece.trial_id,
        experiment_id=0,
        member=piece.member,
        generation=index,
        hparams=hparams,
        parent_id=None,
        start_step=piece.start_step,
        end_step=piece.end_step,
        status="running",
        attempt=1,
        inherit=inherit,
    )
    lease = Lease(
        trial=record,
        experiment=label,
        metric=schedule.metric or "",
        checkpoint_root=str(checkpoints.root),
        parent_checkpoint=None,
        donor=None,
        lease_expires=math.inf,
    )
    staging = checkpoints.staging_dir(label, piece.trial_id)
    try:
        trial = Trial(lease, staging, parent, replay=True)
        train(trial)
        name = checkpoints.commit(staging, label, piece.trial_id)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    reports = [
        ReportRecord(piece.trial_id, piece.member, m.step, m.metrics) for m in trial._take_reports()
    ]
    return name, reports


def _where(checkpoints: CheckpointStore, name: str) -> Path | str:
    return checkpoints.location(name) if checkpoints.remote else checkpoints.resolve(name)


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6g}"
