"""Executors start and watch workers; the controller does the coordinating.

- :class:`ThreadExecutor`: workers as threads of this process (tests, ``memory://``).
- :class:`ProcessExecutor`: persistent local worker processes (the default). Each is a
  ``python -m pbtkit worker`` that imports the user's module once and runs many trials.
"""

from __future__ import annotations

import abc
import os
import subprocess
import sys
import threading
import traceback
import uuid
from dataclasses import dataclass, field

from pbtkit.controller import ControllerAPI, worker_identity
from pbtkit.worker import TrainFn, run_worker

__all__ = ["Executor", "ProcessExecutor", "ThreadExecutor", "WorkerExit"]


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """A worker that ended: its id, exit code (0 = finished normally) and why."""

    worker_id: str
    code: int
    reason: str = ""


class Executor(abc.ABC):
    """Starts workers for one experiment and reports those that end."""

    @abc.abstractmethod
    def start(self, count: int) -> None:
        """Start ``count`` more workers."""

    @abc.abstractmethod
    def reap(self) -> list[WorkerExit]:
        """Workers that ended since the last call."""

    @abc.abstractmethod
    def alive(self) -> int:
        """How many workers are running."""

    @abc.abstractmethod
    def stop(self, timeout: float = 10.0) -> None:
        """Stop every worker (after its current trial where possible) and wait for them."""


class ThreadExecutor(Executor):
    """Workers as threads sharing this process's controller."""

    def __init__(self, controller: ControllerAPI, experiment: str, train: TrainFn) -> None:
        self._controller = controller
        self._experiment = experiment
        self._train = train
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._exits: list[WorkerExit] = []
        self._lock = threading.Lock()

    def start(self, count: int) -> None:
        for _ in range(count):
            worker_id = worker_identity(f"t{uuid.uuid4().hex[:8]}")
            thread = threading.Thread(
                target=self._work, args=(worker_id,), name=f"pbtkit-worker-{worker_id}", daemon=True
            )
            self._threads[worker_id] = thread
            thread.start()

    def _work(self, worker_id: str) -> None:
        code, reason = 0, ""
        try:
            run_worker(self._controller, self._experiment, self._train, worker_id, stop=self._stop)
        except BaseException as exc:  # report, never kill the run from a thread
            code, reason = 1, "".join(traceback.format_exception(exc))
        with self._lock:
            self._exits.append(WorkerExit(worker_id, code, reason))

    def reap(self) -> list[WorkerExit]:
        with self._lock:
            exits, self._exits = self._exits, []
        for e in exits:
            self._threads.pop(e.worker_id).join()
        return exits

    def alive(self) -> int:
        return sum(t.is_alive() for t in self._threads.values())

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads.values():
            thread.join(timeout)


@dataclass
class ProcessExecutor(Executor):
    """Persistent local worker processes, each started as ``python -m pbtkit worker``.

    Args:
        storage: The store URL (every worker opens it; it must be shareable), or the URL
            of a ``pbtkit serve`` when ``server`` is True.
        experiment: The experiment's name.
        target: The training function as ``module:qualname`` or ``file.py:qualname``.
        lease_seconds: Lease length the workers use.
        extra_env: Environment variables added for the workers.
        server: Whether ``storage`` is a server's URL (workers then reach it over HTTP;
            its key travels in ``PBTKIT_AUTH_KEY`` of ``extra_env``, never in argv).
    """

    storage: str
    experiment: str
    target: str
    lease_seconds: float = 60.0
    extra_env: dict[str, str] = field(default_factory=dict)
    server: bool = False
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)

    def start(self, count: int) -> None:
        env = dict(os.environ)
        # Workers must import what this process can: the user's modules and the script dir.
        paths = [p for p in sys.path if p] + env.get("PYTHONPATH", "").split(os.pathsep)
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
        env.update(self.extra_env)
        for _ in range(count):
            label = f"p{uuid.uuid4().hex[:8]}"
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pbtkit",
                    "worker",
                    self.target,
                    "--server" if self.server else "--storage",
                    self.storage,
                    "--experiment",
                    self.experiment,
                    "--label",
                    label,
                    "--lease-seconds",
                    str(self.lease_seconds),
                ],
                env=env,
                stdin=subprocess.DEVNULL,
            )
            self._procs[worker_identity(label, pid=proc.pid)] = proc

    @property
    def pids(self) -> dict[str, int]:
        """Worker id -> process id of the running workers."""
        return {wid: p.pid for wid, p in self._procs.items() if p.poll() is None}

    def reap(self) -> list[WorkerExit]:
        exits = []
        for worker_id, proc in list(self._procs.items()):
            code = proc.poll()
            if code is not None:
                del self._procs[worker_id]
                reason = "" if code == 0 else f"worker process {proc.pid} exited with code {code}"
                exits.append(WorkerExit(worker_id, code, reason))
        return exits

    def alive(self) -> int:
        return sum(p.poll() is None for p in self._procs.values())

    def stop(self, timeout: float = 10.0) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
