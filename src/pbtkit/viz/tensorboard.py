"""TensorBoard event files of a run, written from the store (``pip install 'pbtkit[tensorboard]'``).

One run directory per member, ``<logdir>/member-000``, holding:

- ``metrics/<name>``: every reported metric, at its step;
- ``hparams/<name>``: the hyperparameter in force, at the first and last step of each
  trial, so a schedule shows as a curve (text values are written as text when they change);
- ``exploit``: a line of text at each exploit (whose checkpoint, which values changed);
  ``events``: stops, retries and failures;
- an HParams record (the member's final hyperparameters and objective) once it is done.

:class:`TensorBoardLogger` tails the store through a controller, so the same writer
serves a run that pbtkit drives, one on a server and a glass-box loop: ``pbtkit.run``
starts one by default when tensorboardX is installed. A trial's reports are written once
it is done, because the reports of an attempt that failed are dropped with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pbtkit._exceptions import ConfigError

if TYPE_CHECKING:
    from pbtkit.controller import ControllerAPI

__all__ = [
    "TensorBoardLogger",
    "available",
    "default_logdir",
    "experiment_folder",
    "follow",
    "live",
    "member_dir",
]

log = logging.getLogger("pbtkit.viz")

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


class TensorBoardLogger:
    """Writes an experiment to TensorBoard event files, reading it through a controller.

    Call :meth:`sync` whenever you like (each call writes what is new since the last),
    or use :func:`follow` to do it in the background while a run goes on.

    Args:
        controller: Where the experiment lives (a ``Controller`` or ``RemoteController``).
        name: The experiment.
        logdir: Its folder; each member gets ``member-NNN`` inside.
        fresh: Remove the ``member-NNN`` folders left by an earlier writer first, so that
            a resumed run is written once, from the store, instead of twice.

    Raises:
        ConfigError: tensorboardX is not installed.
    """

    def __init__(
        self, controller: ControllerAPI, name: str, logdir: str | Path, *, fresh: bool = True
    ) -> None:
        self._writer_class = _summary_writer()
        self.controller = controller
        self.name = name
        self.logdir = Path(logdir)
        if fresh and self.logdir.is_dir():
            for child in self.logdir.iterdir():
                if child.is_dir() and _MEMBER_DIR.fullmatch(child.name):
                    shutil.rmtree(child, ignore_errors=True)
        self._writers: dict[int, Any] = {}
        self._trials: set[int] = set()
        self._events: set[int] = set()
        self._finished: set[int] = set()
        self._text: dict[tuple[int, str], Any] = {}
        self._lock = threading.Lock()
        self._last: tuple[int, ...] | None = None

    def sync(self) -> int:
        """Write every finished trial, event and finished member not written yet.

        Returns:
            How many trials were written.
        """
        with self._lock:
            return self._sync()

    def changed(self) -> bool:
        """Whether the experiment moved on since the last look (one cheap read)."""
        s = self.controller.summary(self.name)
        now = (s.trials_done, s.exploits, s.members_done, s.members_failed, s.trials_running)
        if now == self._last:
            return False
        self._last = now
        return True

    def _sync(self) -> int:
        snapshot = self.controller.snapshot(self.name)
        trials = {t.id: t for t in snapshot.trials}
        new = [t for t in snapshot.trials if t.status == "done" and t.id not in self._trials]
        by_member: dict[int, list[Any]] = defaultdict(list)
        for member in sorted({t.member for t in new}):
            for r in self.controller.reports(self.name, member=member):
                by_member[member].append(r)
        for t in new:
            writer = self._writer(t.member)
            for r in by_member[t.member]:
                if r.trial_id != t.id:
                    continue
                for key, value in r.metrics.items():
                    writer.add_scalar(f"metrics/{key}", value, r.step)
            self._hparams(writer, t.member, t.hparams, t.start_step, max(t.end_step - 1, 0))
            self._trials.add(t.id)
        for e in snapshot.events:
            if e.id in self._events or e.kind == "continue":
                continue
            target = trials.get(e.trial_id) if e.trial_id is not None else None
            if target is None:
                step = _member_step(snapshot, e.member)
            else:  # a stop ends its trial; an exploit or a retry starts one
                step = target.end_step if e.kind == "stop" else target.start_step
            if e.kind == "exploit":
                text = (
                    f"step {step}: copied member {e.donor_member} (trial {e.donor_trial}); "
                    f"{_changes(e.old_hparams or {}, e.new_hparams or {})}"
                )
                self._writer(e.member).add_text("exploit", text, step)
            else:
                detail = (e.detail or "").strip().splitlines()
                text = f"step {step}: {e.kind}" + (f": {detail[-1]}" if detail else "")
                self._writer(e.member).add_text("events", text, step)
            self._events.add(e.id)
        objective = _mapping(_mapping(snapshot.experiment.config.get("policy")).get("objective"))
        metric = str(objective.get("metric", ""))
        for m in snapshot.members:
            if m.status == "active" or m.member in self._finished or m.latest_trial_id is None:
                continue
            self._record(m.member, m.hparams, metric, m.score, m.step)
            self._finished.add(m.member)
        for writer in self._writers.values():
            writer.flush()
        return len(new)

    def _writer(self, member: int) -> Any:
        if member not in self._writers:
            path = member_dir(self.logdir, member)
            path.mkdir(parents=True, exist_ok=True)
            self._writers[member] = self._writer_class(logdir=str(path), flush_secs=3600)
        return self._writers[member]

    def _hparams(
        self, writer: Any, member: int, hparams: Mapping[str, Any], first: int, last: int
    ) -> None:
        for key in [k for (m, k) in self._text if m == member and k not in hparams]:
            # Inactive in this trial (a conditional hyperparameter): nothing is written for
            # it, and its text is written again when it comes back.
            del self._text[(member, key)]
        for key, value in hparams.items():
            if isinstance(value, bool | int | float):
                for step in dict.fromkeys((first, last)):
                    writer.add_scalar(f"hparams/{key}", float(value), step)
            elif self._text.get((member, key)) != value:
                writer.add_text(f"hparams/{key}", str(value), first)
                self._text[(member, key)] = value

    def _record(
        self, member: int, hparams: Mapping[str, Any], metric: str, score: float, step: int
    ) -> None:
        from tensorboardX.summary import hparams as hparams_summary

        values: dict[str, bool | str | float | int] = {"member": member}
        for key, value in hparams.items():
            values[key] = value if isinstance(value, bool | str | int | float) else str(value)
        # The metric is the scalar already written in this run, so the HParams dashboard
        # reads its values from there.
        tag = f"metrics/{metric}"
        experiment, start, end = hparams_summary(values, {tag: score})
        writer = self._writer(member)
        for summary in (experiment, start, end):
            writer.file_writer.add_summary(summary, step)

    def close(self) -> None:
        """Flush and close the event files."""
        with self._lock:
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def follow(logger: TensorBoardLogger, every: float = 1.0) -> Iterator[TensorBoardLogger]:
    """Sync ``logger`` in a background thread every ``every`` seconds while the block runs,
    once more at its end, then close it."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            try:
                if logger.changed():
                    logger.sync()
            except Exception as exc:  # a hiccup of the store must not end the logging
                log.warning("TensorBoard logging of %r: %s; trying again", logger.name, exc)

    thread = threading.Thread(target=loop, name=f"pbtkit-tensorboard-{logger.name}", daemon=True)
    thread.start()
    try:
        yield logger
    finally:
        stop.set()
        thread.join()
        try:
            logger.sync()
        except Exception as exc:  # the run's outcome matters more than its event files
            log.warning("TensorBoard logging of %r stopped short: %s", logger.name, exc)
        finally:
            logger.close()


def live(
    setting: bool | str | os.PathLike[str] | None,
    controller: ControllerAPI,
    name: str,
    *,
    storage_url: str | None,
    checkpoint_root: str | None,
) -> contextlib.AbstractContextManager[object]:
    """What ``pbtkit.run(tensorboard=...)`` does around its loop.

    Args:
        setting: None: log when tensorboardX is installed and the run has a folder on this
            machine (see :func:`default_logdir`); True: log (into ``./tensorboard/<name>``
            when there is no such folder), tensorboardX must be installed; False: don't;
            a path: log into ``<path>/<experiment>``.
        controller: Where the experiment lives.
        name: The experiment.
        storage_url: The run's storage URL (None for a run on a server).
        checkpoint_root: The local checkpoint root (None when it is not on this machine).

    Raises:
        ConfigError: ``True`` or a path while tensorboardX is not installed.
    """
    if setting is False or (setting is None and not available()):
        return contextlib.nullcontext()
    if setting is None or setting is True:
        logdir = default_logdir(storage_url, checkpoint_root, name)
        if logdir is None and setting is None:
            return contextlib.nullcontext()
        logdir = logdir or Path.cwd() / "tensorboard" / experiment_folder(name)
    else:
        logdir = Path(setting) / experiment_folder(name)
    return follow(TensorBoardLogger(controller, name, logdir))


def _member_step(snapshot: Any, member: int) -> int:
    for m in snapshot.members:
        if m.member == member:
            return int(m.step)
    return 0


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    # Conditional hyperparameters: absent on one side means inactive there.
    changed = [
        f"{k} {_short(old[k]) if k in old else 'inactive'} -> {_short(v)}"
        for k, v in new.items()
        if k not in old or old[k] != v
    ]
    changed += [f"{k} {_short(old[k])} -> inactive" for k in old if k not in new]
    return ", ".join(changed) or "same hyperparameters"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
