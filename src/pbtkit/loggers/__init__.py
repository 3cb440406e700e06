"""Experiment trackers, fed from the store while a run goes on: MLflow, W&B, TensorBoard.

::

    import pbtkit as pk
    from pbtkit.loggers import MLflowLogger, WandbLogger

    pk.run(train, ..., loggers=[MLflowLogger(tracking_uri="sqlite:///mlflow.db"),
                                WandbLogger(project="pbt", mode="offline")])
    pk.run(train, ..., loggers=["mlflow", "wandb"])          # each with its defaults

In a config file for ``pbtkit run``::

    loggers = ["mlflow"]                                     # or, with settings:
    [[loggers]]
    type = "mlflow"
    tracking_uri = "sqlite:///mlflow.db"

Every logger implements one small contract (:class:`Logger`: ``open``, ``log``,
``close``) and is fed by one reader of the store (:class:`StoreTail`), in a thread of the
process that drives the run, never in the workers: a slow tracking server slows nothing
but its own logging. ``MLflowLogger`` needs ``pip install 'pbtkit[mlflow]'``,
``WandbLogger`` ``pip install 'pbtkit[wandb]'``, ``TensorBoardLogger``
``pip install 'pbtkit[viz]'``; each is imported only when it is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pbtkit._exceptions import ConfigError
from pbtkit.loggers._base import Logger, RunInfo, Update
from pbtkit.loggers._tail import Follower, StoreTail, follow

if TYPE_CHECKING:
    from pbtkit.loggers.mlflow import MLflowLogger
    from pbtkit.loggers.tensorboard import TensorBoardLogger
    from pbtkit.loggers.wandb import WandbLogger

__all__ = [
    "KINDS",
    "Follower",
    "Logger",
    "MLflowLogger",
    "RunInfo",
    "StoreTail",
    "TensorBoardLogger",
    "Update",
    "WandbLogger",
    "follow",
    "logger_from",
]

#: The names ``loggers=[...]`` and config files accept.
KINDS = ("mlflow", "wandb", "tensorboard")


def __getattr__(name: str) -> Any:
    # The trackers' classes load their packages only when asked for.
    if name == "MLflowLogger":
        from pbtkit.loggers.mlflow import MLflowLogger

        return MLflowLogger
    if name == "WandbLogger":
        from pbtkit.loggers.wandb import WandbLogger

        return WandbLogger
    if name == "TensorBoardLogger":
        from pbtkit.loggers.tensorboard import TensorBoardLogger

        return TensorBoardLogger
    raise AttributeError(f"module 'pbtkit.loggers' has no attribute {name!r}")


def logger_from(spec: Logger | str | Mapping[str, Any]) -> Logger:
    """A logger from what ``loggers=[...]`` or a config file holds.

    Args:
        spec: A :class:`Logger`; a kind (``"mlflow"``, ``"wandb"``, ``"tensorboard"``)
            for its defaults; or a table ``{"type": kind, **settings}`` whose settings are
            the class's keyword arguments (``tracking_uri``, ``project``, ``logdir``...).

    Raises:
        ConfigError: An unknown kind or setting, or the kind's package is not installed
            (the message names the extra to install).
    """
    if isinstance(spec, Logger):
        return spec
    if isinstance(spec, str):
        kind, settings = spec, {}
    elif isinstance(spec, Mapping):
        settings = {str(k): v for k, v in spec.items()}
        kind = settings.pop("type", None)
        if not isinstance(kind, str):
            raise ConfigError(
                f"a logger table needs a type ({', '.join(KINDS)}), got {dict(spec)!r}"
            )
    else:
        raise ConfigError(
            f"a logger is a Logger, one of {', '.join(KINDS)}, or a table with a type; got {spec!r}"
        )
    if kind not in KINDS:
        raise ConfigError(f"unknown logger {kind!r}; known: {', '.join(KINDS)}")
    cls = __getattr__(
        {"mlflow": "MLflowLogger", "wandb": "WandbLogger"}.get(kind, "TensorBoardLogger")
    )
    try:
        logger: Logger = cls(**settings)
    except TypeError as exc:
        raise ConfigError(f"the {kind} logger does not take these settings: {exc}") from exc
    return logger
