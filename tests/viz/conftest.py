"""Fixtures of the viz tests: one finished run of the PBT paper's toy, a real browser."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import pbtkit as pk
from pbtkit.examples import toy

POPULATION = 4
TOTAL_STEPS = 30


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


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The toy of the PBT paper, 4 members x 30 steps, on SQLite, with TensorBoard."""
    directory = tmp_path_factory.mktemp("toy")
    result = toy.main(
        directory,
        progress=False,
        population=POPULATION,
        total_steps=TOTAL_STEPS,
        executor="thread",
        name="toy",
        tensorboard=True,
    )
    return Run(directory, f"sqlite:///{directory / 'pbt.db'}", "toy", result)


def _browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        message = (
            "the browser tests need Debian's Chromium and its driver: "
            "apt-get install chromium chromium-driver (as .ci/run does)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return chromium, driver


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium driven by Selenium, shared by the browser tests."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = _browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root, in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1800",
    ):
        options.add_argument(argument)
    # the page's console, so a test can say that no script failed
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(options=options, service=Service(driver))
    try:
        yield session
    finally:
        session.quit()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the browser tests keep their screenshots (``build/screenshots``, or
    ``$PBTKIT_SCREENSHOTS``): kept after the run, to look at what the tests saw."""
    folder = Path(
        os.environ.get("PBTKIT_SCREENSHOTS")
        or Path(__file__).resolve().parents[2] / "build" / "screenshots"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


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
