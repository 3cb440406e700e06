"""TensorBoard event files of a run, written from the store (``pip install 'pbtkit[tensorboard]'``).

One run directory per member, ``<logdir>/member-000``, holding:

- ``metrics/<name>``: every reported metric, at its step, while the trial runs (the
  reports its heartbeats carry) and when it ends;
- ``hparams/<name>``: the hyperparameter in force, at the first and last step of each
  trial, so a schedule shows as a curve. A categorical (or ordinal) value that is not a
  number is drawn at its index among the domain's values, and written as text beside
  it (``hparams/<name>`` in the text tab) whenever it changes;
- ``exploit``: a line of text at each exploit (whose checkpoint, which values changed);
  ``events``: stops, retries and failures;

and one HParams session per finished trial, ``<logdir>/trials/member-000/trial-000012``:
the hyperparameters then in force, the member, trial, generation and steps, and the
trial's objective, so the HParams dashboard lists every trial as it ends (TensorBoard
keeps only the first HParams record of a run, so a member's own record could not follow
its schedule).

:class:`TensorBoardLogger` is a :class:`~pbtkit.loggers.Logger`: it is fed by the one
reader of the store that every tracker shares, so the same writer serves a run that
pbtkit drives, one on a server and a glass-box loop (:class:`pbtkit.loggers.Follower`).
``pbtkit.run`` starts one by default when tensorboardX is installed. A trial that fails
and runs again writes its steps again: TensorBoard shows the later values.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pbtkit._exceptions import ConfigError
from pbtkit.loggers._base import Logger, RunInfo, Update, describe_changes, hparam_value
from pbtkit.store import TrialRecord

__all__ = [
    "TensorBoardLogger",
    "available",
    "default_logdir",
    "experiment_folder",
    "from_setting",
    "member_dir",
    "trial_dir",
]

_MEMBER_DIR = re.compile(r"member-\d{3,}")


def available() -> bool:
    """Whether tensorboardX can be imported."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return False
    return True


def _summary_writer() -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError as exc:
        raise ConfigError(
            "TensorBoard logging needs tensorboardX: pip install 'pbtkit[tensorboard]' "
            "(or pass tensorboard=False)"
        ) from exc
    # A diverged member's NaN is pbtkit's to report, once (pk.run does); tensorboardX
    # would print a line for every value.
    logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)
    return SummaryWriter


def experiment_folder(name: str) -> str:
    """A directory name for an experiment: the name itself when it is plain, else a
    cleaned form with a short hash, so that different names never share a folder."""
    import hashlib

    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    if cleaned == name and name:
        return name
    return f"{cleaned or 'experiment'}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def default_logdir(storage_url: str | None, checkpoint_root: str | None, name: str) -> Path | None:
    """Where ``pbtkit.run`` writes an experiment's TensorBoard files by default.

    Beside a SQLite file (``pbt-demo/pbt.db`` -> ``pbt-demo/tensorboard/<name>``), else
    beside a local checkpoint root; None for a run with neither on this machine (on a
    server, or on a database server with checkpoints in an object store).
    """
    base: Path
    if storage_url and storage_url.startswith("sqlite:///"):
        base = Path(storage_url[len("sqlite:///") :]).parent
    elif checkpoint_root and "://" not in checkpoint_root:
        base = Path(checkpoint_root).parent
    else:
        return None
    return base / "tensorboard" / experiment_folder(name)


def member_dir(logdir: str | Path, member: int) -> Path:
    """The run directory of one member."""
    return Path(logdir) / f"member-{member:03d}"


def trial_dir(logdir: str | Path, member: int, trial_id: int) -> Path:
    """The run directory of one finished trial's HParams session."""
    return Path(logdir) / "trials" / f"member-{member:03d}" / f"trial-{trial_id:06d}"


class TensorBoardLogger(Logger):
    """Writes an experiment to TensorBoard event files (see the module docstring).

    Args:
        logdir: The experiment's folder; each member gets ``member-NNN`` inside. None:
            ``tensorboard/<experiment>`` beside the SQLite file or the checkpoint root
            (see :func:`default_logdir`), else in the working directory.
        fresh: Remove the ``member-NNN`` folders left by an earlier writer first, so that
            a resumed run is written once, from the store, instead of twice.

    Raises:
        ConfigError: tensorboardX is not installed.
    """

    kind = "tensorboard"

    def __init__(self, logdir: str | os.PathLike[str] | None = None, *, fresh: bool = True) -> None:
        self._writer_class = _summary_writer()
        self.logdir = Path(logdir) if logdir is not None else None
        self._fresh = fresh
        self._run: RunInfo | None = None
        self._writers: dict[int, Any] = {}
        self._text: dict[tuple[int, str], Any] = {}
        self._legend: set[tuple[int, str]] = set()

    def open(self, run: RunInfo) -> None:
        """Pick the folder and clear what an earlier writer left there."""
        self._run = run
        if self.logdir is None:
            self.logdir = Path.cwd() / "tensorboard" / experiment_folder(run.name)
        if self._fresh and self.logdir.is_dir():
            for child in self.logdir.iterdir():
                if child.is_dir() and (_MEMBER_DIR.fullmatch(child.name) or child.name == "trials"):
                    shutil.rmtree(child, ignore_errors=True)

    def log(self, update: Update) -> None:
        """Write the update's hyperparameters, reports, trial ends and events."""
        run = self._run
        assert run is not None, "open() comes first"
        for t in update.started:
            self._hparams(t.member, t.hparams, t.start_step, first=True)
        for r in update.reports:
            writer = self._writer(r.member)
            for key, value in r.metrics.items():
                writer.add_scalar(f"metrics/{key}", value, r.step)
        for t in update.finished:
            self._hparams(t.member, t.hparams, max(t.end_step - 1, t.start_step), first=False)
            self._record(t, run.metric)
        for e in update.events:
            step = update.event_step(e)
            if e.kind == "exploit":
                text = (
                    f"step {step}: copied member {e.donor_member} (trial {e.donor_trial}); "
                    f"{describe_changes(e.old_hparams or {}, e.new_hparams or {})}"
                )
                self._writer(e.member).add_text("exploit", text, step)
            else:
                detail = (e.detail or "").strip().splitlines()
                text = f"step {step}: {e.kind}" + (f": {detail[-1]}" if detail else "")
                self._writer(e.member).add_text("events", text, step)
        for writer in self._writers.values():
            writer.flush()

    def _writer(self, member: int) -> Any:
        if member not in self._writers:
            assert self.logdir is not None
            path = member_dir(self.logdir, member)
            path.mkdir(parents=True, exist_ok=True)
            # tensorboardX writes from a queue in a thread of its own, and its flush()
            # does not wait for that queue: the thread's own flush, at most a second
            # after new data, is what puts the data on disk while the run goes on.
            self._writers[member] = self._writer_class(logdir=str(path), flush_secs=1)
        return self._writers[member]

    def _hparams(self, member: int, hparams: Mapping[str, Any], step: int, *, first: bool) -> None:
        assert self._run is not None
        writer = self._writer(member)
        if first:
            for key in [k for (m, k) in self._text if m == member and k not in hparams]:
                # inactive in this trial (a conditional hyperparameter): its text is
                # written again when it comes back
                del self._text[(member, key)]
        for key, value in hparams.items():  # one left out (inactive) has no point here
            point, text = hparam_value(key, value, self._run.space)
            if point is not None:
                writer.add_scalar(f"hparams/{key}", point, step)
            if text is None or not first or self._text.get((member, key)) == value:
                continue
            note = text if point is None else f"{text} (drawn at {point:g})"
            values = self._run.space.get(key, {}).get("values")
            if point is not None and (member, key) not in self._legend and isinstance(values, list):
                note += "; the curve's values: " + ", ".join(
                    f"{i} = {v}" for i, v in enumerate(values)
                )
                self._legend.add((member, key))
            writer.add_text(f"hparams/{key}", note, step)
            self._text[(member, key)] = value

    def _record(self, trial: TrialRecord, metric: str) -> None:
        """One HParams session for a finished trial: the values then in force, and its score.

        TensorBoard keeps the first HParams record of a run and ignores later ones, so a
        member's record cannot be updated in place; each trial gets a run of its own
        under ``trials/`` instead, and the HParams dashboard lists every trial.
        """
        from tensorboardX.summary import hparams as hparams_summary

        assert self.logdir is not None
        values: dict[str, bool | str | float | int] = {
            "member": trial.member,
            "trial": trial.id,
            "generation": trial.generation,
            "start_step": trial.start_step,
            "end_step": trial.end_step,
        }
        for key, value in trial.hparams.items():
            values[key] = value if isinstance(value, bool | str | int | float) else str(value)
        tag = f"metrics/{metric}"
        experiment, start, end = hparams_summary(values, {tag: trial.score})
        folder = trial_dir(self.logdir, trial.member, trial.id)
        writer = self._writer_class(logdir=str(folder), flush_secs=3600)
        try:
            for summary in (experiment, start, end):
                writer.file_writer.add_summary(summary, trial.end_step)
            writer.add_scalar(tag, trial.score, trial.end_step)
        finally:
            writer.close()

    def close(self, update: Update | None = None) -> None:
        """Flush and close the event files."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def from_setting(
    setting: bool | str | os.PathLike[str] | None,
    name: str,
    *,
    storage_url: str | None,
    checkpoint_root: str | None,
) -> TensorBoardLogger | None:
    """The logger ``pbtkit.run(tensorboard=...)`` adds, or None.

    Args:
        setting: None: log when tensorboardX is installed and the run has a folder on this
            machine (see :func:`default_logdir`); True: log (into ``./tensorboard/<name>``
            when there is no such folder), tensorboardX must be installed; False: don't;
            a path: log into ``<path>/<experiment>``.
        name: The experiment.
        storage_url: The run's storage URL (None for a run on a server).
        checkpoint_root: The local checkpoint root (None when it is not on this machine).

    Raises:
        ConfigError: ``True`` or a path while tensorboardX is not installed.
    """
    if setting is False or (setting is None and not available()):
        return None
    if setting is None or setting is True:
        logdir = default_logdir(storage_url, checkpoint_root, name)
        if logdir is None and setting is None:
            return None
        logdir = logdir or Path.cwd() / "tensorboard" / experiment_folder(name)
    else:
        logdir = Path(setting) / experiment_folder(name)
    return TensorBoardLogger(logdir)
