"""pbtkit: Population Based Training for Python.

Quick start::

    import pbtkit as pk

    def train(trial: pk.Trial) -> None:
        ...  # load trial.parent_checkpoint, train trial.steps(), trial.report(...), save

    result = pk.run(train, space={"lr": pk.LogUniform(1e-4, 1e-1)}, metric="accuracy",
                    population=8, workers=2, ready_every=100, total_steps=2000)
    print(result.best.hparams, result.schedule())
"""

from typing import TYPE_CHECKING, Any

from pbtkit._exceptions import (
    BadCheckpoint,
    CheckpointError,
    ConfigError,
    ExperimentConflict,
    LeaseLost,
    MetricError,
    NotFound,
    OutOfSpace,
    PBTError,
    SchemaMismatch,
    StorageError,
    TrialFailed,
)
from pbtkit._version import __version__
from pbtkit.api import run
from pbtkit.core.conditions import Gt, Gte, Lt, Lte
from pbtkit.core.custom_explore import CustomExplore
from pbtkit.core.exploit import (
    BinaryTournament,
    Exploiter,
    Initiator,
    NoExploit,
    Truncation,
    TTest,
)
from pbtkit.core.explore import Explorer, GaussianNoise, Keep, Perturb, Resample
from pbtkit.core.fitness import Fitness, MultiObjective, Objective
from pbtkit.core.inheritance import ShrinkPerturb, WeightTransform, shrink_perturb
from pbtkit.core.lineage import Schedule, Segment
from pbtkit.core.pb2 import PB2
from pbtkit.core.policy import PBT
from pbtkit.core.space import Choice, IntUniform, LogUniform, Ordinal, SearchSpace, Uniform
from pbtkit.replay import ReplayResult, replay, replay_schedule
from pbtkit.result import MemberResult, Result
from pbtkit.worker import Trial

if TYPE_CHECKING:
    from pbtkit.service import PBTClient, PBTServer


def __getattr__(name: str) -> Any:
    # The glass-box API, as its first users wrote it (``from pbtkit import PBTServer,
    # PBTClient``), imported when asked for: the service's libraries are an extra.
    if name in ("PBTServer", "PBTClient"):
        from pbtkit import service

        return getattr(service, name)
    raise AttributeError(f"module 'pbtkit' has no attribute {name!r}")


__all__ = [
    "WeightTransform",
    "Fitness",
    "Explorer",
    "Exploiter",
    "CustomExplore",
    "PBT",
    "BadCheckpoint",
    "BinaryTournament",
    "CheckpointError",
    "Choice",
    "ConfigError",
    "ExperimentConflict",
    "GaussianNoise",
    "Gt",
    "Gte",
    "Initiator",
    "IntUniform",
    "Keep",
    "LeaseLost",
    "LogUniform",
    "Lt",
    "Lte",
    "MemberResult",
    "MetricError",
    "MultiObjective",
    "NoExploit",
    "NotFound",
    "Objective",
    "Ordinal",
    "OutOfSpace",
    "PB2",
    "PBTClient",
    "PBTServer",
    "PBTError",
    "Perturb",
    "ReplayResult",
    "Resample",
    "Result",
    "Schedule",
    "SchemaMismatch",
    "SearchSpace",
    "ShrinkPerturb",
    "Segment",
    "StorageError",
    "TTest",
    "Trial",
    "TrialFailed",
    "Truncation",
    "Uniform",
    "__version__",
    "replay",
    "replay_schedule",
    "run",
    "shrink_perturb",
]
