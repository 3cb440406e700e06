"""What the tests share: finding a free port, running the pbtkit command, waiting for a
server, and the runs several test packages look at (a finished toy run, a gated run)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

import pbtkit as pk

ROOT = Path(__file__).resolve().parent.parent
#: The toy run of ``toy_run``: its population and its steps per member.
POPULATION = 4
TOTAL_STEPS = 30


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pbtkit_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pbtkit ARGS`` as a user would, in ``cwd``, with this checkout's code."""
    base = {"PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "pbtkit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
        check=False,
    )


def wait_until_serving(
    url: str, process: subprocess.Popen[str] | subprocess.Popen[bytes], name: str
) -> None:
    """Return once ``url/health`` answers 200; fail if ``process`` exits or 30 s pass."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, f"{name} exited"
        assert time.monotonic() < deadline, f"{name} did not start"
        time.sleep(0.05)


@dataclass(frozen=True)
class Run:
    """A finished run: its folder, storage URL, name and result."""

    directory: Path
    storage: str
    name: str
    result: pk.Result

    @property
    def tensorboard(self) -> Path:
        return self.directory / "tensorboard" / self.name


class GatedRun:
    """A run in a background thread whose trials each wait until the test lets one through.

    So a test can look at a run before any trial, after the first generation, and at its
    end, without waiting on time. ``release(n)`` lets ``n`` more trials train; ``finish()``
    lets everything through and returns the result.
    """

    POPULATION = 4
    GENERATIONS = 3

    def __init__(self, storage: str, checkpoints: Path, **settings: Any) -> None:
        self._tokens = threading.Semaphore(0)
        self._outcome: list[BaseException | pk.Result] = []
        kwargs: dict[str, Any] = {
            "space": {"x": pk.Uniform(0.1, 1.0)},
            "metric": "score",
            "population": self.POPULATION,
            "workers": 2,
            "ready_every": 5,
            "total_steps": 5 * self.GENERATIONS,
            "evolution": "generational",
            "exploit": pk.Truncation(0.25),
            "executor": "thread",
            "storage": storage,
            "checkpoint_dir": checkpoints,
            "name": "live",
            "progress": False,
            **settings,
        }
        self._thread = threading.Thread(target=self._run, args=(kwargs,), daemon=True)
        self._thread.start()

    def _run(self, kwargs: dict[str, Any]) -> None:
        try:
            self._outcome.append(pk.run(self._train, **kwargs))
        except BaseException as exc:
            self._outcome.append(exc)

    def _train(self, trial: pk.Trial) -> None:
        """Climbs like tests.trainers.climb, once let through."""
        if not self._tokens.acquire(timeout=120):
            raise RuntimeError("the test never let this trial through")
        value = 0.0
        if trial.parent_checkpoint is not None:
            value = json.loads((trial.parent_checkpoint / "state.json").read_text())["value"]
        for step in trial.steps():
            value += trial.hparams["x"]
            trial.report(step, score=value)
        (trial.checkpoint_dir / "state.json").write_text(json.dumps({"value": value}))

    def release(self, trials: int) -> None:
        for _ in range(trials):
            self._tokens.release()

    def finish(self) -> pk.Result:
        self.release(self.POPULATION * self.GENERATIONS)
        self._thread.join(120)
        assert self._outcome, "the run did not end"
        outcome = self._outcome[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome
