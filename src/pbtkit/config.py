"""Run settings from a TOML or YAML file, for ``pbtkit run``.

The format (TOML shown; YAML has the same keys)::

    name = "toy"                  # experiment name (default: the function's name)
    metric = "score"              # required (or [objective]): the metric to optimise
    mode = "max"                  # or "min"
    inherit = "all"               # or "hparams", or {type = "shrink_perturb", ...}
    population = 8
    workers = 2
    ready_every = 10              # required: steps per trial
    total_steps = 100             # required: steps per member
    evolution = "async"           # or "generational"
    storage = "sqlite:///pbt.db"
    checkpoint_dir = "pbt-checkpoints"
    seed = 0
    max_attempts = 3
    trial_timeout = 3600          # seconds a trial may run before it is stopped and retried
    gpus_per_worker = 0.5         # GPUs per local worker (0: CPU; default: one each if enough)
    devices = [0, 1]              # the GPUs to share (default: CUDA_VISIBLE_DEVICES/nvidia-smi)

    [space]                       # required: one entry per hyperparameter
    lr = { type = "loguniform", low = 1e-4, high = 0.1 }
    momentum = { type = "uniform", low = 0.0, high = 0.99 }
    layers = { type = "int", low = 1, high = 4 }
    activation = { type = "choice", values = ["relu", "tanh"] }
    batch = { type = "ordinal", values = [16, 32, 64] }
    optimizer = { type = "choice", values = ["sgd", "adam"] }
    # conditional: active only while the condition on its parent holds
    beta1 = { type = "uniform", low = 0.8, high = 0.999, when = { optimizer = "adam" } }
    width3 = { type = "int", low = 8, high = 256, when = { layers = { gte = 3 } } }

    [exploit]                     # default: truncation with fraction 0.2
    type = "truncation"           # or "binary_tournament", "ttest", "initiator" (window),
    fraction = 0.25               #   "no_exploit"

    [explore]                     # default: perturb x0.8/x1.2, resample probability 0.25
    type = "perturb"              # or "resample", "gaussian", "pb2", "keep", "custom"
    factors = [0.8, 1.2]
    resample_probability = 0.25

    loggers = ["mlflow", "wandb"] # experiment trackers (pbtkit[mlflow], pbtkit[wandb]), or
    [[loggers]]                   #   one table each, with the logger's settings
    type = "mlflow"
    tracking_uri = "sqlite:///mlflow.db"

    [objective]                   # instead of metric/mode: several metrics
    combine = "weighted"          # or "pareto"
    metrics = [{metric = "acc", mode = "max", weight = 1.0},
               {metric = "ms", mode = "min", weight = 0.01}]

A ``when`` names parents and a condition on each (all must hold): a value (equality), a
list (membership), or bounds ``{gt, gte, lt, lte}`` for a numeric parent; see
:mod:`pbtkit.core.conditions`. The parents must form a DAG; a cycle, a parent the space
lacks, or a condition that can never hold is refused with a message that names it.

Relative ``storage`` and ``checkpoint_dir`` paths are relative to the config file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pbtkit._exceptions import ConfigError
from pbtkit.core.exploit import exploiter_from_dict
from pbtkit.core.explore import explorer_from_dict
from pbtkit.core.fitness import objective_from_dict
from pbtkit.core.inheritance import inherit_from_dict

__all__ = ["load_config", "read_settings", "run_kwargs"]

_KNOWN = {
    "name", "metric", "mode", "population", "workers", "ready_every", "total_steps",
    "evolution", "storage", "checkpoint_dir", "seed", "max_attempts", "lease_seconds",
    "keep_checkpoints", "space", "exploit", "explore", "executor", "ray_address",
    "ray_resources", "initial", "inherit", "objective", "tensorboard", "trial_timeout",
    "max_outage", "loggers", "gpus_per_worker", "devices",
}  # fmt: skip
_REQUIRED = ("ready_every", "total_steps", "space")


def read_settings(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``), YAML (``.yaml``/``.yml``) or JSON file holding a table.

    Raises:
        ConfigError: The file is missing, unparsable, or not a table of settings.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml", ".json"):
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"config file {path} must end in .toml, .yaml, .yml or .json")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must hold a table of settings at its top level")
    return dict(data)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a run configuration for ``pbtkit run`` (see the module docstring).

    Raises:
        ConfigError: The file is missing, unparsable, has unknown keys or lacks a required one.
    """
    path = Path(path)
    data = read_settings(path)
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise ConfigError(
            f"config file {path} has unknown settings: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_KNOWN))}"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if "metric" not in data and "objective" not in data:
        missing.append("metric (or objective)")
    if missing:
        raise ConfigError(f"config file {path} lacks required settings: {', '.join(missing)}")
    out = dict(data)
    base = path.resolve().parent
    if "storage" in out and "://" not in str(out["storage"]):
        out["storage"] = str(base / str(out["storage"]))
    elif str(out.get("storage", "")).startswith("sqlite:///") and not str(
        out["storage"]
    ).startswith("sqlite:////"):
        out["storage"] = f"sqlite:///{base / str(out['storage'])[len('sqlite:///') :]}"
    if "checkpoint_dir" in out and "://" not in str(out["checkpoint_dir"]):
        out["checkpoint_dir"] = str(base / str(out["checkpoint_dir"]))
    if "loggers" in out:
        out["loggers"] = _loggers(path, out["loggers"])
    return out


def _loggers(path: Path, value: Any) -> list[str | dict[str, Any]]:
    """The ``loggers`` setting: a name, or a list of names and tables with a type."""
    items = [value] if isinstance(value, str | Mapping) else value
    if not isinstance(items, list) or not all(isinstance(i, str | Mapping) for i in items):
        raise ConfigError(
            f'config file {path}: loggers must be a list of names ("mlflow", "wandb", '
            f'"tensorboard") or tables with a type, got {value!r}'
        )
    return [i if isinstance(i, str) else dict(i) for i in items]


def run_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a loaded config into keyword arguments for :func:`pbtkit.run`."""
    kwargs = {k: v for k, v in config.items() if k not in ("exploit", "explore", "objective")}
    if "objective" in config:  # e.g. {metrics = [{metric = "acc", mode = "max"}, ...]}
        kwargs["metric"] = objective_from_dict(config["objective"])
    if "inherit" in config:
        kwargs["inherit"] = inherit_from_dict(config["inherit"])
    if "exploit" in config:
        kwargs["exploit"] = exploiter_from_dict(config["exploit"])
    if "explore" in config:
        kwargs["explore"] = explorer_from_dict(config["explore"])
    return kwargs
