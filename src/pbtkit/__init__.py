"""pbtkit: Population Based Training for Python.

Quick start::

    import pbtkit as pk

    def train(trial: pk.Trial) -> None:
        ...  # load trial.parent_checkpoint, train trial.steps(), trial.report(...), save

    result = pk.run(train, space={"lr": pk.LogUniform(1e-4, 1e-1)}, metric="accuracy",
                    population=8, workers=2, ready_every=100, total_steps=2000)
    print(result.best.hparams, result.schedule())
"""

import sys
import types
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

if TYPE_CHECKING:
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
    from pbtkit.service import PBTClient, PBTServer
    from pbtkit.worker import Trial

# Where each public name lives. ``import pbtkit`` loads none of these modules (numpy, the
# store, the controller, the service): each is imported the first time one of its names
# is used, so that ``pbtkit --help``, a worker's start and a script's first line stay fast.
_LAZY = {
    "run": "pbtkit.api",
    **dict.fromkeys(("Gt", "Gte", "Lt", "Lte"), "pbtkit.core.conditions"),
    "CustomExplore": "pbtkit.core.custom_explore",
    **dict.fromkeys(
        ("BinaryTournament", "Exploiter", "Initiator", "NoExploit", "Truncation", "TTest"),
        "pbtkit.core.exploit",
    ),
    **dict.fromkeys(
        ("Explorer", "GaussianNoise", "Keep", "Perturb", "Resample"), "pbtkit.core.explore"
    ),
    **dict.fromkeys(("Fitness", "MultiObjective", "Objective"), "pbtkit.core.fitness"),
    **dict.fromkeys(
        ("ShrinkPerturb", "WeightTransform", "shrink_perturb"), "pbtkit.core.inheritance"
    ),
    **dict.fromkeys(("Schedule", "Segment"), "pbtkit.core.lineage"),
    "PB2": "pbtkit.core.pb2",
    "PBT": "pbtkit.core.policy",
    **dict.fromkeys(
        ("Choice", "IntUniform", "LogUniform", "Ordinal", "SearchSpace", "Uniform"),
        "pbtkit.core.space",
    ),
    **dict.fromkeys(("ReplayResult", "replay", "replay_schedule"), "pbtkit.replay"),
    **dict.fromkeys(("MemberResult", "Result"), "pbtkit.result"),
    # The glass-box API, as its first users wrote it (``from pbtkit import PBTServer,
    # PBTClient``): the service's libraries are an extra.
    **dict.fromkeys(("PBTServer", "PBTClient"), "pbtkit.service"),
    "Trial": "pbtkit.worker",
}


def __getattr__(name: str) -> Any:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module 'pbtkit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(where), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The ``pbtkit`` module, which keeps ``pbtkit.replay`` the function it exports."""

    def __setattr__(self, name: str, value: Any) -> None:
        # Importing the submodule ``pbtkit.replay`` binds its name in this package; the
        # public name is the function of that module (``pk.replay(...)``), as it always was.
        if name == "replay" and isinstance(value, types.ModuleType):
            value = value.replay
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

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
