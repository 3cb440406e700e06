"""``pbtkit.run``: the black-box entry point, where pbtkit runs the training loop."""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pbtkit._exceptions import ConfigError, PBTError
from pbtkit._target import find_target, load_target, target_of
from pbtkit.checkpoints import CheckpointStore, open_checkpoints
from pbtkit.controller import Controller, ControllerAPI
from pbtkit.controller._retention import final_keep
from pbtkit.core.custom_explore import CustomExplore
from pbtkit.core.exploit import Exploiter, Truncation
from pbtkit.core.explore import Explorer, Perturb
from pbtkit.core.fitness import Fitness, Objective
from pbtkit.core.inheritance import ShrinkPerturb
from pbtkit.core.policy import PBT
from pbtkit.core.space import Domain, SearchSpace
from pbtkit.devices import DevicePlan, check_gpus_per_worker, plan_devices
from pbtkit.executors import Executor, ProcessExecutor, RayExecutor, ThreadExecutor
from pbtkit.loggers import Logger, follow, logger_from
from pbtkit.progress import ProgressDisplay
from pbtkit.result import Result
from pbtkit.spec import ExperimentSpec, check_experiment_name
from pbtkit.store import display_url, normalize_url, open_store
from pbtkit.worker import IMPORT_FAILED, TrainFn, Trial

__all__ = ["run"]

log = logging.getLogger("pbtkit")

_POLL = 0.02
_SUMMARY_EVERY = 0.25


def run(
    train: TrainFn | str,
    *,
    space: SearchSpace | Mapping[str, Domain | Mapping[str, Any]],
    metric: str | Fitness,
    mode: Literal["max", "min"] = "max",
    population: int = 8,
    workers: int = 2,
    ready_every: int,
    total_steps: int,
    storage: str = "sqlite:///pbt.db",
    checkpoint_dir: str | Path | None = None,
    name: str | None = None,
    evolution: Literal["async", "generational"] = "async",
    exploit: Exploiter | None = None,
    explore: Explorer | Callable[..., Any] | None = None,
    seed: int = 0,
    initial: Sequence[Mapping[str, Any]] = (),
    inherit: Literal["all", "hparams", "weights"] | ShrinkPerturb = "all",
    executor: Literal["process", "thread", "ray"] = "process",
    max_attempts: int = 3,
    lease_seconds: float = 60.0,
    keep_checkpoints: Literal["latest", "all"] = "latest",
    resume: bool = True,
    progress: bool | None = None,
    server: str | None = None,
    auth_key: str | None = None,
    ray_address: str | None = None,
    ray_resources: Mapping[str, float] | None = None,
    tensorboard: bool | str | os.PathLike[str] = False,
    trial_timeout: float | None = None,
    max_outage: float | None = None,
    loggers: Sequence[Logger | str | Mapping[str, Any]] = (),
    gpus_per_worker: float | None = None,
    devices: Sequence[int | str] | str | None = None,
) -> Result:
    """Train a population with Population Based Training and return the result.

    Each member trains in trials of ``ready_every`` steps; when a trial ends the policy
    ranks the member against the population and it either continues, or exploits a
    better member (copies its checkpoint and hyperparameters) and explores (perturbs them).

    Args:
        train: ``train(trial)``: load ``trial.parent_checkpoint`` if set, train
            ``trial.steps()`` with ``trial.hparams``, ``trial.report(step, **metrics)``,
            save into ``trial.checkpoint_dir``. Must be a module-level function for
            ``executor="process"`` and ``executor="ray"``; its import path
            ``"package.module:function"`` or ``"path/file.py:function"`` may be given instead.
        space: Hyperparameter name -> domain (``pk.Uniform(0, 1)``...) or dict spec.
        metric: The reported metric to optimise (its last value in each trial counts),
            or a fitness over several: ``pk.MultiObjective({"acc": "max", "ms": "min"},
            weights=... | combine="pareto")``.
        mode: ``"max"`` or ``"min"`` (of a single ``metric``).
        population: Members in the population (may exceed ``workers``).
        workers: Trials trained at once.
        ready_every: Steps per trial (how often a member is ranked).
        total_steps: Steps each member trains in all.
        storage: Where the state lives: ``sqlite:///file.db`` (default),
            ``postgresql+psycopg://...`` (many machines) or ``memory://`` (with
            ``executor="thread"`` only). With ``executor="ray"`` every node opens it.
        checkpoint_dir: Checkpoint root (a directory or an fsspec URL such as
            ``s3://bucket/prefix``); defaults to ``pbt-checkpoints`` beside the SQLite
            file, else ``./pbt-checkpoints`` in the working directory. Each experiment has
            its own folder inside.
        name: The experiment's name; running again with the same name resumes it.
            Defaults to the training function's name (for a target named by a string,
            the last name of its ``module:function`` path).
        evolution: ``"async"`` or ``"generational"``.
        exploit: ``pk.Truncation(0.2)`` (default), ``pk.BinaryTournament()``,
            ``pk.TTest()``, ``pk.Initiator(window=2)`` (initiator-based evolution) or
            ``pk.NoExploit()`` (explore only; ``NoExploit(explore=False)``: random search).
        explore: ``pk.Perturb()`` (default; per-parameter settings with ``per_param=``),
            ``pk.Resample(p)``, ``pk.GaussianNoise(sigma)``, ``pk.PB2()``, ``pk.Keep()``
            (exploit only), or your function ``f(hparams, space, rng) -> hparams``.
        seed: Seeds the initial hyperparameters (always the same for a seed) and every
            decision (each draws from a stream keyed by the seed and the trial it
            follows). With ``evolution="generational"``, or one worker, a run repeats
            exactly; with asynchronous evolution and several workers, which member
            finishes first depends on timing, so runs with one seed start alike and may
            then take other decisions.
        initial: Starting hyperparameters of the first members, one dict each (a grid,
            or hand-set members); values left out, and the other members, are sampled.
        inherit: What an exploiting member takes from its donor: ``"all"`` (weights and
            hyperparameters), ``"hparams"`` (hyperparameters only), ``"weights"``
            (weights only; the member explores its own hyperparameters) or
            ``pk.ShrinkPerturb(shrink, noise)`` (weights shrunk and perturbed: load them
            with ``trial.inherited(...)``).
        executor: ``"process"`` (persistent local worker processes), ``"thread"``, or
            ``"ray"`` (persistent workers as Ray actors on a Ray cluster; a worker lost
            with its node has its trial run again by another; ``pip install 'pbtkit[ray]'``).
            With ``"ray"`` the storage (or ``server``) and the checkpoints must be
            reachable from every node, and the training function importable there.
        max_attempts: Tries per trial before its member is marked failed.
        lease_seconds: A worker silent this long loses its trial to another.
        keep_checkpoints: ``"latest"`` (delete what nothing needs) or ``"all"``.
        resume: Continue an existing experiment of the same name (else raise).
        progress: Show progress (default True): a live bar on a terminal or in a notebook,
            else a plain line on stderr at each tenth of the way and at least every 30 s.
        server: URL of a ``pbtkit serve``: the experiment lives there, ``storage`` and
            ``checkpoint_dir`` are the server's, and any ``pbtkit worker --server URL``
            on any machine works on it; ``workers`` more are started here (0: none).
        auth_key: The server's key (default: ``PBTKIT_AUTH_KEY``).
        ray_address: With ``executor="ray"``, the cluster to join if Ray is not
            initialised yet (``"auto"``, ``"ray://head:10001"``); None does what
            ``ray.init()`` does. Call ``ray.init(...)`` yourself first for other options
            (a ``runtime_env`` to ship code, say).
        ray_resources: With ``executor="ray"``, the resource bundle of each worker:
            ``{"CPU": 1, "GPU": 1}`` and any custom resource (default ``{"CPU": 1}``).
        tensorboard: TensorBoard event files of every member (metrics, the hyperparameters
            in force, exploits), written while the run goes on, only when asked for
            (``pip install 'pbtkit[tensorboard]'``): True writes them into
            ``tensorboard/<name>/`` beside the SQLite file, else beside a local checkpoint
            root, else in the working directory; a directory writes them into
            ``<directory>/<name>/``; False (default) writes none. Watch them with
            ``tensorboard --logdir <that folder>``.
        trial_timeout: Seconds a training function may run for one trial (None: no
            limit). Past it the trial is given back as a failed attempt that says so
            (retried up to ``max_attempts``) and its worker is replaced: a process
            worker restarts its process, a thread worker is abandoned. The lease, by
            contrast, only notices a worker that stopped answering.
        max_outage: With ``server``, how long this run and its workers wait for an
            unreachable server to come back before they give up (default 600 s).
        loggers: Experiment trackers written while the run goes on, from this process
            (never from the workers): ``pbtkit.loggers.MLflowLogger(...)``,
            ``WandbLogger(...)``, or their names ``"mlflow"``, ``"wandb"`` for their
            defaults, or tables ``{"type": "mlflow", "tracking_uri": ...}`` (see
            :mod:`pbtkit.loggers`; ``pbtkit[mlflow]``, ``pbtkit[wandb]``).
        gpus_per_worker: GPUs for each local worker process: ``1``, ``0.5`` (two workers
            share a GPU), ``2`` (two each), ``0`` (CPU only). Each worker gets its own
            ``CUDA_VISIBLE_DEVICES``; ``trial.device`` says ``"cuda:0"`` or ``"cpu"`` and
            ``trial.worker`` its index. None (default): one GPU per worker when there are
            enough, an equal share when not, the CPU when there is none. With
            ``executor="ray"`` it is the actors' ``num_gpus`` (Ray picks the GPUs). Each
            local worker also gets ``cores // workers`` CPU threads (``OMP_NUM_THREADS``,
            ``MKL_NUM_THREADS``) unless those are set already.
        devices: The GPUs to share among the local workers (indices or UUIDs: ``[0, 1]``
            or ``"0,1"``); default: ``CUDA_VISIBLE_DEVICES`` if set, else those
            ``nvidia-smi`` lists (PyTorch is not imported to find them).

    Returns:
        A :class:`~pbtkit.Result`.

    Raises:
        ConfigError: A setting is invalid (the message says which and how to fix it).
        ExperimentConflict: ``name`` exists with other settings.
        StorageError: The storage cannot be opened.
        PBTError: Every member failed (the last error is in the message).
    """
    check: Callable[[], object] | None = None
    if isinstance(train, str):
        target = train
        if executor == "process":
            # The workers import the target themselves: this process imports it only
            # once they are started, so the imports overlap (a module that imports torch
            # takes seconds), and a target that cannot be imported is still refused here
            # with the loader's message. Nothing here calls the function.
            find_target(target)  # a mistyped module or file: refused before anything
            check = functools.partial(load_target, target)
            train = _not_called(target)
        else:
            train = load_target(train)
    elif callable(train):
        target = target_of(train) if executor in ("process", "ray") else ""
    else:
        raise ConfigError(f"train must be a function taking a Trial, got {type(train).__name__}")
    trial_timeout = _seconds("trial_timeout", trial_timeout, zero=False)
    max_outage = _seconds("max_outage", max_outage, zero=True)
    if not isinstance(workers, int) or workers < (0 if server else 1):
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if executor not in ("process", "thread", "ray"):
        raise ConfigError(f"executor must be 'process', 'thread' or 'ray', got {executor!r}")
    if executor != "ray" and (ray_address is not None or ray_resources is not None):
        raise ConfigError(
            f"ray_address and ray_resources are settings of executor='ray', not {executor!r}"
        )
    name = check_experiment_name(name or getattr(train, "__name__", None) or "pbt")
    url = normalize_url(storage)
    trackers = _trackers(loggers)
    spec = ExperimentSpec(
        space=SearchSpace.coerce(space),
        policy=PBT(
            objective=metric if isinstance(metric, Fitness) else Objective(metric, mode),
            exploit=exploit if exploit is not None else Truncation(0.2),
            explore=_explorer(explore),
            ready_every=ready_every,
            total_steps=total_steps,
            inherit=inherit,
        ),
        population=population,
        checkpoint_root=str(_checkpoint_root(checkpoint_dir, url, name)),
        evolution=evolution,
        seed=seed,
        max_attempts=max_attempts,
        keep_checkpoints=keep_checkpoints,
        initial=tuple(initial),
    )
    _import_named_code(spec.policy)
    controller, pool, close = _connect(
        server,
        auth_key,
        url,
        name,
        train,
        target,
        executor,
        lease_seconds,
        ray_address=ray_address,
        ray_resources=ray_resources,
        trial_timeout=trial_timeout,
        max_outage=max_outage,
        placement=(workers, gpus_per_worker, devices),
    )
    try:
        controller.create(name, spec, resume=resume)
        controller.reclaim_orphans(name)
        tensorboard_logger = _tensorboard(tensorboard, name, url, server, spec.checkpoint_root)
        with follow(controller, name, [*tensorboard_logger, *trackers]):
            drive(controller, name, pool, workers, ProgressDisplay(name, progress), check=check)
        result = Result(controller, name)
        checkpoints = open_checkpoints(result.spec.checkpoint_root, create=False)
        if checkpoints.exists():  # a server's root may not be visible from here
            checkpoints.sweep(name, _kept(result, checkpoints))
    except BaseException:
        close()
        raise
    _warn_nonfinite(result)
    raise_if_failed(result, name, url)
    return result


def _not_called(target: str) -> TrainFn:
    """Stands for a training function only worker processes import and call."""

    def train(trial: Trial) -> None:  # pragma: no cover - never called
        raise AssertionError(f"{target} runs in the worker processes, not here")

    train.__name__ = target.rpartition(":")[2].rpartition(".")[2]
    return train


def raise_if_failed(result: Result, name: str, url: str) -> None:
    """End a run as :func:`run` does: a run that stopped, or whose members all failed,
    raises with why and the command that shows the rest.

    Raises:
        PBTError: The experiment stopped, or every member failed.
    """
    see = f"See `pbtkit status --storage {display_url(url)} --experiment {name}`"
    stopped = next((e for e in reversed(result.events) if e.kind == "stopped"), None)
    if result.status == "failed" and stopped is not None:
        raise PBTError(f"experiment {name!r} {stopped.detail}. {see}")
    if all(m.status == "failed" for m in result.members):
        last = next((e.detail for e in reversed(result.failures) if e.detail), "unknown")
        raise PBTError(f"every member of {name!r} failed; the last error was: {last}. {see}")


def _connect(
    server: str | None,
    auth_key: str | None,
    url: str,
    name: str,
    train: TrainFn,
    target: str,
    executor: str,
    lease_seconds: float,
    *,
    ray_address: str | None = None,
    ray_resources: Mapping[str, float] | None = None,
    trial_timeout: float | None = None,
    max_outage: float | None = None,
    placement: tuple[int, float | None, Sequence[int | str] | str | None] = (1, None, None),
) -> tuple[ControllerAPI, Executor, Callable[[], None]]:
    """The controller a run talks to, the executor of its workers, and how to close them."""
    plan, ray_resources = _placement(executor, placement, ray_resources)
    # Ray is imported (or found missing) before anything is opened or created.
    ray_pool = (
        RayExecutor(
            server if server is not None else url,
            name,
            target,
            lease_seconds=lease_seconds,
            server=server is not None,
            auth_key=auth_key or os.environ.get("PBTKIT_AUTH_KEY") or None,
            address=ray_address,
            resources=ray_resources,
            trial_timeout=trial_timeout,
        )
        if executor == "ray"
        else None
    )
    if server is not None:
        from pbtkit.service.client import DEFAULT_MAX_OUTAGE, RemoteController

        outage = DEFAULT_MAX_OUTAGE if max_outage is None else max_outage
        remote = RemoteController(server, auth_key, max_outage=outage)
        if executor == "thread":
            threads = ThreadExecutor(remote, name, train, trial_timeout=trial_timeout)
            return remote, threads, remote.close
        if ray_pool is not None:
            return remote, ray_pool, remote.close
        key = auth_key or os.environ.get("PBTKIT_AUTH_KEY") or ""
        pool = ProcessExecutor(
            server,
            name,
            target,
            server=True,
            extra_env={"PBTKIT_AUTH_KEY": key},
            trial_timeout=trial_timeout,
            max_outage=outage,
            devices=plan,
        )
        return remote, pool, remote.close
    store = open_store(url)
    if executor != "thread" and not store.shared_between_processes:
        store.close()
        raise ConfigError(
            f"{display_url(url)} lives inside one process; workers in other processes cannot "
            "share it. Use executor='thread', or storage='sqlite:///pbt.db'"
        )
    controller = Controller(store, lease_seconds=lease_seconds)
    if executor == "thread":
        threads = ThreadExecutor(controller, name, train, trial_timeout=trial_timeout)
        return controller, threads, store.close
    if ray_pool is not None:
        return controller, ray_pool, store.close
    processes = ProcessExecutor(
        url, name, target, lease_seconds=lease_seconds, trial_timeout=trial_timeout, devices=plan
    )
    return controller, processes, store.close


def _placement(
    executor: str,
    placement: tuple[int, float | None, Sequence[int | str] | str | None],
    ray_resources: Mapping[str, float] | None,
) -> tuple[DevicePlan | None, Mapping[str, float] | None]:
    """The local workers' device plan, and Ray's resource bundle with its GPUs."""
    workers, gpus_per_worker, devices = placement
    if executor == "thread":
        if gpus_per_worker is not None or devices is not None:
            raise ConfigError(
                "executor='thread' runs every worker in this process, which sees all of its "
                "GPUs: gpus_per_worker and devices are settings of executor='process' or 'ray'"
            )
        return None, ray_resources
    if executor == "ray":
        if devices is not None:
            raise ConfigError(
                "with executor='ray' Ray chooses each actor's GPUs: give gpus_per_worker "
                "(or ray_resources={'GPU': ...}), not devices"
            )
        if gpus_per_worker is None:
            return None, ray_resources
        bundle: dict[str, float] = dict(ray_resources) if ray_resources is not None else {"CPU": 1}
        if "GPU" in bundle and bundle["GPU"] != gpus_per_worker:
            raise ConfigError(
                f"gpus_per_worker={gpus_per_worker!r} and ray_resources['GPU']="
                f"{bundle['GPU']!r} disagree: give one of them"
            )
        bundle["GPU"] = check_gpus_per_worker(gpus_per_worker)
        return None, bundle
    plan = plan_devices(max(workers, 1), gpus_per_worker, devices)
    log.info("pbtkit: %s", plan.describe())
    return plan, ray_resources


def drive(
    controller: ControllerAPI,
    name: str,
    pool: Executor,
    workers: int,
    display: ProgressDisplay,
    *,
    max_restarts: int | None = None,
    check: Callable[[], object] | None = None,
) -> None:
    """Run workers until the experiment is finished, replacing workers that die.

    A worker that exits with an error has its trial given back at once (counted as an
    attempt) and is replaced, up to ``max_restarts`` times in all. ``check`` runs once the
    workers are started (the run's own import of the training function); if it raises,
    the workers are stopped.
    """
    spec = controller.spec(name)
    restarts_left = (
        max_restarts if max_restarts is not None else workers + spec.population * spec.max_attempts
    )
    if controller.summary(name).status != "running":
        display.close()
        return
    pool.start(workers)
    next_summary = 0.0
    try:
        if check is not None:
            check()
        while True:
            exits = pool.reap()
            if any(gone.code == IMPORT_FAILED for gone in exits):
                raise PBTError(
                    f"the workers of {name!r} cannot import the training function (the "
                    "traceback is above); fix it and run again: finished trials are kept"
                )
            for gone in exits:
                if gone.code != 0:
                    controller.release_worker(
                        name, gone.worker_id, gone.reason, penalize=not gone.lost
                    )
            now = time.monotonic()
            if exits or now >= next_summary:
                summary = controller.summary(name)
                display.update(summary)
                next_summary = now + _SUMMARY_EVERY
                if summary.status != "running":
                    break
                missing = workers - pool.alive()
                if missing > 0:
                    if restarts_left < missing:
                        reasons = "; ".join(
                            g.reason.strip().splitlines()[-1] for g in exits if g.reason
                        )
                        raise PBTError(
                            f"workers of {name!r} keep dying ({reasons or 'no reason given'}); "
                            "gave up. Fix the cause and run again: finished trials are kept"
                        )
                    restarts_left -= missing
                    pool.start(missing)
            time.sleep(_POLL)
    finally:
        pool.stop()
        display.close()


def _tensorboard(
    setting: bool | str | os.PathLike[str],
    name: str,
    url: str,
    server: str | None,
    checkpoint_root: str,
) -> list[Logger]:
    """The TensorBoard logger of a run, if any (see ``tensorboard`` in :func:`run`)."""
    from pbtkit.loggers.tensorboard import from_setting

    local = server is None  # a server's storage and checkpoint root are not this machine's
    logger = from_setting(
        setting,
        name,
        storage_url=url if local else None,
        checkpoint_root=checkpoint_root if local else None,
    )
    return [] if logger is None else [logger]


def _trackers(loggers: Sequence[Logger | str | Mapping[str, Any]]) -> list[Logger]:
    """The loggers asked for, built before anything is opened (a missing package is
    reported before the run starts)."""
    if isinstance(loggers, str | Mapping) or not isinstance(loggers, Sequence):
        raise ConfigError(
            f"loggers must be a list, like ['mlflow'] or [MLflowLogger(...)], got {loggers!r}"
        )
    return [logger_from(spec) for spec in loggers]


def _explorer(explore: Explorer | Callable[..., Any] | None) -> Explorer:
    if explore is None:
        return Perturb()
    if isinstance(explore, Explorer):
        return explore
    if callable(explore):
        return CustomExplore(explore, target_of(explore))
    raise ConfigError(
        f"explore must be pk.Perturb(...), pk.Resample(...) or a function, got {explore!r}"
    )


def _warn_nonfinite(result: Result) -> None:
    """Say once, after the run, that members reported NaN or an infinity."""
    bad = [t for t in result.trials if t.status == "done" and not math.isfinite(t.score)]
    if not bad:
        return
    first = min(bad, key=lambda t: t.id)
    members = sorted({t.member for t in bad})
    log.warning(
        "%d trial(s) of member(s) %s ended with a %s that is not a finite number (the first: "
        "member %d, steps %d..%d). Such a member ranks last and is never a donor; it is "
        "replaced by the next exploit. A learning rate too high for it is the usual cause.",
        len(bad),
        ", ".join(map(str, members)),
        result.metric,
        first.member,
        first.start_step,
        first.end_step,
    )


def _seconds(name: str, value: Any, *, zero: bool) -> float | None:
    """A duration setting: None, or a finite number of seconds (> 0, or >= 0 with ``zero``)."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        bound = ">= 0" if zero else "> 0"
        raise ConfigError(f"{name} must be a number of seconds {bound} or None, got {value!r}")
    return float(value)


def _import_named_code(policy: PBT) -> None:
    """Import now the user's own functions a config names, so a typo fails the run at once
    rather than at the first exploit."""
    for part in (policy.explore, getattr(policy.explore, "fallback", None)):
        if isinstance(part, CustomExplore):
            part.resolve()


def _checkpoint_root(checkpoint_dir: str | Path | None, url: str, name: str) -> Path | str:
    if checkpoint_dir is not None:
        # An absolute path for a directory; an object store's URL (s3://...) as given.
        return open_checkpoints(checkpoint_dir, create=False).root
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///") :]).resolve().parent / "pbt-checkpoints"
    return Path.cwd() / "pbt-checkpoints"


def _kept(result: Result, checkpoints: CheckpointStore) -> set[str]:
    """What the run's final sweep keeps (the controller's own rule: ``final_keep``)."""
    # a local Path or an object store's URL: either way, back to its stored name
    latest = [checkpoints.relative(str(m.checkpoint)) for m in result.members if m.checkpoint]
    return final_keep(result.spec, result.trials, latest)
