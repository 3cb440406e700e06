"""Workers: lease a trial, run the user's function on it, commit the checkpoint, report.

A worker is long-lived: it imports the user's module once and runs trial after trial
until the experiment is finished. :func:`run_worker` is the loop; it talks to anything
with the controller's methods, so the same loop serves threads, local processes and
(later) remote workers.
"""

from __future__ import annotations

import contextlib
import numbers
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pbtkit._exceptions import (
    BadCheckpoint,
    CheckpointError,
    LeaseLost,
    MetricError,
    PBTError,
    StorageError,
)
from pbtkit._worker_threads import Deleter, Heartbeat, Watchdog, delete_quietly
from pbtkit.checkpoints import CheckpointStore, open_checkpoints
from pbtkit.controller import FINISHED, WAIT, ControllerAPI, Lease
from pbtkit.core.fitness import metric_value, require_metric
from pbtkit.core.inheritance import inherit_seed, shrink_perturb, transform_of
from pbtkit.devices import current_device, current_worker
from pbtkit.store._base import Measurement

__all__ = [
    "IMPORT_FAILED",
    "TIMEOUT_EXIT",
    "Trial",
    "TrainFn",
    "restart_process",
    "run_worker",
]


class Trial:
    """One training segment handed to the user's function.

    Attributes:
        hparams: The hyperparameters to train with (a copy; changing it changes nothing).
        member: The population slot this trial trains.
        trial_id: Unique id of the trial.
        generation: How many trials this member has run before this one.
        start_step: The member's step count when this trial starts.
        end_step: The step count it must reach (exclusive end of :meth:`steps`).
        parent_checkpoint: Local directory to load weights from (the member's own previous
            checkpoint, or the donor's after an exploit), verified against its manifest;
            a cached download when checkpoints live in an object store; None for a first
            trial or when the parent saved nothing.
        checkpoint_dir: An empty local directory: write this trial's checkpoint files here
            (they are uploaded when the checkpoint root is an object store).
        donor: The member whose checkpoint this trial starts from after an exploit, else None.
        attempt: 1 for the first try, 2 after one failure, ...
        replay: True when :func:`pbtkit.replay` calls the function to re-train along a
            recorded schedule (no exploits; the time to train on training plus
            validation data, say); False in a PBT run.
        worker: The index of the worker running this trial (``0 .. workers - 1`` in a
            run; a replaced worker takes the index of the one it replaces), or None when
            it has none (a hand-started ``pbtkit worker`` without ``--worker-index``).
    """

    def __init__(
        self,
        lease: Lease,
        checkpoint_dir: Path,
        parent_checkpoint: Path | None,
        *,
        replay: bool = False,
        worker: int | None = None,
        device: str | None = None,
    ) -> None:
        record = lease.trial
        self.hparams: dict[str, Any] = dict(record.hparams)
        self.member = record.member
        self.trial_id = record.id
        self.generation = record.generation
        self.start_step = record.start_step
        self.end_step = record.end_step
        self.parent_checkpoint = parent_checkpoint
        self.checkpoint_dir = checkpoint_dir
        self.donor = lease.donor
        self.attempt = record.attempt
        self.metric = lease.metric
        self._needed = lease.metrics or (lease.metric,)
        self.replay = replay
        self.worker = worker if worker is not None else current_worker()
        self._device = device
        self._inherit = dict(record.inherit) if record.inherit else None
        self._reports: list[Measurement] = []
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        # (report_batch, wake): how many waiting reports wake the heartbeat to send them.
        self._flush_at: tuple[int, Callable[[], None]] | None = None

    @property
    def last_step(self) -> int:
        """The last step of :meth:`steps` (where a final evaluation is reported)."""
        return self.end_step - 1

    @property
    def device(self) -> str:
        """The torch device to train on: ``"cuda:0"`` when this worker was given a GPU
        (``pk.run(gpus_per_worker=...)``; ``cuda:0`` is then its own GPU), else ``"cpu"``.
        Outside a planned worker: ``"cuda:0"`` if PyTorch sees a GPU, else ``"cpu"``."""
        if self._device is None:
            self._device = current_device()
        return self._device

    @property
    def is_exploit(self) -> bool:
        """Whether this trial starts from another member's checkpoint."""
        return self.donor is not None

    @property
    def shrink_perturb(self) -> tuple[float, float] | None:
        """``(shrink, noise)`` when this trial inherits its donor's weights shrunk and
        perturbed (``PBT(inherit=ShrinkPerturb(...))``), else None. :meth:`inherited`
        applies it."""
        if self._inherit is None or self._inherit.get("mode") != "shrink_perturb":
            return None
        return float(self._inherit["shrink"]), float(self._inherit["noise"])

    def inherited(self, arrays: Mapping[str, Any]) -> dict[str, Any]:
        """The parent checkpoint's arrays as this trial must start from them.

        Unchanged, except after an exploit with shrink-and-perturb inheritance, where each
        float array becomes ``shrink * w + noise * N(0, 1)`` (seeded by the trial id, so a
        retry starts from the same weights). Call it on what you load from
        :attr:`parent_checkpoint`, e.g. ``weights = trial.inherited(np.load(...))``.
        PyTorch tensors stay tensors on their device (:func:`pbtkit.torch.shrink_perturb`);
        :func:`pbtkit.torch.load` does this for you.
        """
        rng = np.random.default_rng([self.trial_id, 0x5EED])
        found = self.shrink_perturb
        if found is not None:
            shrink, noise = found
            if any(type(v).__module__.startswith("torch") for v in arrays.values()):
                # Tensors stay tensors, on their device: the torch path (pbtkit[torch]).
                from pbtkit._torch_inherit import shrink_perturb as torch_shrink_perturb

                seed = inherit_seed(self.trial_id)
                return dict(torch_shrink_perturb(arrays, shrink, noise, seed=seed))
            return shrink_perturb(arrays, shrink, noise, rng)
        if self._inherit is not None:  # your own WeightTransform, recorded by the policy
            return transform_of(self._inherit).apply(arrays, rng)
        return dict(arrays)

    def steps(self) -> range:
        """The steps this trial must train: ``range(start_step, end_step)``."""
        return range(self.start_step, self.end_step)

    def report(self, step: int, **metrics: float) -> None:
        """Record metric values at a step (e.g. ``trial.report(step, loss=0.3)``).

        The objective is the trial's last report of the objective metric. NaN is
        accepted (a diverged member) and ranks last.

        Raises:
            MetricError: No metric given, a value that is not a real number, or a step
                outside this trial.
        """
        if not metrics:
            raise MetricError(
                "trial.report() needs at least one metric, e.g. report(step, loss=0.3)"
            )
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise MetricError(f"report step must be an integer, got {step!r}")
        if not self.start_step <= int(step) < max(self.end_step, self.start_step + 1):
            raise MetricError(
                f"step {step} is outside this trial's steps [{self.start_step}, {self.end_step}); "
                "report the step you just trained (see trial.steps())"
            )
        clean = {name: metric_value(name, value) for name, value in metrics.items()}
        with self._lock:
            self._reports.append(Measurement(int(step), clean))
            self._seen.update(clean)
            pending = len(self._reports)
        flush_at = self._flush_at
        if flush_at is not None and pending >= flush_at[0]:
            flush_at[1]()

    def _take_reports(self) -> list[Measurement]:
        with self._lock:
            taken, self._reports = self._reports, []
        return taken

    def _pending(self) -> bool:
        with self._lock:
            return bool(self._reports)

    def _put_back(self, reports: list[Measurement]) -> None:
        # Reports a heartbeat could not deliver go first again, in their order.
        with self._lock:
            self._reports[:0] = reports

    def _check_objective(self) -> None:
        for name in self._needed:
            require_metric(name, self._seen)

    def __repr__(self) -> str:
        return (
            f"Trial(id={self.trial_id}, member={self.member}, steps={self.start_step}.."
            f"{self.end_step}, hparams={self.hparams})"
        )


TrainFn = Callable[[Trial], Any]


def _backoff(longest: float) -> Iterator[float]:
    delay = 0.001
    while True:
        yield delay
        delay = min(delay * 2, longest)


def run_worker(
    controller: ControllerAPI,
    experiment: str | None,
    train: TrainFn,
    worker_id: str,
    *,
    stop: threading.Event | None = None,
    max_trials: int | None = None,
    verify_checkpoints: bool = True,
    checkpoint_root: str | None = None,
    poll: float = 0.02,
    trial_timeout: float | None = None,
    on_timeout: Callable[[], None] | None = None,
    worker_index: int | None = None,
    device: str | None = None,
) -> int:
    """Run trials until the experiment is finished (or ``stop`` is set).

    A lease and a timeout guard different things. The lease says the worker is alive: a
    heartbeat thread renews it while the training function runs, so a worker that dies or
    loses its network loses its trial after ``lease_seconds``. The timeout says the trial
    is making progress: a function still running after ``trial_timeout`` seconds (hung on
    a lock, a dead data loader, a GPU that stopped answering) is given up, counted as a
    failed attempt with that reason, and ``on_timeout`` is called, since Python cannot
    stop a function from outside: a process worker replaces itself (its hung thread dies
    with it), a thread worker is abandoned and another takes its place.

    Args:
        controller: The controller, in process or a :class:`~pbtkit.service.RemoteController`.
        experiment: The experiment's name; None to serve every running experiment of
            the controller until ``stop`` is set.
        train: The user's function; called once per trial with a :class:`Trial`.
        worker_id: This worker's lease-owner name (see :func:`worker_identity`).
        stop: Set it to make the worker return after its current trial.
        max_trials: Return after this many trials (tests, and workers recycled on purpose).
        verify_checkpoints: Check each parent checkpoint's SHA-256 sums before loading.
        checkpoint_root: Where this machine sees the checkpoint root, if not at the path
            or URL the experiment names (a shared filesystem mounted elsewhere). An
            object store's credentials come from this process's environment.
        poll: Longest wait between two asks when there is nothing to do.
        trial_timeout: Seconds a training function may run per trial (None: no limit).
        on_timeout: Called (from a watchdog thread) after a trial ran past
            ``trial_timeout`` and was given back; it must stop this worker, since the
            hung function cannot be interrupted: :func:`restart_process` for a process.
            None: the worker is only told to stop after the hung call returns.
        worker_index: This worker's index, given to each trial as ``trial.worker``
            (default: ``PBTKIT_WORKER_INDEX``, set by the process executor).
        device: The torch device of its trials, ``trial.device`` (default:
            ``PBTKIT_DEVICE``, else what PyTorch sees).

    Returns:
        How many trials this worker finished.

    Raises:
        StorageError: The controller stayed unreachable longer than its ``max_outage``
            (a remote one); a checkpoint trained but not acknowledged is left in place.
    """
    roots: dict[str, CheckpointStore] = {}
    deleters: dict[str, Deleter] = {}
    beats = Heartbeat(controller, worker_id, max(controller.lease_seconds / 4.0, 0.05))
    # An in-process controller hands the next lease back with a finish, in the same
    # transaction; others (a remote one) are asked for it separately.
    handoff = getattr(controller, "finish_and_lease", None) if experiment is not None else None
    finished = 0
    waits = _backoff(poll)
    ahead: Lease | None = None  # handed over with the last finish
    try:
        while stop is None or not stop.is_set():
            if max_trials is not None and finished >= max_trials:
                break
            lease: Lease | str
            if ahead is not None:
                lease, ahead = ahead, None
            elif experiment is not None:
                lease = controller.lease(experiment, worker_id)
            else:
                lease = controller.lease_any(worker_id)
            if lease == FINISHED:
                break
            if lease == WAIT:
                time.sleep(next(waits))
                continue
            assert isinstance(lease, Lease)
            waits = _backoff(poll)
            root = checkpoint_root or lease.checkpoint_root
            if root not in roots:
                roots[root] = open_checkpoints(root)
                deleters[root] = Deleter(roots[root])
            watchdog = Watchdog(controller, lease, worker_id, trial_timeout, on_timeout)
            # The next lease comes with the finish unless this is the worker's last trial.
            last = (max_trials is not None and finished + 1 >= max_trials) or (
                stop is not None and stop.is_set()
            )
            ahead = _run_trial(
                controller,
                roots[root],
                lease,
                train,
                worker_id,
                beats,
                verify_checkpoints,
                watchdog,
                placement=(worker_index, device),
                handoff=None if last else handoff,
                deleter=deleters[root],
            )
            if watchdog.fired:
                break  # abandoned: this worker's trial was given up while its function hung
            finished += 1
    finally:
        beats.close()
        for deleter in deleters.values():
            deleter.close()
        if ahead is not None:
            # Stopped with a trial handed over at the last finish: it goes back at once,
            # not counted as an attempt, for another worker to take.
            with contextlib.suppress(PBTError):
                controller.fail(ahead.trial.id, worker_id, "its worker stopped", penalize=False)
    return finished


IMPORT_FAILED = 3
"""Exit status of a worker process that cannot import the training function: every worker
would fail the same way, so the run stops at once rather than replacing it."""

TIMEOUT_EXIT = 75
"""Exit status of a worker process stopped by ``trial_timeout`` when it cannot replace
itself (it is replaced by whoever started it)."""


def restart_process() -> None:
    """Replace this worker process with a fresh one, started with the same command line.

    Called when a trial ran past ``trial_timeout``: the hung function cannot be stopped
    from inside Python, so the whole process image goes (threads, GPU memory, locks) and
    the same ``pbtkit worker`` command starts again under the same process id, so that
    whoever watches the process (``pbtkit run``, systemd, a shell) sees it go on.
    """
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, [sys.executable, "-m", "pbtkit", *sys.argv[1:]])
    except OSError:
        os._exit(TIMEOUT_EXIT)


def _run_trial(
    controller: ControllerAPI,
    checkpoints: CheckpointStore,
    lease: Lease,
    train: TrainFn,
    worker_id: str,
    beats: Heartbeat | float,
    verify: bool,
    watchdog: Watchdog | None = None,
    *,
    placement: tuple[int | None, str | None] = (None, None),
    handoff: Callable[..., tuple[list[str], Lease | None]] | None = None,
    deleter: Deleter | None = None,
) -> Lease | None:
    """Run one leased trial to its finish (or its failure).

    Returns:
        The worker's next lease when ``handoff`` (the controller's ``finish_and_lease``)
        gave one with the finish, else None.
    """
    if isinstance(beats, float | int):  # a trial on its own (tests)
        own = Heartbeat(controller, worker_id, float(beats))
        try:
            return _run_trial(
                controller, checkpoints, lease, train, worker_id, own, verify, watchdog,
                placement=placement, handoff=handoff, deleter=deleter,
            )  # fmt: skip
        finally:
            own.close()
    record = lease.trial
    parent = None
    if lease.parent_checkpoint is not None:
        try:
            # A local directory either way: under an object store, a checked cached copy.
            parent = checkpoints.fetch(lease.parent_checkpoint, verify=verify)
        except BadCheckpoint as exc:
            # Not this trial's fault, and trying again cannot help: the controller moves
            # it (and every trial waiting for the same checkpoint) to a good one.
            _give_back(controller, checkpoints, record.id, worker_id, exc, bad_parent=True)
            return None
        except BaseException as exc:
            _give_back(controller, checkpoints, record.id, worker_id, exc)
            return None
    staging = checkpoints.staging_dir(lease.experiment, record.id)
    try:
        trial = Trial(lease, staging, parent, worker=placement[0], device=placement[1])
        guard = watchdog if watchdog is not None else contextlib.nullcontext()
        beats.watch(trial)
        try:
            with guard:
                train(trial)
        finally:
            lost = beats.unwatch()
        if watchdog is not None and watchdog.fired:
            raise LeaseLost(f"trial {record.id} was given up after trial_timeout")
        if lost is not None:
            raise lost
        trial._check_objective()
        name = checkpoints.commit(staging, lease.experiment, record.id, attempt=record.attempt)
    except LeaseLost:
        shutil.rmtree(staging, ignore_errors=True)
        return None
    except (KeyboardInterrupt, SystemExit):
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except BaseException as exc:  # the user's code may raise anything; the run goes on
        shutil.rmtree(staging, ignore_errors=True)
        _give_back(controller, checkpoints, record.id, worker_id, exc)
        return None
    ahead: Lease | None = None
    try:
        if handoff is not None:
            released, ahead = handoff(record.id, worker_id, trial._take_reports(), name)
        else:
            released = controller.finish(record.id, worker_id, trial._take_reports(), name)
    except LeaseLost:
        # Refused for good: the trial is another worker's now. This attempt's checkpoint
        # has a name of its own, so deleting it touches nobody else's.
        if name is not None:
            checkpoints.delete(name)
        return None
    except StorageError:
        # The controller could not be reached for longer than its outage allowance: the
        # finish may or may not have been recorded, so the checkpoint stays where it is
        # (an unused one goes in the run's final sweep).
        raise
    except PBTError as exc:
        # The decision after this trial was refused (a user's explore function that left
        # the space, say): the trial fails with that message, like any other error.
        if name is not None:
            checkpoints.delete(name)
        _give_back(controller, checkpoints, record.id, worker_id, exc)
        return None
    if deleter is not None:
        deleter.delete(released)
    else:
        delete_quietly(checkpoints, released)
    return ahead


def _give_back(
    controller: ControllerAPI,
    checkpoints: CheckpointStore,
    trial_id: int,
    worker_id: str,
    exc: BaseException,
    *,
    bad_parent: bool = False,
) -> None:
    text = "".join(traceback.format_exception(exc))
    if isinstance(exc, CheckpointError):
        text = f"cannot start from the parent checkpoint: {exc}\n{text}"
    try:
        released = controller.fail(trial_id, worker_id, text, bad_parent=bad_parent)
    except LeaseLost:
        return
    delete_quietly(checkpoints, released)
