"""One real run followed by the real MLflow and W&B clients, shared by the logger tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

import pbtkit as pk
from pbtkit.loggers import MLflowLogger, WandbLogger
from pbtkit.store import ReportRecord
from tests import trainers

POPULATION = 4
READY_EVERY = 3
TOTAL_STEPS = 12
KINDS = ["a", "b", "c"]


@dataclass(frozen=True)
class TrackedRun:
    """A finished run, its result, and where the trackers wrote it."""

    directory: Path
    result: pk.Result
    tracking_uri: str
    wandb_dir: Path
    reports: list[ReportRecord]


def settings(directory: Path, **overrides: object) -> dict[str, object]:
    """A small generational run of the climb trainer with a categorical hyperparameter."""
    return {
        "space": {"x": pk.Uniform(0.1, 1.0), "kind": pk.Choice(KINDS)},
        "metric": "score",
        "population": POPULATION,
        "workers": 2,
        "ready_every": READY_EVERY,
        "total_steps": TOTAL_STEPS,
        "evolution": "generational",
        "exploit": pk.Truncation(0.25),
        "executor": "thread",
        "storage": f"sqlite:///{directory / 'run.db'}",
        "checkpoint_dir": directory / "ckpt",
        "keep_checkpoints": "all",
        "progress": False,
        "tensorboard": False,
        "name": "tracked",
        "seed": 3,
        **overrides,
    }


@pytest.fixture(scope="session")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> TrackedRun:
    """The run, with an MLflow logger (SQLite tracking store) and an offline W&B logger."""
    from pbtkit.controller import Controller
    from pbtkit.store import open_store

    directory = tmp_path_factory.mktemp("tracked")
    tracking_uri = f"sqlite:///{directory / 'mlflow.db'}"
    wandb_dir = directory / "wandb-files"
    wandb_dir.mkdir()
    result = pk.run(
        trainers.climb,
        loggers=[
            MLflowLogger(
                tracking_uri=tracking_uri,
                experiment_name="pbt",
                artifact_location=(directory / "mlflow-artifacts").as_uri(),
            ),
            WandbLogger(project="pbt", mode="offline", dir=str(wandb_dir)),
        ],
        **settings(directory),  # type: ignore[arg-type]
    )
    assert result.exploits, "the run exploited nothing; the tests need exploits"
    store = open_store(f"sqlite:///{directory / 'run.db'}")
    reports = Controller(store).reports("tracked")
    store.close()
    return TrackedRun(directory, result, tracking_uri, wandb_dir, reports)
