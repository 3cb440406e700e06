"""The public surface is what we mean it to be, and every error is a PBTError."""

from __future__ import annotations

import inspect

import pbtkit as pk


def test_public_names() -> None:
    assert set(pk.__all__) == {
        "PBT",
        "BadCheckpoint",
        "CustomExplore",
        "Exploiter",
        "Explorer",
        "Fitness",
        "WeightTransform",
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
        "PBTClient",
        "PBTServer",
        "OutOfSpace",
        "PB2",
        "PBTError",
        "Perturb",
        "ReplayResult",
        "Resample",
        "Result",
        "Schedule",
        "SearchSpace",
        "ShrinkPerturb",
        "Segment",
        "StorageError",
        "SchemaMismatch",
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
    }
    for name in pk.__all__:
        assert hasattr(pk, name), name


def test_every_exception_is_a_pbterror_with_a_builtin_base() -> None:
    for name in pk.__all__:
        obj = getattr(pk, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert issubclass(obj, pk.PBTError)
            if obj is not pk.PBTError:
                assert any(
                    base in obj.__mro__ for base in (ValueError, KeyError, RuntimeError, OSError)
                ), name


def test_not_found_reads_as_a_sentence() -> None:
    assert str(pk.NotFound("no trial with id 3")) == "no trial with id 3"


def test_public_callables_are_documented() -> None:
    for name in pk.__all__:
        obj = getattr(pk, name)
        if callable(obj):
            assert inspect.getdoc(obj), f"{name} has no docstring"
