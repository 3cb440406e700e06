"""Reading an experiment as it grows, and feeding the loggers from a thread of the driver.

:class:`StoreTail` turns the store into a stream of :class:`~pbtkit.loggers.Update`: it
looks at the experiment's summary (one small read) at each poll and takes a new snapshot
when something moved (or every few seconds, to catch a retry, which the summary does not
count); it reads the reports of the trials that are running or just finished, trial by
trial, and hands on only those it has not handed on before. A finished trial's reports
are read once more when it finishes and never again, so the cost of a poll follows the
trials in flight, not the length of the run.

:class:`Follower` hands each update to every logger; :func:`follow` does it in a
background thread while a block runs (``pbtkit.run`` wraps its loop in it).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pbtkit.loggers._base import Logger, RunInfo, Update
from pbtkit.store import ReportRecord, TrialRecord

if TYPE_CHECKING:
    from pbtkit.controller import ControllerAPI, Snapshot

__all__ = ["Follower", "StoreTail", "follow"]

log = logging.getLogger("pbtkit.loggers")

# Above this many trials to read at once (a logger attached to a long finished run), one
# read of every report beats one query per trial.
_BULK = 64
# Most updates kept for a logger that keeps failing (a tracking server that is down)
# before the oldest are dropped.
_BACKLOG = 1000


class StoreTail:
    """What is new in one experiment since the last :meth:`poll`.

    Args:
        controller: Where the experiment lives (a local ``Controller`` reads its store
            directly, one trial's reports at a time; a remote one reads them by member).
        name: The experiment.
        full_every: Seconds after which a poll takes a new snapshot even when the
            summary did not change (a retried trial does not change it).
    """

    def __init__(self, controller: ControllerAPI, name: str, *, full_every: float = 5.0) -> None:
        self.controller = controller
        self.name = name
        self._full_every = full_every
        self._store: Any = getattr(controller, "store", None)
        self._snapshot: Snapshot | None = None
        self._summary: tuple[Any, ...] | None = None
        self._taken = 0.0
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self._members_finished: set[int] = set()
        self._last_event = 0
        # trial -> (the attempt's start time, how many of its reports were handed on)
        self._sent: dict[int, tuple[float | None, int]] = {}

    def poll(self) -> Update:
        """Read what is new (see the module docstring).

        Raises:
            NotFound: The experiment does not exist.
            PBTError: The store cannot be read (try again later).
        """
        snapshot = self._look()
        trials = {t.id: t for t in snapshot.trials}
        for trial_id in [t for t in self._sent if trials.get(t) and trials[t].status == "pending"]:
            del self._sent[trial_id]  # its attempt failed; the next one reports from scratch
        wanted = [
            t
            for t in snapshot.trials
            if t.status == "running" or (t.status == "done" and t.id not in self._finished)
        ]
        reports: list[ReportRecord] = []
        finished: list[TrialRecord] = []
        for trial, made in self._read(snapshot, wanted):
            key = trial.started_at
            seen_key, count = self._sent.get(trial.id, (key, 0))
            if seen_key != key or len(made) < count:
                count = 0  # another attempt: its reports start again
            reports.extend(made[count:])
            if trial.status == "done":
                finished.append(trial)
                self._finished.add(trial.id)
                self._sent.pop(trial.id, None)
            elif trial.status == "running":
                self._sent[trial.id] = (key, len(made))
            trials[trial.id] = trial
        started = [
            t
            for t in sorted(trials.values(), key=lambda t: t.id)
            if t.status in ("running", "done") and t.id not in self._started
        ]
        self._started.update(t.id for t in started)
        events = [e for e in snapshot.events if e.id > self._last_event]
        if snapshot.events:
            self._last_event = max(self._last_event, *(e.id for e in snapshot.events))
        members_finished = [
            m
            for m in snapshot.members
            if m.status in ("done", "failed") and m.member not in self._members_finished
        ]
        self._members_finished.update(m.member for m in members_finished)
        return Update(
            experiment=snapshot.experiment,
            members=tuple(snapshot.members),
            trials=trials,
            started=tuple(started),
            reports=tuple(reports),
            finished=tuple(finished),
            events=tuple(e for e in events if e.kind != "continue"),
            members_finished=tuple(members_finished),
        )

    def _look(self) -> Snapshot:
        s = self.controller.summary(self.name)
        now = (s.status, s.trials_done, s.trials_running, s.exploits, s.members_done,
               s.members_failed, s.steps_done)  # fmt: skip
        stale = time.monotonic() - self._taken > self._full_every
        if self._snapshot is None or now != self._summary or stale:
            self._snapshot = self.controller.snapshot(self.name)
            self._summary = now
            self._taken = time.monotonic()
        return self._snapshot

    def _read(
        self, snapshot: Snapshot, wanted: Sequence[TrialRecord]
    ) -> list[tuple[TrialRecord, list[ReportRecord]]]:
        """Each wanted trial as it is now, with all of its reports."""
        if not wanted:
            return []
        if self._store is not None:
            experiment_id = snapshot.experiment.id
            with self._store.read() as tx:
                if len(wanted) > _BULK:
                    by_trial: dict[int, list[ReportRecord]] = defaultdict(list)
                    for r in tx.reports(experiment_id):
                        by_trial[r.trial_id].append(r)
                    current = {t.id: t for t in tx.trials(experiment_id)}
                    return [(current[t.id], by_trial[t.id]) for t in wanted if t.id in current]
                # a trial and its reports in one transaction, so they agree
                return [
                    (tx.get_trial(t.id), tx.reports(experiment_id, trial_id=t.id)) for t in wanted
                ]
        # Over HTTP the reports come by member; the snapshot's records say which attempt.
        out = []
        members: dict[int, list[ReportRecord]] = {}
        for t in wanted:
            if t.member not in members:
                members[t.member] = self.controller.reports(self.name, member=t.member)
            out.append((t, [r for r in members[t.member] if r.trial_id == t.id]))
        return out


class Follower:
    """Feeds loggers from a :class:`StoreTail`; call :meth:`sync` when you like.

    Any process that can read the store can follow a run: the one that drives it
    (``pbtkit.run`` does), a server's, or one started later for a run that has finished::

        with Follower(Controller(open_store("sqlite:///pbt.db")), "toy",
                      [MLflowLogger(tracking_uri="sqlite:///mlflow.db")]) as follower:
            follower.sync()

    Args:
        controller: Where the experiment lives.
        name: The experiment.
        loggers: Who is told.

    Raises:
        NotFound: No experiment of that name.
        ConfigError: A logger cannot start (its package is missing, say); the loggers
            opened before it are closed again.
    """

    def __init__(self, controller: ControllerAPI, name: str, loggers: Sequence[Logger]) -> None:
        self.name = name
        self.loggers = list(loggers)
        self.tail = StoreTail(controller, name)
        self.run = RunInfo.of(controller.experiment(name))
        self._backlog: dict[int, list[Update]] = {i: [] for i in range(len(self.loggers))}
        self._last: Update | None = None
        self._lock = threading.Lock()
        self._closed = False
        opened: list[Logger] = []
        try:
            for logger in self.loggers:
                logger.open(self.run)
                opened.append(logger)
        except BaseException:
            for logger in opened:
                _quietly(logger.close, None)
            raise

    def sync(self) -> Update:
        """Read what is new and hand it to every logger.

        A logger that raises keeps the update and is given it again at the next sync
        (a tracking server that is down loses nothing), with a warning.

        Returns:
            The update read.
        """
        with self._lock:
            update = self.tail.poll()
            self._last = update
            if update.empty and not any(self._backlog.values()):
                return update
            for index, logger in enumerate(self.loggers):
                backlog = self._backlog[index]
                if not update.empty:
                    backlog.append(update)
                if len(backlog) > _BACKLOG:
                    log.warning(
                        "%s logger of %r is behind by %d updates; dropping the oldest",
                        logger.kind, self.name, len(backlog) - _BACKLOG,
                    )  # fmt: skip
                    del backlog[: len(backlog) - _BACKLOG]
                while backlog:
                    try:
                        logger.log(backlog[0])
                    except Exception as exc:
                        log.warning(
                            "%s logger of %r failed (%s); trying again at the next sync",
                            logger.kind, self.name, exc,
                        )  # fmt: skip
                        break
                    backlog.pop(0)
            return update

    def close(self) -> None:
        """Sync once more, then close every logger (even after an error)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.sync()
        except Exception as exc:  # the run's outcome matters more than its logs
            log.warning("logging of %r stopped short: %s", self.name, exc)
        with self._lock:
            for logger in self.loggers:
                _quietly(logger.close, self._last)

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def follow(
    controller: ControllerAPI, name: str, loggers: Sequence[Logger], every: float = 1.0
) -> Iterator[Follower | None]:
    """Sync ``loggers`` in a background thread every ``every`` seconds while the block
    runs, once more at its end, then close them. No loggers: nothing is started.

    A sync that takes long (a slow tracking server, a busy machine) makes the thread
    wait twice as long before the next one, so the loggers take at most about a third of
    a core from the workers on the same machine, and write bigger batches instead.

    Raises:
        ConfigError: A logger cannot start (before the block runs).
    """
    if not loggers:
        yield None
        return
    follower = Follower(controller, name, loggers)
    stop = threading.Event()

    def loop() -> None:
        pause = every
        while not stop.wait(pause):
            started = time.monotonic()
            try:
                follower.sync()
            except Exception as exc:  # a hiccup of the store must not end the logging
                log.warning("logging of %r: %s; trying again", name, exc)
            pause = max(every, 2.0 * (time.monotonic() - started))

    thread = threading.Thread(target=loop, name=f"pbtkit-loggers-{name}", daemon=True)
    thread.start()
    try:
        yield follower
    finally:
        stop.set()
        thread.join()
        follower.close()


def _quietly(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except Exception as exc:
        log.warning("closing a logger failed: %s", exc)
