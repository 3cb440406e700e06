"""The threads a worker keeps beside the user's function: the heartbeat that keeps a
lease alive, the deleter of released checkpoints, and the watchdog of ``trial_timeout``."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Protocol

from pbtkit._exceptions import CheckpointError, LeaseLost, PBTError
from pbtkit.checkpoints import CheckpointStore
from pbtkit.controller import ControllerAPI, Lease
from pbtkit.store._base import Measurement

__all__ = ["Deleter", "Heartbeat", "Watchdog", "delete_quietly"]


class _Beaten(Protocol):
    """What the heartbeat needs of a :class:`~pbtkit.Trial`."""

    trial_id: int
    _flush_at: tuple[int, Callable[[], None]] | None

    def _take_reports(self) -> list[Measurement]: ...

    def _pending(self) -> bool: ...

    def _put_back(self, reports: list[Measurement]) -> None: ...


class Heartbeat:
    """Keeps the current trial's lease alive and flushes its reports while the user's
    function runs: one thread for the worker's life, not one per trial (starting a thread
    cost more than a short trial's own work).

    A trial is beaten ``every`` seconds after it is watched, and then every ``every``
    seconds; a trial shorter than that is never beaten. :meth:`unwatch` waits for a beat
    in flight, so the finish that follows is the last word about the trial.

    A controller over the network asks for reports in batches (its ``report_interval``
    seconds, or as soon as ``report_batch`` reports wait:
    :class:`~pbtkit.service.RemoteController`), so that a function reporting every step
    costs one request per batch, not one per step; between lease beats the thread sends
    only when reports wait. What is left goes with the finish.
    """

    def __init__(self, controller: ControllerAPI, worker_id: str, every: float) -> None:
        self._controller = controller
        self._worker_id = worker_id
        self._every = every
        self._flush_every = min(every, float(getattr(controller, "report_interval", every)))
        self._batch: int | None = getattr(controller, "report_batch", None)
        self._cond = threading.Condition()
        self._trial: _Beaten | None = None
        self._due = 0.0
        self._flush_due = 0.0
        self._flush_now = False
        self._closed = False
        self._lost: LeaseLost | None = None
        self._thread: threading.Thread | None = None

    def watch(self, trial: _Beaten) -> None:
        """Beat for ``trial`` from now on."""
        with self._cond:
            self._trial, self._lost, self._flush_now = trial, None, False
            now = time.monotonic()
            self._due, self._flush_due = now + self._every, now + self._flush_every
            if self._batch is not None:
                trial._flush_at = (self._batch, self._wake)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="pbtkit-heartbeat", daemon=True
                )
                self._thread.start()
            # Not woken: the thread looks again within one period, before this trial is
            # due (a wake-up per trial cost the trial a thread switch, milliseconds on a
            # busy machine).

    def unwatch(self) -> LeaseLost | None:
        """Stop beating for the current trial; the LeaseLost a beat met, if any."""
        with self._cond:  # a beat in flight holds it: wait for its end
            if self._trial is not None:
                self._trial._flush_at = None
            lost, self._trial, self._lost = self._lost, None, None
        return lost

    def _wake(self) -> None:
        """A batch of reports is waiting (called from the training thread): send it now.

        Never blocks the training: while a beat is in flight the flag alone says it, and
        the thread sends again when that beat returns.
        """
        self._flush_now = True
        if self._cond.acquire(blocking=False):
            try:
                self._cond.notify()
            finally:
                self._cond.release()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._trial = None
            self._cond.notify()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                trial, now = self._trial, time.monotonic()
                if trial is None or self._lost is not None:
                    self._cond.wait(self._every)
                    continue
                if now >= self._flush_due and not self._flush_now and not trial._pending():
                    self._flush_due = now + self._flush_every  # nothing to send yet
                if now >= self._due or self._flush_now or now >= self._flush_due:
                    self._flush_now = False
                    self._due, self._flush_due = now + self._every, now + self._flush_every
                    self._beat(trial)
                else:
                    self._cond.wait(min(self._due, self._flush_due) - now)

    def _beat(self, trial: _Beaten) -> None:
        reports = trial._take_reports()
        try:
            self._controller.heartbeat(trial.trial_id, self._worker_id, reports)
        except LeaseLost as exc:
            self._lost = exc
        except PBTError:
            # Put the reports back and try again at the next beat.
            trial._put_back(reports)


class Deleter:
    """Deletes released checkpoints on a thread of its own, off the trial's path: the
    next trial starts while the files of the old ones go. The thread looks for work every
    ``period`` seconds rather than being woken for each name (a wake-up cost the trial a
    thread switch). :meth:`close` deletes what is left, so a worker that returns has
    deleted what it was told to."""

    def __init__(self, checkpoints: CheckpointStore, period: float = 0.2) -> None:
        self._checkpoints = checkpoints
        self._period = period
        self._names: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def delete(self, names: list[str]) -> None:
        if not names:
            return
        with self._lock:
            self._names.extend(names)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pbtkit-delete", daemon=True)
            self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread, self._stop = None, threading.Event()
        self._drain()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self._drain()

    def _drain(self) -> None:
        with self._lock:
            names, self._names = self._names, []
        delete_quietly(self._checkpoints, names)


class Watchdog:
    """Gives a trial back when its training function runs past ``trial_timeout``."""

    def __init__(
        self,
        controller: ControllerAPI,
        lease: Lease,
        worker_id: str,
        timeout: float | None,
        on_timeout: Callable[[], None] | None,
    ) -> None:
        self._controller = controller
        self._lease = lease
        self._worker_id = worker_id
        self._timeout = timeout
        self._on_timeout = on_timeout
        self._timer: threading.Timer | None = None
        self.fired = False

    def __enter__(self) -> Watchdog:
        if self._timeout is not None:
            self._timer = threading.Timer(self._timeout, self._fire)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def _fire(self) -> None:
        self.fired = True
        record = self._lease.trial
        reason = (
            f"trial {record.id} (member {record.member}, steps {record.start_step}.."
            f"{record.end_step}) ran longer than trial_timeout={self._timeout:g} s; its "
            f"worker {self._worker_id} was stopped and the trial is tried again"
        )
        with contextlib.suppress(PBTError):
            self._controller.fail(record.id, self._worker_id, reason)
        if self._on_timeout is not None:
            self._on_timeout()


def delete_quietly(checkpoints: CheckpointStore, names: list[str]) -> None:
    for stale in names:
        # What cannot be deleted now is caught by the sweep at the end of the run.
        with contextlib.suppress(OSError, CheckpointError):
            checkpoints.delete(stale)
