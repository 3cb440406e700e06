"""The commands that look at a run: ``status``, ``plot``, ``export``, ``best``, ``dashboard``."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from pbtkit.cli._common import auth_key, positive_seconds, short

__all__ = ["add_status", "add_viewing"]


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
            hp = ", ".join(f"{k}={short(v)}" for k, v in m.hparams.items())
            table.add_row(str(m.member), m.status, str(m.step), short(m.score), hp, now)
        console.print(table)
    return 0


def _steps(summary: Any) -> str:
    from pbtkit.progress import steps_text

    return steps_text(summary)


def _watch(controller: Any, name: str, interval: float) -> int:
    """Print a line whenever the experiment moves on, until it ends (``status --watch``)."""
    import time

    last = None
    while True:
        summary = controller.summary(name)
        best = (
            "-"
            if summary.best_member is None
            else (f"{short(summary.best_score)} (member {summary.best_member})")
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
    hp = ", ".join(f"{k}={short(v)}" for k, v in best.hparams.items())
    print(f"best member of {name!r}: member {best.member} ({best.status})")
    print(f"  {result.metric} = {short(best.score)} at step {best.step}")
    print(f"  hyperparameters: {hp}")
    print(f"  checkpoint: {best.checkpoint}")
    print("  schedule (from step: values):")
    for step, values in schedule.changes():
        print(f"    {step:>6}: " + ", ".join(f"{k}={short(v)}" for k, v in values.items()))
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from pbtkit._extras import need

    need("dashboard", "pbtkit dashboard")
    from pbtkit.service.dashboard import serve_dashboard

    serve_dashboard(
        args.storage,
        host=args.host,
        port=args.port,
        auth_key=auth_key(args),
        log_level=args.log_level,
        announce=lambda url: print(f"pbtkit dashboard on {url}", flush=True),
    )
    return 0


def add_status(sub: Any) -> None:
    p = sub.add_parser("status", help="show the members of an experiment (or list experiments)")
    p.add_argument("--storage", "-s", default="sqlite:///pbt.db", help="storage URL")
    p.add_argument("--experiment", "-e", help="experiment name (omit to list them)")
    p.add_argument(
        "--watch",
        action="store_true",
        help="with --experiment: print a line each time it moves on, until it ends",
    )
    p.add_argument(
        "--interval", type=positive_seconds, default=2.0, help="seconds between looks (--watch)"
    )
    p.set_defaults(func=_cmd_status)


def add_viewing(sub: Any) -> None:
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
