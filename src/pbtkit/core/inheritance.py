"""What an exploiting member inherits from its donor, and the shrink-and-perturb helper.

Four modes, chosen with ``PBT(inherit=...)``:

- ``"all"`` (the default, Lamarckian): the donor's weights and its hyperparameters (after
  exploration), as in Jaderberg et al. 2017;
- ``"hparams"``: only the donor's hyperparameters; the member trains on from its own
  weights;
- ``"weights"``: only the donor's weights; the member explores its own hyperparameters
  (the toy of the PBT paper's Figure 2 copies theta, not h);
- :class:`ShrinkPerturb`: the donor's weights, which the training function shrinks towards
  zero and perturbs with noise before training on (Ash & Adams 2020, "warm-starting" neural
  networks); the helper :func:`shrink_perturb` does it for a mapping of arrays.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pbtkit._exceptions import ConfigError
from pbtkit.core._registry import Plugin
from pbtkit.core._specs import finite_number

__all__ = [
    "Inherit",
    "ShrinkPerturb",
    "WeightTransform",
    "check_shrink_noise",
    "inherit_seed",
    "inherit_from_dict",
    "shrink_perturb",
    "transform_of",
]


def _shrink(owner: str, value: Any) -> float:
    number = finite_number(value)
    if number is None or not 0.0 <= number <= 1.0:
        raise ConfigError(
            f"{owner}: shrink must be a number in [0, 1] (the factor the weights are "
            f"multiplied by), got {value!r}"
        )
    return float(value)


def _noise(owner: str, value: Any) -> float:
    number = finite_number(value)
    if number is None or number < 0:
        raise ConfigError(
            f"{owner}: noise must be a finite number >= 0 (the standard deviation of the "
            f"Gaussian noise added), got {value!r}"
        )
    return float(value)


class WeightTransform(Plugin, abc.ABC, family="inherit"):
    """What an exploiting member does to its donor's weights when it loads them.

    The policy records the transform on the exploit's trial (``{"mode": kind,
    **settings}``); the training function applies it with ``trial.inherited(arrays)``,
    seeded by the trial, so a retry (and a replay) starts from the same weights.
    :class:`ShrinkPerturb` is the built-in one; subclass this for your own (it registers
    itself when defined, like an :class:`~pbtkit.core.exploit.Exploiter`) and pass an
    instance as ``inherit=``.
    """

    __slots__ = ()

    @abc.abstractmethod
    def apply(self, arrays: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """The weights as the member starts from them; ``arrays`` is not modified."""

    def record(self) -> dict[str, Any]:
        """What the exploit's trial stores: ``{"mode": kind, **settings}``."""
        spec = self.to_dict()
        return {"mode": spec.pop("type"), **spec}


def transform_of(record: Mapping[str, Any]) -> WeightTransform:
    """The transform a trial stored (see :meth:`WeightTransform.record`).

    Raises:
        ConfigError: The record names no known transform.
    """
    if not isinstance(record, Mapping) or "mode" not in record:
        raise ConfigError(f"a trial's inherit record must name its mode, got {record!r}")
    spec = {"type": record["mode"], **{k: v for k, v in record.items() if k != "mode"}}
    built: WeightTransform = WeightTransform.registry.build(spec)
    return built


@dataclass(frozen=True, slots=True)
class ShrinkPerturb(WeightTransform):
    """Inherit the donor's weights shrunk and perturbed: ``shrink * w + noise * N(0, 1)``.

    The policy only records the two numbers on the :class:`~pbtkit.core.Exploit` decision;
    the training function applies them when it loads its parent checkpoint, e.g. with
    :func:`shrink_perturb`.

    Args:
        shrink: The factor every weight is multiplied by, in ``[0, 1]``.
        noise: The standard deviation of the Gaussian noise added, ``>= 0``.

    Raises:
        ConfigError: ``shrink`` is outside ``[0, 1]`` or ``noise`` is negative or not finite.
    """

    kind: ClassVar[str] = "shrink_perturb"

    shrink: float = 0.4
    noise: float = 0.1

    def __post_init__(self) -> None:
        object.__setattr__(self, "shrink", _shrink("ShrinkPerturb", self.shrink))
        object.__setattr__(self, "noise", _noise("ShrinkPerturb", self.noise))

    def to_dict(self) -> dict[str, Any]:
        """The spec ``{"type": "shrink_perturb", "shrink": s, "noise": n}``."""
        return {"type": "shrink_perturb", "shrink": self.shrink, "noise": self.noise}

    def apply(self, arrays: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """``shrink * w + noise * N(0, 1)`` for every float array (see :func:`shrink_perturb`)."""
        return shrink_perturb(arrays, self.shrink, self.noise, rng)


def check_shrink_noise(owner: str, shrink: Any, noise: Any) -> tuple[float, float]:
    """``(shrink, noise)`` as floats, checked: shrink in ``[0, 1]``, noise finite ``>= 0``.

    Raises:
        ConfigError: Either is out of range; the message names ``owner``.
    """
    return _shrink(owner, shrink), _noise(owner, noise)


def inherit_seed(trial_id: int) -> int:
    """The seed of a trial's shrink-and-perturb noise on tensors: fixed by the trial id, so
    a retry (and a replay) of the trial starts from the same weights."""
    return int(np.random.default_rng([trial_id, 0x5EED]).integers(2**62))


#: What ``PBT(inherit=...)`` takes.
Inherit = str | WeightTransform

_NAMED = ("all", "hparams", "weights")


def check_inherit(value: Any) -> str | WeightTransform:
    """``value`` if it is a valid inheritance mode.

    Raises:
        ConfigError: It is neither ``"all"``, ``"hparams"``, ``"weights"`` nor a
            :class:`WeightTransform` (such as :class:`ShrinkPerturb`).
    """
    if isinstance(value, WeightTransform) or (isinstance(value, str) and value in _NAMED):
        return value
    raise ConfigError(
        f"PBT(inherit={value!r}): inherit must be 'all' (weights and hyperparameters), "
        f"'hparams' (hyperparameters only), 'weights' (weights only) or "
        f"ShrinkPerturb(shrink, noise)"
    )


def inherit_to_dict(value: str | WeightTransform) -> str | dict[str, Any]:
    """The JSON-able spec of an inheritance mode: its name, or the transform's spec."""
    return value.to_dict() if isinstance(value, WeightTransform) else value


def inherit_from_dict(spec: Any) -> str | WeightTransform:
    """Read ``"all"``, ``"hparams"``, ``"weights"``, ``{"type": "shrink_perturb", "shrink": s,
    "noise": n}`` (omitted numbers take their defaults), or your own transform's
    ``{"type": "mypkg.module:Class", **settings}``.

    Raises:
        ConfigError: The spec is none of these, or a number is out of range.
    """
    if isinstance(spec, Mapping):
        built: WeightTransform = WeightTransform.registry.build(spec)
        return built
    return check_inherit(spec)


def shrink_perturb(
    arrays: Mapping[str, np.ndarray],
    shrink: float,
    noise: float,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Shrink and perturb weights: ``shrink * w + noise * N(0, 1)``, per element.

    Only floating-point arrays change; integer and boolean arrays (step counters, masks)
    are copied as they are. Each result keeps its array's dtype and shape; the input is
    not modified. PyTorch tensors are refused rather than turned into numpy arrays: use
    ``pbtkit.torch.shrink_perturb`` (tensors stay on their device) or
    ``trial.inherited(...)``, which picks the right one.

    Args:
        arrays: Weights by name (e.g. a model's ``state_dict`` as numpy arrays).
        shrink: The factor in ``[0, 1]``, e.g. ``Exploit.shrink`` or ``trial``'s value.
        noise: The noise's standard deviation, ``>= 0``.
        rng: The source of randomness.

    Returns:
        New arrays by the same names.

    Raises:
        ConfigError: ``shrink`` or ``noise`` is out of range, or a value is a tensor.
    """
    factor = _shrink("shrink_perturb", shrink)
    sigma = _noise("shrink_perturb", noise)
    out: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        if type(array).__module__.startswith("torch"):  # duck-typed: core never imports torch
            raise ConfigError(
                f"shrink_perturb: {name!r} is a PyTorch tensor; use pbtkit.torch.shrink_perturb "
                "(or trial.inherited(...)), which keeps tensors on their device"
            )
        value = np.asarray(array)
        if not np.issubdtype(value.dtype, np.floating):
            out[name] = value.copy()
            continue
        moved = factor * value
        if sigma:
            moved = moved + sigma * rng.standard_normal(value.shape)
        out[name] = np.asarray(moved, dtype=value.dtype)
    return out
