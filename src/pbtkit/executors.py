"""Executors start and watch workers; the controller does the coordinating.

- :class:`ThreadExecutor`: workers as threads of this process (tests, ``memory://``).
- :class:`ProcessExecutor`: persistent local worker processes (the default). Each is a
  ``python -m pbtkit worker`` that imports the user's module once and runs many trials.
- :class:`RayExecutor`: persistent workers as Ray actors on a Ray cluster (many machines).
  Ray is an optional extra (``pip install 'pbtkit[ray]'``), imported only here and only
  when a :class:`RayExecutor` is made.
"""

from __future__ import annotations

import abc
import importlib
import math
import os
import subprocess
import sys
import threading
import traceback
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pbtkit._exceptions import ConfigError
from pbtkit._target import load_target
from pbtkit.controller import Controller, ControllerAPI, worker_identity
from pbtkit.devices import DevicePlan
from pbtkit.store import open_store
from pbtkit.worker import TIMEOUT_EXIT, TrainFn, run_worker

__all__ = ["Executor", "ProcessExecutor", "RayExecutor", "ThreadExecutor", "WorkerExit"]


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """A worker that ended: its id, exit code (0 = finished normally) and why.

    ``lost`` says its machine went away (a Ray node died), which is not its trial's fault.
    """

    worker_id: str
    code: int
    reason: str = ""
    lost: bool = False


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
    """Workers as threads sharing this process's controller.

    A thread cannot be stopped from outside: a worker whose trial ran past
    ``trial_timeout`` is abandoned (reported as ended, its trial given back) and another
    takes its place; the abandoned thread ends when its function returns.
    """

    def __init__(
        self,
        controller: ControllerAPI,
        experiment: str,
        train: TrainFn,
        *,
        trial_timeout: float | None = None,
    ) -> None:
        self._controller = controller
        self._experiment = experiment
        self._train = train
        self._trial_timeout = trial_timeout
        self._stops: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._abandoned: dict[str, threading.Thread] = {}
        self._exits: list[WorkerExit] = []
        self._lock = threading.Lock()
        self._slots: dict[str, int] = {}

    def start(self, count: int) -> None:
        for _ in range(count):
            worker_id = worker_identity(f"t{uuid.uuid4().hex[:8]}")
            self._stops[worker_id] = threading.Event()
            index = _free_slot(self._slots.values())
            self._slots[worker_id] = index
            thread = threading.Thread(
                target=self._work,
                args=(worker_id, index),
                name=f"pbtkit-worker-{worker_id}",
                daemon=True,
            )
            self._threads[worker_id] = thread
            thread.start()

    def _work(self, worker_id: str, index: int) -> None:
        code, reason = 0, ""
        try:
            run_worker(
                self._controller,
                self._experiment,
                self._train,
                worker_id,
                stop=self._stops[worker_id],
                trial_timeout=self._trial_timeout,
                on_timeout=lambda: self._abandon(worker_id),
                worker_index=index,
            )
        except BaseException as exc:  # report, never kill the run from a thread
            code, reason = 1, "".join(traceback.format_exception(exc))
        with self._lock:
            if self._abandoned.pop(worker_id, None) is None:
                self._exits.append(WorkerExit(worker_id, code, reason))

    def _abandon(self, worker_id: str) -> None:
        with self._lock:
            self._stops[worker_id].set()
            thread = self._threads.pop(worker_id, None)
            if thread is None:
                return
            self._abandoned[worker_id] = thread
            # Reported now, so that the run starts another worker at once; its trial was
            # given back already, so nothing more is released.
            self._exits.append(
                WorkerExit(worker_id, 0, "its trial ran past trial_timeout; worker abandoned")
            )

    def reap(self) -> list[WorkerExit]:
        with self._lock:
            exits, self._exits = self._exits, []
        for e in exits:
            thread = self._threads.pop(e.worker_id, None)
            if thread is not None:
                thread.join()
            self._slots.pop(e.worker_id, None)
        return exits

    def alive(self) -> int:
        return sum(t.is_alive() for t in self._threads.values())

    def stop(self, timeout: float = 10.0) -> None:
        for event in self._stops.values():
            event.set()
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
        trial_timeout: Seconds a training function may run per trial; a worker past it
            gives its trial back and replaces its own process (see ``run_worker``).
        max_outage: How long workers reaching a server wait for it to come back.
        devices: How the workers share GPUs and cores (:func:`pbtkit.devices.plan_devices`):
            worker ``i`` starts with ``devices.env(i)`` (its ``CUDA_VISIBLE_DEVICES``,
            threads, index). A worker that replaces a dead one takes its index, and so its
            GPU. None: the workers inherit this process's environment as it is.
    """

    storage: str
    experiment: str
    target: str
    lease_seconds: float = 60.0
    extra_env: dict[str, str] = field(default_factory=dict)
    server: bool = False
    trial_timeout: float | None = None
    max_outage: float | None = None
    devices: DevicePlan | None = None
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)
    _slots: dict[str, int] = field(default_factory=dict, init=False)

    def start(self, count: int) -> None:
        base = dict(os.environ)
        # Workers must import what this process can: the user's modules and the script dir.
        paths = [p for p in sys.path if p] + base.get("PYTHONPATH", "").split(os.pathsep)
        base["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in paths if p))
        base.update(self.extra_env)
        # The storage URL travels in the environment, not in argv, where `ps` would show
        # a database password to every user of the machine.
        base["PBTKIT_SERVER" if self.server else "PBTKIT_STORAGE"] = self.storage
        options = ["--lease-seconds", str(self.lease_seconds)]
        if self.trial_timeout is not None:
            options += ["--trial-timeout", str(self.trial_timeout)]
        if self.max_outage is not None:
            options += ["--max-outage", str(self.max_outage)]
        for _ in range(count):
            label = f"p{uuid.uuid4().hex[:8]}"
            index = _free_slot(self._slots.values())
            env = dict(base)
            if self.devices is not None:
                env.update(self.devices.env(index))
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pbtkit",
                    "worker",
                    self.target,
                    "--experiment",
                    self.experiment,
                    "--label",
                    label,
                    *options,
                ],
                env=env,
                stdin=subprocess.DEVNULL,
            )
            worker_id = worker_identity(label, pid=proc.pid)
            self._procs[worker_id] = proc
            self._slots[worker_id] = index

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
                self._slots.pop(worker_id, None)
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


def _free_slot(taken: Iterable[int]) -> int:
    """The lowest worker index not in use: a replacement takes the index (and the GPU)
    of the worker it replaces."""
    used = set(taken)
    return next(i for i in range(len(used) + 1) if i not in used)


def _import_ray() -> Any:
    """The ``ray`` module, or a ConfigError that says how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise ConfigError(
            f"executor='ray' needs Ray, which cannot be imported ({exc}): pip install 'pbtkit[ray]'"
        ) from exc


def _actor_options(resources: Mapping[str, float] | None) -> dict[str, Any]:
    """Ray actor options for one worker's resource bundle (``{"CPU": 1, "GPU": 0.5, ...}``)."""
    bundle = dict(resources) if resources is not None else {}
    for key, value in bundle.items():
        if (
            not isinstance(key, str)
            or isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ConfigError(
                f"ray_resources must map resource names to non-negative numbers, e.g. "
                f"{{'CPU': 1, 'GPU': 1}}; got {key!r}: {value!r}"
            )
    options: dict[str, Any] = {
        "num_cpus": bundle.pop("CPU", 1),
        "num_gpus": bundle.pop("GPU", 0),
        # A dead worker is replaced by the run (which first gives its trial back), not by Ray.
        "max_restarts": 0,
        "max_task_retries": 0,
    }
    if "memory" in bundle:
        options["memory"] = bundle.pop("memory")
    if bundle:
        options["resources"] = bundle
    return options


class _RayWorker:
    """The body of one Ray actor: a persistent worker running trial after trial.

    Its worker id (``host:pid:label``) can only be known inside the actor, on whichever
    node Ray placed it, so the executor asks for it with :meth:`identity`.
    """

    def __init__(self, label: str, index: int = 0, device: str = "cpu") -> None:
        self.worker_id = worker_identity(label)
        self.index = index
        # Ray gives an actor with num_gpus its GPUs in CUDA_VISIBLE_DEVICES: cuda:0 is its own.
        self.device = device

    def identity(self) -> str:
        """The id this worker leases trials with."""
        return self.worker_id

    def run(
        self,
        storage: str,
        experiment: str,
        target: str,
        server: bool,
        auth_key: str | None,
        lease_seconds: float,
        trial_timeout: float | None = None,
    ) -> int:
        """Run trials until the experiment is finished; returns how many this worker ran.

        A trial past ``trial_timeout`` ends this actor (its process, hung thread
        included); the run sees the actor die and starts another.
        """
        train = load_target(target)
        timeouts: dict[str, Any] = {
            "trial_timeout": trial_timeout,
            "on_timeout": lambda: os._exit(TIMEOUT_EXIT),
        }
        if server:
            from pbtkit.service.client import RemoteController

            with RemoteController(storage, auth_key or None) as remote:
                return run_worker(
                    remote,
                    experiment,
                    train,
                    self.worker_id,
                    poll=0.25,
                    worker_index=self.index,
                    device=self.device,
                    **timeouts,
                )
        with open_store(storage) as store:
            controller = Controller(store, lease_seconds=lease_seconds)
            return run_worker(
                controller,
                experiment,
                train,
                self.worker_id,
                worker_index=self.index,
                device=self.device,
                **timeouts,
            )


@dataclass
class _Actor:
    handle: Any
    identity: Any  # ObjectRef[str]
    done: Any  # ObjectRef[int]
    label: str
    index: int = 0


class RayExecutor(Executor):
    """Persistent workers as Ray actors, one per resource bundle, on a Ray cluster.

    Each actor imports the training function by its target once and runs the ordinary
    worker loop. With a storage URL the actor opens the store itself, so the store must
    be reachable from every node (PostgreSQL, or a SQLite file on a filesystem they
    share); with a server URL it talks to ``pbtkit serve`` over HTTP. Checkpoints must be
    on a filesystem every node sees at the same path.

    An actor that dies (its node lost, killed, out of memory) is reported by :meth:`reap`
    with a non-zero code and Ray's explanation, so the run gives its trial back at once
    and starts another worker, which Ray may place on another node. A worker's id is
    ``host:pid:ray-xxxxxxxx`` and its actor is named ``pbtkit-ray-xxxxxxxx``, so
    ``ray.get_actor`` finds the actor that holds a trial.

    Args:
        storage: The store URL, or a ``pbtkit serve`` URL when ``server`` is True.
        experiment: The experiment's name.
        target: The training function as ``module:qualname`` or ``file.py:qualname``;
            it must be importable on the nodes (ship code with Ray's ``runtime_env`` by
            calling ``ray.init(..., runtime_env=...)`` before the run).
        lease_seconds: Lease length the workers use.
        server: Whether ``storage`` is a server's URL.
        auth_key: The server's key; handed to each actor as an argument, never logged.
        address: The Ray cluster to join when Ray is not initialised yet: ``"auto"``, or
            ``"ray://host:10001"``, ...; None does what ``ray.init()`` does (joins the
            cluster named by ``RAY_ADDRESS`` or running on this machine, else starts one).
            If this executor initialised Ray it shuts it down in :meth:`stop`.
        resources: One worker's resource bundle: ``"CPU"`` (default 1), ``"GPU"``
            (default 0), ``"memory"`` (bytes) and any custom resource of the cluster.
        trial_timeout: Seconds a training function may run per trial; past it the
            trial is given back and the actor ends (another is started).

    Raises:
        ConfigError: Ray is not installed, or ``resources`` is not a bundle.
    """

    def __init__(
        self,
        storage: str,
        experiment: str,
        target: str,
        *,
        lease_seconds: float = 60.0,
        server: bool = False,
        auth_key: str | None = None,
        address: str | None = None,
        resources: Mapping[str, float] | None = None,
        trial_timeout: float | None = None,
    ) -> None:
        self.trial_timeout = trial_timeout
        self.storage = storage
        self.experiment = experiment
        self.target = target
        self.lease_seconds = lease_seconds
        self.server = server
        self.address = address
        self._auth_key = auth_key
        self._options = _actor_options(resources)
        self._ray = _import_ray()
        self._actors: dict[str, _Actor] = {}
        self._actor_class: Any = None
        self._owns_ray = False

    def __repr__(self) -> str:  # keeps the key out of logs and tracebacks
        return (
            f"RayExecutor(storage={self.storage!r}, experiment={self.experiment!r}, "
            f"target={self.target!r}, address={self.address!r}, workers={len(self._actors)})"
        )

    def start(self, count: int) -> None:
        ray = self._ray
        if not ray.is_initialized():
            ray.init(address=self.address, ignore_reinit_error=True, log_to_driver=True)
            self._owns_ray = True
        if self._actor_class is None:
            self._actor_class = ray.remote(_RayWorker)
        device = "cuda:0" if self._options["num_gpus"] > 0 else "cpu"
        for _ in range(count):
            label = f"ray-{uuid.uuid4().hex[:8]}"
            index = _free_slot(a.index for a in self._actors.values())
            handle = self._actor_class.options(name=f"pbtkit-{label}", **self._options).remote(
                label, index, device
            )
            # An actor runs its calls in order: identity() answers before run() starts.
            self._actors[label] = _Actor(
                handle=handle,
                identity=handle.identity.remote(),
                done=handle.run.remote(
                    self.storage,
                    self.experiment,
                    self.target,
                    self.server,
                    self._auth_key,
                    self.lease_seconds,
                    self.trial_timeout,
                ),
                label=label,
                index=index,
            )

    def reap(self) -> list[WorkerExit]:
        if not self._actors:
            return []
        ray = self._ray
        by_ref = {a.done: a for a in self._actors.values()}
        ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0)
        exits = []
        for ref in ready:
            actor = by_ref[ref]
            del self._actors[actor.label]
            code, reason, lost = 0, "", False
            try:
                ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # the worker loop itself raised
                code, reason = 1, str(exc)
            except ray.exceptions.RayError as exc:  # the actor is gone: killed, node lost...
                # Ray's full account first; the last line is what events and errors show.
                said = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
                code, lost = 1, True
                reason = "\n".join(
                    [*said, f"Ray actor pbtkit-{actor.label} died: {said[-1] if said else exc!r}"]
                )
            exits.append(WorkerExit(self._worker_id(actor), code, reason, lost))
        return exits

    def _worker_id(self, actor: _Actor) -> str:
        """The id the actor leased with; a stand-in if it died before it could lease."""
        try:
            return str(self._ray.get(actor.identity, timeout=0))
        except self._ray.exceptions.RayError:
            return f"unknown:{actor.label}"

    def alive(self) -> int:
        # Actors still waiting for resources count: starting more would not help them.
        return len(self._actors)

    def stop(self, timeout: float = 10.0) -> None:
        ray = self._ray
        actors, self._actors = list(self._actors.values()), {}
        for actor in actors:
            ray.kill(actor.handle, no_restart=True)
        if actors:
            # Wait until Ray has seen them die, so nothing of this run outlives it.
            ray.wait([a.done for a in actors], num_returns=len(actors), timeout=timeout)
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False
