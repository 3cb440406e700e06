"""The ``pbtkit`` command: run, status, demo, worker."""

from __future__ import annotations

import argparse
import math
import sys
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
        "ray_address",
    ):  # fmt: skip
        value = getattr(args, key)
        if value is not None:
            kwargs[key] = value
    kwargs.setdefault("name", args.target.rpartition(":")[2])
    load_target(args.target)  # fail here, with a clear message, if it cannot be imported
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
    with open_store(args.storage) as store:
        if args.experiment is None:
            with store.read() as tx:
                experiments = tx.list_experiments()
            table = Table("experiment", "status", "population", "metric", title=store.url)
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
            title=(
                f"{args.experiment}: {summary.status}, {summary.steps_done}/{summary.steps_total} "
                f"steps, {summary.exploits} exploits"
            ),
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from pbtkit.examples import demo

    return demo.main(directory=args.dir, quick=args.quick, progress=not args.no_progress and None)


def _cmd_worker(args: argparse.Namespace) -> int:
    from pbtkit._exceptions import ConfigError
    from pbtkit._target import load_target
    from pbtkit.controller import Controller, worker_identity
    from pbtkit.store import open_store
    from pbtkit.worker import run_worker

    target = args.target or args.target_option
    if not target:
        raise ConfigError("name the training function: pbtkit worker ... package.module:function")
    if bool(args.server) == bool(args.storage):
        raise ConfigError("give the worker either --server URL or --storage URL")
    train = load_target(target)
    worker_id = worker_identity(args.label)
    if args.server:
        from pbtkit.service.client import RemoteController

        with RemoteController(args.server, _auth_key(args)) as remote:
            run_worker(
                remote,
                args.experiment,
                train,
                worker_id,
                checkpoint_root=args.checkpoint_root,
                poll=0.25,
            )
        return 0
    if args.experiment is None:
        raise ConfigError("a worker on --storage needs --experiment NAME")
    with open_store(args.storage) as store:
        controller = Controller(store, lease_seconds=args.lease_seconds)
        run_worker(
            controller, args.experiment, train, worker_id, checkpoint_root=args.checkpoint_root
        )
    return 0


def _cmd_db(args: argparse.Namespace) -> int:
    from pbtkit.store import normalize_url
    from pbtkit.store._sql import SCHEMA_VERSION, schema_version, upgrade

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
    import os

    key = args.auth_key or os.environ.get("PBTKIT_AUTH_KEY")
    return key or None


def _cmd_serve(args: argparse.Namespace) -> int:
    from pbtkit.service.server import serve

    serve(
        args.storage,
        args.checkpoint_root,
        host=args.host,
        port=args.port,
        auth_key=_auth_key(args),
        lease_seconds=args.lease_seconds,
        log_level=args.log_level,
        allow_imports=args.allow_import,
    )
    return 0


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
    p.add_argument("--no-progress", action="store_true", help="do not show live progress")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("status", help="show the members of an experiment (or list experiments)")
    p.add_argument("--storage", "-s", default="sqlite:///pbt.db", help="storage URL")
    p.add_argument("--experiment", "-e", help="experiment name (omit to list them)")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pbtkit`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PBTError as exc:
        print(f"pbtkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pbtkit: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
