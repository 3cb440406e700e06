"""The commands that train: ``run``, ``worker``, ``demo``, ``replay``."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Any

from pbtkit.cli._common import add_device_options, auth_key, positive_seconds, seconds

__all__ = ["add_demo", "add_replay", "add_run", "add_worker"]


def _cmd_run(args: argparse.Namespace) -> int:
    from pbtkit._target import load_target
    from pbtkit.api import run
    from pbtkit.config import load_config, run_kwargs

    kwargs = run_kwargs(load_config(args.config))
    if args.ray_resources is not None:
        kwargs["ray_resources"] = _resources(args.ray_resources)
    for key in (
        "storage", "name", "workers", "population", "checkpoint_dir", "executor", "seed",
        "ray_address", "trial_timeout", "gpus_per_worker", "devices",
    ):  # fmt: skip
        value = getattr(args, key)
        if value is not None:
            kwargs[key] = value
    if args.logger:
        kwargs["loggers"] = [*kwargs.get("loggers", ()), *args.logger]
    kwargs.setdefault("name", args.target.rpartition(":")[2])
    if kwargs.get("executor", "process") != "process":
        load_target(args.target)  # fail here, with a clear message, if it cannot be imported
    # With worker processes, run() imports the target once they are started (the two
    # imports overlap) and refuses it there as load_target would.
    if kwargs.get("executor", "process") == "process" and kwargs.get("workers", 2) > 0:
        from pbtkit.devices import plan_devices

        plan = plan_devices(
            kwargs.get("workers", 2), kwargs.get("gpus_per_worker"), kwargs.get("devices")
        )
        print(f"pbtkit run: {plan.describe()}", file=sys.stderr, flush=True)
    result = run(args.target, progress=not args.no_progress and None, **kwargs)
    print(result.summary_text())
    return 0


def _resources(text: str) -> dict[str, float]:
    from pbtkit._exceptions import ConfigError

    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise ConfigError(
                f"--ray-resources wants NAME=NUMBER pairs like CPU=1,GPU=0.5, got {part!r}"
            )
    return out


def _cmd_worker(args: argparse.Namespace) -> int:
    from pbtkit._exceptions import ConfigError
    from pbtkit._target import load_target
    from pbtkit.controller import Controller, worker_identity
    from pbtkit.store import open_store
    from pbtkit.worker import IMPORT_FAILED, restart_process, run_worker

    target = args.target or args.target_option
    if not target:
        raise ConfigError("name the training function: pbtkit worker ... package.module:function")
    # The URLs may come from the environment (how `pbtkit run` passes them: a password in
    # argv would be shown by `ps` to every user of the machine).
    server = args.server or (None if args.storage else os.environ.get("PBTKIT_SERVER"))
    storage = args.storage or (None if server else os.environ.get("PBTKIT_STORAGE"))
    if bool(server) == bool(storage):
        raise ConfigError("give the worker either --server URL or --storage URL")
    from pbtkit.devices import apply_to_environ, single_worker_env

    # Before the training function is imported: CUDA reads the variable once, at its start.
    apply_to_environ(single_worker_env(args.worker_index, args.gpus_per_worker, args.devices))
    try:
        train = load_target(target)
    except ConfigError as exc:
        # Every worker would fail the same way: the run stops at once (on this exit
        # code), and only the first worker shows the traceback.
        if os.environ.get("PBTKIT_WORKER_INDEX", "0") == "0":
            cause = exc.__cause__
            if cause is not None:
                sys.stderr.write("".join(traceback.format_exception(cause)))
            print(f"pbtkit worker: error: {exc}", file=sys.stderr)
        return IMPORT_FAILED
    worker_id = worker_identity(args.label)
    timeouts: dict[str, Any] = {
        "trial_timeout": args.trial_timeout,
        "on_timeout": restart_process,
    }
    if server:
        from pbtkit._extras import need

        need("client", "pbtkit worker --server")
        from pbtkit.service.client import RemoteController

        with RemoteController(server, auth_key(args), max_outage=args.max_outage) as remote:
            run_worker(
                remote,
                args.experiment,
                train,
                worker_id,
                checkpoint_root=args.checkpoint_root,
                poll=0.25,
                **timeouts,
            )
        return 0
    if args.experiment is None or storage is None:
        raise ConfigError("a worker on --storage needs --experiment NAME")
    with open_store(storage) as store:
        controller = Controller(store, lease_seconds=args.lease_seconds)
        run_worker(
            controller,
            args.experiment,
            train,
            worker_id,
            checkpoint_root=args.checkpoint_root,
            **timeouts,
        )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pbtkit.examples import demo

    return demo.main(directory=args.dir, quick=args.quick, progress=not args.no_progress and None)


def _cmd_replay(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from pbtkit._exceptions import ConfigError
    from pbtkit.replay import load_schedule, replay, replay_schedule

    if args.schedule is not None:
        if args.experiment is not None or args.member is not None or args.trial is not None:
            raise ConfigError(
                "--schedule FILE replays a saved schedule: leave out --experiment, --member "
                "and --trial"
            )
        schedule = load_schedule(args.schedule)
    elif args.experiment is None:
        raise ConfigError("name the experiment with --experiment NAME, or give --schedule FILE")
    else:
        schedule = replay_schedule(
            args.storage, args.experiment, member=args.member, trial=args.trial
        )
    if args.train is None and (args.steps or args.checkpoint_dir or args.start_checkpoint):
        raise ConfigError("--steps, --checkpoint-dir and --start-checkpoint need --train")
    if args.train is not None and args.checkpoint_dir is None:
        raise ConfigError("--train needs --checkpoint-dir DIR, where the replay's checkpoints go")
    text = json.dumps(schedule.to_dict(), indent=2)
    if args.out is not None:
        Path(args.out).write_text(text + "\n")
        print(
            f"wrote the schedule ({len(schedule)} segments, steps {schedule.start_step}.."
            f"{schedule.end_step}) to {args.out}"
        )
    elif args.train is None:
        print(text)
    if args.train is None:
        return 0
    start, end = _replay_steps(args.steps)
    result = replay(
        args.train,
        schedule,
        checkpoint_dir=args.checkpoint_dir,
        start_step=start,
        end_step=end,
        start_checkpoint=args.start_checkpoint,
        keep_checkpoints=args.keep_checkpoints,
    )
    print(result.summary_text())
    return 0


def _replay_steps(text: str | None) -> tuple[int | None, int | None]:
    from pbtkit._exceptions import ConfigError

    if not text:
        return None, None
    first, sep, last = text.partition(":")
    try:
        if sep:
            return (int(first) if first.strip() else None), (int(last) if last.strip() else None)
    except ValueError:
        pass
    raise ConfigError(f"--steps wants A:B (A: or :B for open ends), got {text!r}")


def add_run(sub: Any) -> None:
    p = sub.add_parser("run", help="train a population with a training function and a config file")
    p.add_argument(
        "target", help="the training function, as package.module:function or file.py:function"
    )
    p.add_argument(
        "--config", "-c", required=True, help="TOML or YAML file with the space and policy"
    )
    p.add_argument("--storage", help="override the storage URL (sqlite:///pbt.db)")
    p.add_argument("--name", help="override the experiment name")
    p.add_argument("--workers", type=int, help="override the number of workers")
    p.add_argument("--population", type=int, help="override the population size")
    p.add_argument("--checkpoint-dir", dest="checkpoint_dir", help="override the checkpoint root")
    p.add_argument("--executor", choices=("process", "thread", "ray"), help="how workers run")
    p.add_argument("--ray-address", help="the Ray cluster to start workers on (default: local)")
    p.add_argument(
        "--ray-resources", metavar="CPU=1,GPU=0.5", help="each Ray worker's resource bundle"
    )
    p.add_argument("--seed", type=int, help="override the seed")
    p.add_argument(
        "--trial-timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help="override trial_timeout: stop and retry a trial whose function runs longer",
    )
    p.add_argument(
        "--logger",
        action="append",
        choices=("mlflow", "wandb", "tensorboard"),
        help="also log to this tracker with its defaults (repeatable; beside the config's)",
    )
    add_device_options(p)
    p.add_argument("--no-progress", action="store_true", help="do not show live progress")
    p.set_defaults(func=_cmd_run)


def add_worker(sub: Any) -> None:
    p = sub.add_parser(
        "worker", help="run trials: from a server (--server) or a database (--storage)"
    )
    p.add_argument("target", nargs="?", help="the training function, package.module:function")
    p.add_argument("--target", dest="target_option", help=argparse.SUPPRESS)
    p.add_argument("--server", help="URL of a `pbtkit serve` (http://host:port)")
    p.add_argument("--auth-key", help="the server's key (default: $PBTKIT_AUTH_KEY)")
    p.add_argument("--storage", help="storage URL, to work without a server")
    p.add_argument(
        "--experiment",
        help="only this experiment (required with --storage; with --server, "
        "serve every running experiment when omitted)",
    )
    p.add_argument(
        "--checkpoint-root", help="where this machine sees the checkpoint root, if elsewhere"
    )
    p.add_argument("--label", default="", help="a label added to the worker's id")
    p.add_argument("--lease-seconds", type=float, default=60.0, help="lease length")
    p.add_argument(
        "--trial-timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help="stop a trial whose function runs longer (it is retried; the worker restarts)",
    )
    p.add_argument(
        "--max-outage",
        type=seconds,
        default=600.0,
        metavar="SECONDS",
        help="with --server, how long to wait for an unreachable server (0: give up at once)",
    )
    add_device_options(p)
    p.add_argument(
        "--worker-index",
        type=int,
        help="this worker's index among the machine's workers: trial.worker, and which of "
        "--devices it takes",
    )
    p.set_defaults(func=_cmd_worker)


def add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the toy problem of the PBT paper and the digits example")
    p.add_argument("--dir", default="pbt-demo", help="where the demo's database and checkpoints go")
    p.add_argument("--quick", action="store_true", help="a smaller, faster demo")
    p.add_argument("--no-progress", action="store_true", help="do not show live progress")
    p.set_defaults(func=_cmd_demo)


def add_replay(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="write the hyperparameter schedule of a lineage as JSON, and train along it",
    )
    p.add_argument("--storage", "-s", default="sqlite:///pbt.db", help="storage URL")
    p.add_argument("--experiment", "-e", help="experiment name")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--member", type=int, help="this member's lineage (default: the best)")
    which.add_argument("--trial", type=int, help="this finished trial's lineage")
    p.add_argument("--schedule", help="replay a schedule saved with --out instead of the store's")
    p.add_argument("--out", "-o", help="write the schedule here (default: stdout)")
    p.add_argument("--train", metavar="TARGET", help="train along it: package.module:function")
    p.add_argument("--checkpoint-dir", help="where the replay's checkpoints go (with --train)")
    p.add_argument("--steps", metavar="A:B", help="replay only steps A..B-1 (with --train)")
    p.add_argument("--start-checkpoint", help="a checkpoint with the weights at step A")
    p.add_argument(
        "--keep-checkpoints", action="store_true", help="keep each trial's checkpoint, not one"
    )
    p.set_defaults(func=_cmd_replay)
