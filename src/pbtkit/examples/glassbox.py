"""The glass-box pattern: your own training loops, in your own processes, ask a PBT server.

In the black-box API pbtkit runs the loop and calls your training function. In the glass-box
API the loop is yours and pbtkit only answers questions: a :class:`~pbtkit.service.PBTServer`
keeps the population and decides, and every training process joins it as one member with a
:class:`~pbtkit.service.PBTClient`::

    client = PBTClient(url, port, key, "pbt.yaml")       # joins as the next free member
    hp = client.hyperparameters()
    while not client.done:
        train_one_epoch(model, hp)
        client.save(write_checkpoint(model), validation_accuracy(model))
        if client.should_exploit():                      # the server ranked us low
            model = read_checkpoint(client.parameters_path())   # the donor's weights
            hp = client.explore()                        # its hyperparameters, perturbed

This module does that with the digits MLP of :mod:`pbtkit.examples.digits` (one epoch per
save, validation accuracy as the metric, weights and momentum buffers in an ``.npz`` loaded
with ``allow_pickle=False``). ``demo`` (the default) writes the config, starts a server with
an auth key and a SQLite store, launches four client processes, and prints what each did
and the best member the server recorded; ``client`` is one of those processes::

    python -m pbtkit.examples.glassbox demo --epochs 8 --dir glassbox-demo
    PBTKIT_AUTH_KEY=... python -m pbtkit.examples.glassbox client --url http://127.0.0.1 \\
        --port 8765 --key-env PBTKIT_AUTH_KEY --config pbt.yaml --checkpoint-dir ckpt/run

Checkpoints must lie inside the server's checkpoint root: the server refuses any other path.
Every save writes a new file (member and epoch in its name) because another member may be
loading the previous one as its donor at that moment. The key travels through the
environment, never the command line, where other users of the machine could read it.

Needs scikit-learn for the data: ``pip install 'pbtkit[examples,service]'``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from pbtkit.examples import digits

if TYPE_CHECKING:
    from pbtkit.controller import ControllerAPI

__all__ = ["NAME", "POPULATION", "client_loop", "main", "write_config"]

NAME = "glassbox-digits"
POPULATION = 4
_KEY_ENV = "PBTKIT_AUTH_KEY"
_COMMANDS = ("demo", "client")


def write_config(path: str | Path, *, epochs: int, name: str = NAME) -> Path:
    """Write the glass-box config of the digits example (YAML) and return its path.

    Args:
        path: The file to write; it should end in ``.yaml``.
        epochs: Epochs per member (``total_steps``; one save per epoch).
        name: The experiment's name.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    config = {
        "name": name,
        "population": POPULATION,
        "metric": "accuracy",
        "mode": "max",
        "ready_every": 1,
        "total_steps": epochs,
        "space": {
            "lr": {"type": "loguniform", "low": 1e-4, "high": 1.0},
            "momentum": {"type": "uniform", "low": 0.0, "high": 0.99},
            "l2": {"type": "loguniform", "low": 1e-6, "high": 0.1},
        },
        "exploit": {"type": "truncation", "fraction": 0.25},
    }
    path = Path(path)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _load_weights(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as saved:
        return {k: saved[k] for k in saved.files}


def _floats(hparams: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in hparams.items()}


def client_loop(
    url: str,
    port: int,
    key: str,
    config_path: str,
    checkpoint_dir: str,
    max_epochs: int | None = None,
) -> dict[str, Any]:
    """Join the server as one member and train the digits MLP until it is done.

    Args:
        url: The server's URL without port, e.g. ``http://127.0.0.1``.
        port: The server's port.
        key: The server's auth key.
        config_path: The glass-box config (see :func:`write_config`).
        checkpoint_dir: Where to write checkpoints; must lie inside the server's checkpoint
            root. Created if missing.
        max_epochs: A guard: stop after this many epochs even if the server has not said
            done (None: train until it does). A member's own epoch count is not its
            step: after copying a donor that was ahead it needs fewer, after one that was
            behind more, so the server is the one to say when it is done.

    Returns:
        ``{"member", "epochs", "accuracy", "exploits", "hparams"}``: the member this
        client was, the epochs it trained, its last validation accuracy, how many times it
        loaded a donor's checkpoint, and its final hyperparameters.

    Raises:
        ConfigError: The config is invalid or the population is already full.
        CheckpointError: ``checkpoint_dir`` lies outside the server's checkpoint root.
        ServiceError: The server refused the key.
    """
    from pbtkit.service import PBTClient

    x_train, y_train, x_val, y_val, _, _ = digits.load_data()
    directory = Path(checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    accuracy = math.nan
    exploits = 0
    trained = 0
    with PBTClient(url, port, key, config_path) as client:
        member = client.member
        params = digits.init_params(np.random.default_rng(member))
        hp = _floats(client.hyperparameters())
        while not client.done and (max_epochs is None or trained < max_epochs):
            rng = np.random.default_rng([member, trained])
            digits.epoch(params, x_train, y_train, hp, rng)
            trained += 1
            accuracy = digits.accuracy(params, x_val, y_val)
            # A new file per save: a member exploiting this one may be reading the last.
            path = directory / f"member-{member}-epoch-{trained:04d}.npz"
            arrays: dict[str, Any] = params  # savez's own keyword would mistype the arrays
            np.savez(path, **arrays)
            client.save(path, accuracy)
            if client.should_exploit():
                donor_path = client.parameters_path()
                if donor_path is None:  # pragma: no cover - the server always names one
                    continue
                params = _load_weights(donor_path)
                hp = _floats(client.explore())
                exploits += 1
    return {
        "member": member,
        "epochs": trained,
        "accuracy": accuracy,
        "exploits": exploits,
        "hparams": hp,
    }


def _report(controller: ControllerAPI) -> None:
    from pbtkit.result import Result

    result = Result(controller, NAME)
    best = result.best
    shown = ", ".join(f"{k}={v:.4g}" for k, v in best.hparams.items())
    print(
        f"best member: {best.member}, validation accuracy "
        f"{best.metrics.get('accuracy', math.nan):.3f} after {best.step} epochs "
        f"({len(result.exploits)} exploits in the population)"
    )
    print(f"  final hyperparameters: {shown}")
    print("hyperparameter schedule of the best member (epoch: values):")
    for step, values in result.schedule().changes():
        print(f"  {step:>4}: " + ", ".join(f"{k}={v:.4g}" for k, v in values.items()))


def _run_clients(url: str, port: int, key: str, options: list[str], timeout: float) -> bool:
    """Launch the client processes, print their summaries; whether all of them succeeded."""
    command = [
        sys.executable, "-m", "pbtkit.examples.glassbox", "client",
        "--url", url, "--port", str(port), "--key-env", _KEY_ENV, *options,
    ]  # fmt: skip
    env = {**os.environ, _KEY_ENV: key}
    with tempfile.TemporaryDirectory(prefix="pbtkit-clients-") as scratch:
        outputs = [Path(scratch) / f"client-{i}.json" for i in range(POPULATION)]
        clients = [
            subprocess.Popen(command, env=env, stdout=out.open("w"), text=True) for out in outputs
        ]
        deadline = time.monotonic() + timeout
        try:
            # Watch them all at once: one that fails stops the example at once, instead
            # of its siblings training on (or waiting for it) until the timeout.
            while any(p.poll() is None for p in clients):
                failed = [p for p in clients if p.returncode not in (None, 0)]
                if failed:
                    print(
                        f"a client exited with code {failed[0].returncode} (its error is "
                        "above); stopping the others",
                        file=sys.stderr,
                    )
                    return False
                if time.monotonic() > deadline:
                    print(f"the clients did not finish in {timeout:g} s", file=sys.stderr)
                    return False
                time.sleep(0.1)
        finally:
            for process in clients:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        if any(p.returncode != 0 for p in clients):
            print("a client failed (its error is above)", file=sys.stderr)
            return False
        for out in outputs:
            summary = json.loads(out.read_text().strip().splitlines()[-1])
            print(
                f"client of member {summary['member']}: {summary['epochs']} epochs, "
                f"validation accuracy {summary['accuracy']:.3f}, "
                f"{summary['exploits']} exploits"
            )
    return True


def _demo(directory: Path, epochs: int, timeout: float, *, kept: bool) -> int:
    from pbtkit._exceptions import ConfigError
    from pbtkit.service import PBTServer, RemoteController

    directory.mkdir(parents=True, exist_ok=True)
    checkpoint_root = directory / "checkpoints"
    storage = directory / "pbt.db"
    key = secrets.token_urlsafe(24)
    with (
        PBTServer(
            0, key, storage=f"sqlite:///{storage}", checkpoint_root=checkpoint_root
        ) as server,
        RemoteController(server.url, key) as remote,
    ):
        print(f"PBT server on {server.url}, state in {storage}")
        stored = {e.name: e for e in remote.experiments()}.get(NAME)
        if stored is not None and remote.spec(NAME).policy.total_steps != epochs:
            raise ConfigError(
                f"{storage} holds {NAME} with {remote.spec(NAME).policy.total_steps} epochs "
                f"per member, not {epochs}; pass that --epochs, or another --dir"
            )
        if stored is not None and stored.status == "finished":
            print(f"{NAME} already finished in {directory}; its stored result:")
        else:
            config = write_config(directory / "pbt.yaml", epochs=epochs)
            options = [
                "--config", str(config), "--checkpoint-dir", str(checkpoint_root / NAME),
            ]  # fmt: skip
            if not _run_clients(f"http://{server.host}", server.port, key, options, timeout):
                return 1
        _report(remote)
    if kept:
        print(f"inspect it with: pbtkit status --storage {storage} --experiment {NAME}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pbtkit.examples.glassbox",
        description="Glass-box PBT: four client processes train the digits MLP in their own "
        "loops and ask a PBT server when to exploit.",
    )
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="start a server and four clients (the default)")
    demo.add_argument(
        "--dir", help="where the config, database and checkpoints go (default: a temp dir)"
    )
    demo.add_argument("--epochs", type=int, default=8, help="epochs per member")
    demo.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for each client"
    )
    client = sub.add_parser("client", help="join a server as one member and train")
    client.add_argument("--url", required=True, help="the server's URL without port")
    client.add_argument("--port", type=int, required=True, help="the server's port")
    client.add_argument(
        "--key-env",
        default=_KEY_ENV,
        help="the environment variable holding the server's key (never pass keys in argv)",
    )
    client.add_argument("--config", required=True, help="the glass-box config file")
    client.add_argument(
        "--checkpoint-dir", required=True, help="where to save, inside the server's root"
    )
    client.add_argument(
        "--max-epochs", type=int, help="stop after this many epochs even if not done (a guard)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``demo`` (the default) or ``client``; returns the exit code."""
    from pbtkit._exceptions import PBTError

    given = list(sys.argv[1:] if argv is None else argv)
    if not given or given[0] not in (*_COMMANDS, "-h", "--help"):
        given.insert(0, "demo")
    args = _parser().parse_args(given)
    try:
        if args.command == "client":
            key = os.environ.get(args.key_env, "")
            summary = client_loop(
                args.url, args.port, key, args.config, args.checkpoint_dir, args.max_epochs
            )
            print(json.dumps(summary))
            return 0
        if args.dir is not None:
            return _demo(Path(args.dir), args.epochs, args.timeout, kept=True)
        with tempfile.TemporaryDirectory(prefix="pbtkit-glassbox-") as tmp:
            return _demo(Path(tmp), args.epochs, args.timeout, kept=False)
    except PBTError as exc:
        print(f"glassbox: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
