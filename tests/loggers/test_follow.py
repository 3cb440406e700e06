"""The logger contract: what loggers are told, off the workers' path, and from config."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import pbtkit as pk
from pbtkit.config import load_config
from pbtkit.controller import Controller
from pbtkit.loggers import Follower, Logger, RunInfo, Update, logger_from
from pbtkit.store import open_store
from tests import trainers
from tests.loggers.conftest import settings

ROOT = Path(__file__).resolve().parents[2]


class Recorder(Logger):
    """Keeps every update it is given."""

    kind = "recorder"

    def __init__(self) -> None:
        self.run: RunInfo | None = None
        self.updates: list[Update] = []
        self.closed_with: list[Update | None] = []

    def open(self, run: RunInfo) -> None:
        self.run = run

    def log(self, update: Update) -> None:
        self.updates.append(update)

    def close(self, update: Update | None) -> None:
        self.closed_with.append(update)


def test_each_report_trial_and_event_is_handed_on_once(tmp_path: Path) -> None:
    recorder = Recorder()
    result = pk.run(trainers.climb, loggers=[recorder], **settings(tmp_path))  # type: ignore[arg-type]
    assert recorder.run is not None
    assert recorder.run.metric == "score"
    assert recorder.run.space["kind"]["type"] == "choice"
    reports = [r for u in recorder.updates for r in u.reports]
    store = open_store(f"sqlite:///{tmp_path / 'run.db'}")
    stored = Controller(store).reports("tracked")
    store.close()
    key = lambda r: (r.trial_id, r.step, sorted(r.metrics.items()))  # noqa: E731
    assert sorted(map(key, reports)) == sorted(map(key, stored))
    done = [t.id for t in result.trials if t.status == "done"]
    assert sorted(t.id for u in recorder.updates for t in u.finished) == done
    assert sorted(t.id for u in recorder.updates for t in u.started) == done
    events = [e.id for u in recorder.updates for e in u.events]
    assert sorted(events) == [e.id for e in result.events if e.kind != "continue"]
    finished = sorted(m.member for u in recorder.updates for m in u.members_finished)
    assert finished == [m.member for m in result.members]
    (last,) = recorder.closed_with
    assert last is not None
    assert last.experiment.status == "finished"


class Stuck(Recorder):
    """Holds the loggers' thread in its first update until the run has finished."""

    def __init__(self, storage: str) -> None:
        super().__init__()
        self.storage = storage
        self.saw_the_end = False

    def log(self, update: Update) -> None:
        super().log(update)
        if len(self.updates) > 1:
            return
        store = open_store(self.storage)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if Controller(store).summary("tracked").status == "finished":
                    self.saw_the_end = True
                    return
                time.sleep(0.05)
        finally:
            store.close()


def test_a_stuck_logger_does_not_hold_up_the_workers(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'run.db'}"
    stuck = Stuck(storage)
    pk.run(trainers.climb, loggers=[stuck], **settings(tmp_path))  # type: ignore[arg-type]
    assert stuck.saw_the_end, "the run never finished while its logger was stuck"
    # and it was still told everything, at the end
    assert sum(len(u.finished) for u in stuck.updates) == 16


class Flaky(Recorder):
    """Fails its first two updates (a tracking server that is down), then works."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    def log(self, update: Update) -> None:
        if self.failures < 2:
            self.failures += 1
            raise ConnectionError("the tracking server is down")
        super().log(update)


def test_a_failing_logger_loses_nothing_and_stops_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pk.run(trainers.climb, **settings(tmp_path, name="x"))  # type: ignore[arg-type]
    store = open_store(f"sqlite:///{tmp_path / 'run.db'}")
    flaky = Flaky()
    with Follower(Controller(store), "x", [flaky]) as follower:
        for _ in range(3):
            follower.sync()
    store.close()
    assert flaky.failures == 2
    assert sum(len(u.finished) for u in flaky.updates) == 16  # the first update, retried
    assert "the tracking server is down" in caplog.text


def test_loggers_by_name_and_table_and_bad_ones() -> None:
    assert type(logger_from("tensorboard")).__name__ == "TensorBoardLogger"
    logger = logger_from({"type": "mlflow", "tracking_uri": "sqlite:///x.db", "fresh": False})
    assert type(logger).__name__ == "MLflowLogger"
    with pytest.raises(pk.ConfigError, match="unknown logger 'neptune'"):
        logger_from("neptune")
    with pytest.raises(pk.ConfigError, match="needs a type"):
        logger_from({"tracking_uri": "x"})
    with pytest.raises(pk.ConfigError, match="does not take these settings"):
        logger_from({"type": "mlflow", "trackng_uri": "x"})
    with pytest.raises(pk.ConfigError, match="loggers must be a list"):
        pk.run(trainers.climb, loggers="mlflow", **settings(Path("/nonexistent")))  # type: ignore[arg-type]


def test_config_files_name_loggers(tmp_path: Path) -> None:
    config = tmp_path / "pbt.toml"
    config.write_text(
        'metric = "score"\nready_every = 3\ntotal_steps = 6\npopulation = 2\nworkers = 1\n'
        'executor = "thread"\ntensorboard = false\n'
        '[space]\nx = { type = "uniform", low = 0.1, high = 1.0 }\n'
        "[[loggers]]\n"
        'type = "mlflow"\n'
        f'tracking_uri = "sqlite:///{tmp_path / "mlflow.db"}"\n'
        'experiment_name = "from-config"\n'
        f'artifact_location = "{(tmp_path / "art").as_uri()}"\n'
    )
    assert load_config(config)["loggers"][0]["type"] == "mlflow"
    bad = tmp_path / "bad.toml"
    bad.write_text("loggers = [1]\n" + config.read_text().split("[[loggers]]")[0])
    with pytest.raises(pk.ConfigError, match="loggers must be a list of names"):
        load_config(bad)
    out = subprocess.run(
        [sys.executable, "-m", "pbtkit", "run", "tests.trainers:climb", "--config", str(config),
         "--storage", f"sqlite:///{tmp_path / 'run.db'}", "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**_env(), "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("from-config")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["climb", "member-000", "member-001"]


def _env() -> dict[str, Any]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def test_the_trackers_are_imported_only_when_used() -> None:
    code = (
        "import sys, pbtkit, pbtkit.loggers\n"
        "assert not {'mlflow', 'wandb', 'pandas'} & set(sys.modules), sys.modules.keys()\n"
        "from pbtkit.loggers import MLflowLogger, WandbLogger\n"
        "assert not {'mlflow', 'wandb'} & set(sys.modules)\n"
        "MLflowLogger(tracking_uri='sqlite:///unused.db')\n"
        "assert 'mlflow' in sys.modules\n"
        "print(sorted(pbtkit.loggers.__all__))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
        env={**_env(), "PYTHONPATH": f"{ROOT / 'src'}"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(sorted([
        "KINDS", "Follower", "Logger", "MLflowLogger", "RunInfo", "StoreTail",
        "TensorBoardLogger", "Update", "WandbLogger", "follow", "logger_from",
    ]))  # fmt: skip


def test_a_retried_trial_reports_its_steps_again_and_none_is_lost(tmp_path: Path) -> None:
    """A running trial's reports are handed on while it runs; when its attempt fails,
    the next attempt's reports are handed on from its first step, not from where the
    failed one stopped."""
    import threading

    seen = threading.Event()

    class Watcher(Recorder):
        def log(self, update: Update) -> None:
            super().log(update)
            if any(r.member == 0 for r in update.reports):
                seen.set()

    attempts: list[int] = []

    def flaky(trial: pk.Trial) -> None:
        first = trial.member == 0 and trial.start_step == 0 and not attempts
        if trial.member == 0 and trial.start_step == 0:
            attempts.append(1)
        for step in trial.steps():
            trial.report(step, score=float(step) + (0.5 if first else 0.0))
        if first:
            assert seen.wait(60), "the logger never saw the running trial's reports"
            raise RuntimeError("the first attempt breaks after its reports were seen")
        (trial.checkpoint_dir / "done").write_text("yes")

    watcher = Watcher()
    pk.run(
        flaky, loggers=[watcher], lease_seconds=0.4,  # heartbeats every 0.1 s
        **settings(tmp_path, population=2, total_steps=6, workers=1),  # type: ignore[arg-type]
    )  # fmt: skip
    assert len(attempts) == 2
    first_trial = [r for u in watcher.updates for r in u.reports if r.member == 0 and r.step < 3]
    failed = [r for r in first_trial if r.metrics["score"] % 1 == 0.5]
    kept = [r for r in first_trial if r.metrics["score"] % 1 == 0.0]
    assert sorted(r.step for r in failed) == [0, 1, 2]  # shown while the attempt ran
    assert sorted(r.step for r in kept) == [0, 1, 2]  # and the retry's, from its first step
    assert any(e.kind == "retry" for u in watcher.updates for e in u.events)
