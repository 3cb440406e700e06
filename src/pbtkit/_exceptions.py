"""The exceptions pbtkit raises.

Every error is a :class:`PBTError`; most also derive from the builtin that fits, so
``except ValueError`` in user code keeps working::

    PBTError
    ├── ConfigError(PBTError, ValueError)         a space, policy or run setting is wrong
    │   └── OutOfSpace(ConfigError)               a hyperparameter value is outside its domain
    ├── MetricError(PBTError, ValueError)         a report is malformed, or the objective missing
    ├── StorageError(PBTError, RuntimeError)      the storage URL cannot be opened or used
    │   └── SchemaMismatch(StorageError)          the database has another schema version
    ├── ExperimentConflict(PBTError, ValueError)  the name exists with other settings
    ├── NotFound(PBTError, KeyError)              no such experiment, member or trial
    ├── LeaseLost(PBTError, RuntimeError)         a worker reports on a trial it no longer holds
    ├── CheckpointError(PBTError, OSError)        a checkpoint cannot be used or reached now
    │   └── BadCheckpoint(CheckpointError)        it is missing, corrupt or changed: for good
    └── TrialFailed(PBTError, RuntimeError)       the user's training function raised

``retryable`` says whether trying the same call again can help.
"""

from __future__ import annotations

__all__ = [
    "BadCheckpoint",
    "CheckpointError",
    "ConfigError",
    "ExperimentConflict",
    "LeaseLost",
    "MetricError",
    "NotFound",
    "OutOfSpace",
    "PBTError",
    "SchemaMismatch",
    "StorageError",
    "TrialFailed",
    "errors_by_name",
]


class PBTError(Exception):
    """Base class of every error pbtkit raises on purpose."""

    retryable: bool = False


class ConfigError(PBTError, ValueError):
    """A search space, policy or run setting is invalid; the message says which and what to do."""


class OutOfSpace(ConfigError):
    """A hyperparameter value lies outside its domain (or a name is missing or unknown)."""


class MetricError(PBTError, ValueError):
    """A reported metric is malformed, or the objective metric was never reported."""


class StorageError(PBTError, RuntimeError):
    """The storage cannot be opened or used."""

    retryable = True


class SchemaMismatch(StorageError):
    """The database holds a schema version this pbtkit cannot use."""

    retryable = False


class ExperimentConflict(PBTError, ValueError):
    """An experiment of this name already exists with different settings."""


class NotFound(PBTError, KeyError):
    """An experiment, member or trial that does not exist was asked for."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the sentence as written.
        return str(self.args[0]) if self.args else ""


class LeaseLost(PBTError, RuntimeError):
    """The trial is no longer leased to this worker (its lease expired or it was finished)."""


class CheckpointError(PBTError, OSError):
    """A checkpoint is missing, fails its manifest check, or a path lies outside the root."""


class BadCheckpoint(CheckpointError):
    """A committed checkpoint is missing, incomplete, corrupt or was changed after its
    commit: it can never be loaded, unlike a store that cannot be reached for a moment."""


class TrialFailed(PBTError, RuntimeError):
    """The user's training function raised; ``__cause__`` holds the original exception."""


def errors_by_name() -> dict[str, type[PBTError]]:
    """Every pbtkit exception class by its name (what an HTTP error body says it was)."""
    return {
        cls.__name__: cls
        for cls in globals().values()
        if isinstance(cls, type) and issubclass(cls, PBTError)
    }
