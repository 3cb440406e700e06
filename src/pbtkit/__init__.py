"""pbtkit: Population Based Training for Python.

Quick start::

    import pbtkit as pk

    def train(trial: pk.Trial) -> None:
        ...  # load trial.parent_checkpoint, train trial.steps(), trial.report(...), save

    result = pk.run(train, space={"lr": pk.LogUniform(1e-4, 1e-1)}, metric="accuracy",
                    population=8, workers=2, ready_every=100, total_steps=2000)
    print(result.best.hparams, result.schedule())
"""

from pbtkit._exceptions import (
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
from pbtkit.core.exploit import BinaryTournament, Truncation
from pbtkit.core.explore import Perturb, Resample
from pbtkit.core.fitness import Objective
from pbtkit.core.lineage import Schedule, Segment
from pbtkit.core.policy import PBT
from pbtkit.core.space import Choice, IntUniform, LogUniform, Ordinal, SearchSpace, Uniform
from pbtkit.result import MemberResult, Result
from pbtkit.worker import Trial

__all__ = [
    "PBT",
    "BinaryTournament",
    "CheckpointError",
    "Choice",
    "ConfigError",
    "ExperimentConflict",
    "IntUniform",
    "LeaseLost",
    "LogUniform",
    "MemberResult",
    "MetricError",
    "NotFound",
    "Objective",
    "Ordinal",
    "OutOfSpace",
    "PBTError",
    "Perturb",
    "Resample",
    "Result",
    "Schedule",
    "SchemaMismatch",
    "SearchSpace",
    "Segment",
    "StorageError",
    "Trial",
    "TrialFailed",
    "Truncation",
    "Uniform",
    "__version__",
    "run",
]
