"""The ``pbtkit`` command: run, status, demo, worker, serve, db; plot, export, best, dashboard."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from pbtkit._exceptions import PBTError
from pbtkit._version import __version__

__all__ = ["main"]


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
    load_target(args.target)  # fail here, with a clear message, if it cannot be imported
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


def _cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from pbtkit.controller import Controller
    from pbtkit.store import open_store

    console = Console()
    if args.watch and args.experiment is None:
        from pbtkit._exceptions import ConfigError

        raise ConfigError("--watch follows one experiment: give --experiment NAME")
    with open_store(args.storage, create=False) as store:
        if args.experiment is None:
            with store.read() as tx:
                experiments = tx.list_experiments()
            table = Table("experiment", "status", "population", "metric", title=store.display_url)
            for e in experiments:
                policy = e.config.get("policy", {})
                objective = policy.get("objective", {})
                table.add_row(
                    e.name,
                    e.status,
                    str(e.config.get("population")),
                    f"{objective.get('metric')} ({objective.get('mode')})",
                )
            console.print(table)
            return 0
        controller = Controller(store)
        if args.watch:
            return _watch(controller, args.experiment, args.interval)
        summary = controller.summary(args.experiment)
        spec = controller.spec(args.experiment)
        experiment = controller.experiment(args.experiment)
        with store.read() as tx:
            members = tx.members(experiment.id)
            running = {t.member: t for t in tx.trials(experiment.id, statuses=("running",))}
            failures = {
                e.member: e.detail
                for e in tx.events(experiment.id)
                if e.kind in ("retry", "failed")
            }
        table = Table(
            "member", "status", "step", spec.metric, "hyperparameters", "now",
            title=f"{args.experiment}: {summary.status}, {_steps(summary)}, "
            f"{summary.exploits} exploits",
        )  # fmt: skip
        for m in members:
            now = "best" if m.member == summary.best_member else ""
            if m.member in running:
                t = running[m.member]
                now = f"training {t.start_step}..{t.end_step} (attempt {t.attempt})"
            elif m.status == "failed":
                now = str(failures.get(m.member, ""))[:80]
            hp = ", ".join(f"{k}={_short(v)}" for k, v in m.hparams.items())
            table.add_row(str(m.member), m.status, str(m.step), _short(m.score), hp, now)
        console.print(table)
    return 0


def _steps(summary: Any) -> str:
    """``120/800 steps``, or ``120 steps (open-ended)`` for a run without a step budget."""
    from pbtkit.core.policy import MAX_STEPS

    if summary.steps_total >= summary.population * MAX_STEPS:
        return f"{summary.steps_done} steps (open-ended)"
    return f"{summary.steps_done}/{summary.steps_total} steps"


def _watch(controller: Any, name: str, interval: float) -> int:
    """Print a line whenever the experiment moves on, until it ends (``status --watch``)."""
    import time

    last = None
    while True:
        summary = controller.summary(name)
        best = (
            "-"
            if summary.best_member is None
            else (f"{_short(summary.best_score)} (member {summary.best_member})")
        )
        line = (
            f"{name}: {summary.status}, {_steps(summary)}, best {best}, {summary.exploits} "
            f"exploits, {summary.trials_running} training, {summary.members_failed} failed"
        )
        if line != last:
            print(line, flush=True)
            last = line
        if summary.status != "running":
            return 0 if summary.status == "finished" else 1
        time.sleep(interval)


def _cmd_demo(args: argparse.Namespace) -> int:
    from pbtkit.examples import demo

    return demo.main(directory=args.dir, quick=args.quick, progress=not args.no_progress and None)


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

        with RemoteController(server, _auth_key(args), max_outage=args.max_outage) as remote:
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


def _cmd_db(args: argparse.Namespace) -> int:
    from pbtkit.store import normalize_url
    from pbtkit.store._schema import SCHEMA_VERSION, schema_version, upgrade

    url = normalize_url(args.storage)
    if args.action == "version":
        print(f"schema version {schema_version(url)} (this pbtkit uses {SCHEMA_VERSION})")
        return 0
    before, after = upgrade(url)
    if before == after:
        print(f"schema version {after}: already up to date")
    else:
        print(f"upgraded the schema from version {before} to {after}; the data is kept")
    return 0


def _auth_key(args: argparse.Namespace) -> str | None:
    key = args.auth_key or os.environ.get("PBTKIT_AUTH_KEY")
    return key or None


def _cmd_serve(args: argparse.Namespace) -> int:
    from pbtkit._extras import need

    need("service", "pbtkit serve")
    from pbtkit.service.server import serve

    def announce(url: str) -> None:
        print(
            f"pbtkit serve: API at {url}/v1, dashboard at {url}/dashboard "
            "(the same key signs you in)",
            file=sys.stderr,
            flush=True,
        )

    serve(
        args.storage,
        args.checkpoint_root,
        host=args.host,
        port=args.port,
        auth_key=_auth_key(args),
        lease_seconds=args.lease_seconds,
        log_level=args.log_level,
        allow_imports=args.allow_import,
        announce=announce,
    )
    return 0


# looking at a run: plot, export, best, dashboard ---------------------------------------
def _open_experiment(args: argparse.Namespace) -> tuple[Any, str]:
    """The controller of an existing store (nothing is created) and the experiment to
    show: the one named, or the only one there is."""
    from pbtkit._exceptions import ConfigError
    from pbtkit.controller import Controller
    from pbtkit.store import display_url, open_store

    controller = Controller(open_store(args.storage, create=False))
    if args.experiment is not None:
        return controller, args.experiment
    names = [e.name for e in controller.experiments()]
    if len(names) == 1:
        return controller, names[0]
    controller.store.close()
    raise ConfigError(
        f"name the experiment with --experiment; {display_url(args.storage)} holds "
        + (", ".join(repr(n) for n in names) if names else "none")
    )


def _cmd_plot(args: argparse.Namespace) -> int:
    from pbtkit._exceptions import ConfigError
    from pbtkit._extras import need
    from pbtkit.viz import RunView, plot

    need("plot", "pbtkit plot")
    paths: tuple[str, str] | None = None
    if args.paths is not None:
        parts = [p.strip() for p in args.paths.split(",")]
        if len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"--paths wants two metric names like theta0,theta1, got {args.paths!r}"
            )
        paths = (parts[0], parts[1])
    objective = None
    if args.contours is not None:
        from pbtkit._target import load_target

        if paths is None:
            raise ConfigError("--contours draws under the paths: give --paths X,Y too")
        objective = load_target(args.contours)
    controller, name = _open_experiment(args)
    try:
        view = RunView.load(controller, name)
        formats = args.format or ["png", "svg"]
        written = plot(
            view, args.out, formats=formats, metric=args.metric, paths=paths, objective=objective
        )
    finally:
        controller.store.close()
    for path in written:
        print(path)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import json

    from pbtkit._exceptions import ConfigError
    from pbtkit.export import to_json, write_csv, write_parquet

    if args.format in ("csv", "parquet") and args.out is None:
        raise ConfigError(
            f"{args.format} export writes trials.{args.format}, reports.{args.format} and "
            f"events.{args.format}: give --out FOLDER"
        )
    controller, name = _open_experiment(args)
    try:
        if args.format in ("csv", "parquet"):
            write = write_csv if args.format == "csv" else write_parquet
            for path in write(controller, name, args.out):
                print(path)
            return 0
        text = json.dumps(to_json(controller, name), indent=1, allow_nan=False) + "\n"
    finally:
        controller.store.close()
    if args.out is None:
        sys.stdout.write(text)
    else:
        from pathlib import Path

        Path(args.out).write_text(text, encoding="utf-8")
        print(args.out)
    return 0


def _cmd_best(args: argparse.Namespace) -> int:
    import json

    from pbtkit.result import Result

    controller, name = _open_experiment(args)
    try:
        result = Result(controller, name)
        best = result.best
        schedule = result.schedule(best.member)
    finally:
        controller.store.close()
    if args.json:
        out = {
            "experiment": name,
            "member": best.member,
            "metric": result.metric,
            "score": best.score if math.isfinite(best.score) else None,
            "step": best.step,
            "hparams": dict(best.hparams),
            "metrics": {k: v if math.isfinite(v) else str(v) for k, v in best.metrics.items()},
            "checkpoint": None if best.checkpoint is None else str(best.checkpoint),
            "schedule": schedule.to_dict(),
        }
        print(json.dumps(out, indent=1))
        return 0
    hp = ", ".join(f"{k}={_short(v)}" for k, v in best.hparams.items())
    print(f"best member of {name!r}: member {best.member} ({best.status})")
    print(f"  {result.metric} = {_short(best.score)} at step {best.step}")
    print(f"  hyperparameters: {hp}")
    print(f"  checkpoint: {best.checkpoint}")
    print("  schedule (from step: values):")
    for step, values in schedule.changes():
        print(f"    {step:>6}: " + ", ".join(f"{k}={_short(v)}" for k, v in values.items()))
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from pbtkit._extras import need

    need("dashboard", "pbtkit dashboard")
    from pbtkit.service.dashboard import serve_dashboard

    serve_dashboard(
        args.storage,
        host=args.host,
        port=args.port,
        auth_key=_auth_key(args),
        log_level=args.log_level,
        announce=lambda url: print(f"pbtkit dashboard on {url}", flush=True),
    )
    return 0


def _add_viewing_commands(sub: Any) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--storage", "-s", default="sqlite:///pbt.db", help="storage URL")
        p.add_argument(
            "--experiment", "-e", help="experiment name (may be left out when there is one)"
        )

    p = sub.add_parser("plot", help="plot a run: curves, schedules, family tree (PNG and SVG)")
    common(p)
    p.add_argument("--out", "-o", default="pbt-plots", help="folder for the images")
    p.add_argument(
        "--format",
        action="append",
        choices=("png", "svg", "pdf"),
        help="image format; repeatable (default: png and svg)",
    )
    p.add_argument("--metric", help="the metric of the curves (default: the objective)")
    p.add_argument(
        "--paths",
        metavar="X,Y",
        help="also plot each member's path through two reported metrics (theta0,theta1)",
    )
    p.add_argument(
        "--contours",
        metavar="MODULE:FUNCTION",
        help="f(x, y) -> objective on numpy arrays, for the contours under --paths "
        "(default: a quadratic fit of the reported objective)",
    )
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser(
        "export", help="write a run's trials, reports and events (CSV, Parquet or JSON)"
    )
    common(p)
    p.add_argument("--format", "-f", choices=("csv", "parquet", "json"), default="json")
    p.add_argument(
        "--out",
        "-o",
        help="a folder for CSV and Parquet (three tables); a file for JSON "
        "(default: standard output)",
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "best", help="the best member: its score, hyperparameters, checkpoint and schedule"
    )
    common(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_best)

    p = sub.add_parser(
        "dashboard", help="serve the live dashboard of a store, read-only (pbtkit serve has it too)"
    )
    p.add_argument("--storage", "-s", default="sqlite:///pbt.db", help="storage URL")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8766, help="port to listen on")
    p.add_argument("--auth-key", help="the key a browser must give (default: $PBTKIT_AUTH_KEY)")
    p.add_argument("--log-level", default="warning", help="uvicorn's log level")
    p.set_defaults(func=_cmd_dashboard)


# replay ----------------------------------------------------------------------------------
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


def _add_replay_command(sub: Any) -> None:
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


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"wants a number of seconds >= 0, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("wants a number of seconds > 0")
    return value


def _add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        metavar="G",
        help="GPUs per worker: 1, 0.5 (two workers share one), 2, or 0 for the CPU "
        "(default: one each when there are enough, else an equal share; none without GPUs)",
    )
    p.add_argument(
        "--devices",
        metavar="0,1",
        help="the GPUs to share (default: $CUDA_VISIBLE_DEVICES, else those nvidia-smi lists)",
    )


def _short(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbtkit", description="Population Based Training: run, inspect and serve populations."
    )
    parser.add_argument("--version", action="version", version=f"pbtkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

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
        type=_positive_seconds,
        metavar="SECONDS",
        help="override trial_timeout: stop and retry a trial whose function runs longer",
    )
    p.add_argument(
        "--logger",
        action="append",
        choices=("mlflow", "wandb", "tensorboard"),
        help="also log to this tracker with its defaults (repeatable; beside the config's)",
    )
    _add_device_options(p)
    p.add_argument("--no-progress", action="store_true", help="do not show live progress")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("status", help="show the members of an experiment (or list experiments)")
    p.add_argument("--storage", "-s", default="sqlite:///pbt.db", help="storage URL")
    p.add_argument("--experiment", "-e", help="experiment name (omit to list them)")
    p.add_argument(
        "--watch",
        action="store_true",
        help="with --experiment: print a line each time it moves on, until it ends",
    )
    p.add_argument(
        "--interval", type=_positive_seconds, default=2.0, help="seconds between looks (--watch)"
    )
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("demo", help="run the toy problem of the PBT paper and the digits example")
    p.add_argument("--dir", default="pbt-demo", help="where the demo's database and checkpoints go")
    p.add_argument("--quick", action="store_true", help="a smaller, faster demo")
    p.add_argument("--no-progress", action="store_true", help="do not show live progress")
    p.set_defaults(func=_cmd_demo)

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
        type=_positive_seconds,
        metavar="SECONDS",
        help="stop a trial whose function runs longer (it is retried; the worker restarts)",
    )
    p.add_argument(
        "--max-outage",
        type=_seconds,
        default=600.0,
        metavar="SECONDS",
        help="with --server, how long to wait for an unreachable server (0: give up at once)",
    )
    _add_device_options(p)
    p.add_argument(
        "--worker-index",
        type=int,
        help="this worker's index among the machine's workers: trial.worker, and which of "
        "--devices it takes",
    )
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("db", help="the database schema: show its version, or upgrade it")
    p.add_argument("action", choices=("upgrade", "version"))
    p.add_argument("--storage", "-s", required=True, help="storage URL")
    p.set_defaults(func=_cmd_db)

    p = sub.add_parser("serve", help="serve the controller over HTTP for workers and clients")
    p.add_argument("--storage", "-s", default="sqlite:///pbt.db", help="storage URL")
    p.add_argument(
        "--checkpoint-root", default="pbt-checkpoints", help="clients' checkpoints must lie here"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8765, help="port to listen on")
    p.add_argument("--auth-key", help="the key clients must send (default: $PBTKIT_AUTH_KEY)")
    p.add_argument("--lease-seconds", type=float, default=60.0, help="lease length")
    p.add_argument("--log-level", default="warning", help="uvicorn's log level")
    p.add_argument(
        "--allow-import",
        action="append",
        default=[],
        metavar="PACKAGE",
        help="let clients name functions of this package (custom explore); repeatable",
    )
    p.set_defaults(func=_cmd_serve)
    _add_viewing_commands(sub)
    _add_replay_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pbtkit`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    # pbtkit's own warnings (a server that went away, and came back) as plain lines.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("pbtkit: %(message)s"))
    logging.getLogger("pbtkit").addHandler(handler)
    try:
        return int(args.func(args))
    except PBTError as exc:
        print(f"pbtkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pbtkit: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
