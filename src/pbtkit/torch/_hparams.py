"""Write a trial's hyperparameters into optimizers and LR schedulers, so they are in force.

``optimizer.load_state_dict(donor_state)`` restores the donor's param groups, and with
them the donor's learning rate, momentum and weight decay: the value PBT just explored is
silently replaced by the one it explored from. :func:`apply_hparams` runs after loading
and writes the trial's values back.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from pbtkit._exceptions import ConfigError

__all__ = ["ParamTarget", "apply_hparams", "named"]

# Param-group entries an LR schedule derives from its base learning rate: scaled with it.
_LR_FAMILY = ("initial_lr", "max_lr", "min_lr")
_SCHEDULER_LISTS = ("base_lrs", "max_lrs")


@dataclass(frozen=True, slots=True)
class ParamTarget:
    """Where one hyperparameter goes: a param-group key of some optimizers' groups.

    Args:
        key: The param-group key (``"lr"``, ``"momentum"``, ``"betas"``...).
        optimizer: The optimizer's name (a key of the ``optimizer={...}`` mapping); None:
            every optimizer whose groups have ``key``.
        index: An element of a tuple value (``0`` for beta1 of ``betas``); None: the value.
        groups: Param-group indices; None: every group.

    Raises:
        ConfigError: A field has the wrong type.
    """

    key: str
    optimizer: str | None = None
    index: int | None = None
    groups: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ConfigError(f"ParamTarget: key must be a param-group key, got {self.key!r}")
        if self.optimizer is not None and not isinstance(self.optimizer, str):
            raise ConfigError(f"ParamTarget: optimizer must be a name, got {self.optimizer!r}")
        if self.index is not None and (isinstance(self.index, bool) or not _is_int(self.index)):
            raise ConfigError(f"ParamTarget: index must be an integer, got {self.index!r}")
        if self.groups is not None:
            groups = tuple(self.groups)
            if not all(_is_int(g) and not isinstance(g, bool) for g in groups):
                raise ConfigError(f"ParamTarget: groups must be integers, got {self.groups!r}")
            object.__setattr__(self, "groups", groups)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral)


def _target(name: str, spec: Any) -> ParamTarget | None:
    """A ``param_map`` value as a :class:`ParamTarget` (None: leave this hyperparameter)."""
    if spec is None or isinstance(spec, ParamTarget):
        return spec
    if isinstance(spec, str):
        return ParamTarget(spec)
    if isinstance(spec, tuple | list) and spec:
        parts = list(spec)
        if len(parts) == 2 and isinstance(parts[0], str) and _is_int(parts[1]):
            return ParamTarget(parts[0], index=int(parts[1]))
        if len(parts) == 2 and all(isinstance(p, str) for p in parts):
            return ParamTarget(parts[1], optimizer=parts[0])
        if (
            len(parts) == 3
            and isinstance(parts[0], str)
            and isinstance(parts[1], str)
            and _is_int(parts[2])
        ):
            return ParamTarget(parts[1], optimizer=parts[0], index=int(parts[2]))
    raise ConfigError(
        f"param_map[{name!r}] = {spec!r}: give a param-group key ('lr'), a key and a tuple "
        f"index (('betas', 0)), an optimizer's name and a key (('G', 'lr')), both "
        f"(('G', 'betas', 0)), a pbtkit.torch.ParamTarget, or None to leave it alone"
    )


def named(
    things: Any, kind: str, single: str, check: type | tuple[type, ...] | None = None
) -> dict[str, Any]:
    """``thing``, ``{name: thing}`` or ``[thing, ...]`` as a dict by name.

    A single one is named ``single`` (``"model"``, ``"optimizer"``...); a list's are named
    ``"0"``, ``"1"``...

    Raises:
        ConfigError: A name is empty or holds ``/``, or an item is not a ``check``.
    """
    if things is None:
        return {}
    if isinstance(things, Mapping):
        out = dict(things)
    elif isinstance(things, list | tuple):
        out = {str(i): t for i, t in enumerate(things)}
    else:
        out = {single: things}
    for name, thing in out.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ConfigError(f"{kind} names must be non-empty strings without '/', got {name!r}")
        if check is not None and not isinstance(thing, check):
            expected = check.__name__ if isinstance(check, type) else check[0].__name__
            raise ConfigError(
                f"{kind} {name!r} is a {type(thing).__name__}, not a {expected}; pass "
                f"{kind}=x or {kind}={{'name': x, ...}}"
            )
    return out


def _schedulers_of(schedulers: Iterable[Any]) -> Iterator[Any]:
    """Every scheduler, those inside SequentialLR and ChainedScheduler included."""
    for s in schedulers:
        yield s
        yield from _schedulers_of(getattr(s, "_schedulers", ()) or ())


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"hyperparameter {name!r} = {value!r} must be a number for an optimizer")
    return float(value)


def _assign(group: dict[str, Any], key: str, index: int | None, value: Any, name: str) -> None:
    current = group[key]
    if index is not None:
        if not isinstance(current, tuple | list):
            raise ConfigError(
                f"hyperparameter {name!r}: param group key {key!r} holds {current!r}, which "
                f"has no element {index}"
            )
        items = list(current)
        if not -len(items) <= index < len(items):
            raise ConfigError(
                f"hyperparameter {name!r}: {key!r} has {len(items)} elements, no {index}"
            )
        old = items[index]
        if isinstance(old, torch.Tensor):
            old.fill_(_number(name, value))
        else:
            items[index] = _number(name, value) if isinstance(old, float) else value
        group[key] = type(current)(items) if isinstance(current, tuple) else items
        return
    if isinstance(current, torch.Tensor):
        current.fill_(_number(name, value))
    elif isinstance(current, tuple) and isinstance(value, list | tuple):
        group[key] = tuple(value)
    elif isinstance(current, float) and not isinstance(current, bool):
        group[key] = _number(name, value)
    else:
        group[key] = value


def _scaled(value: Any, ratio: float) -> Any:
    if isinstance(value, torch.Tensor):
        return value.mul_(ratio)
    return value * ratio


def _set_lr(
    optimizer: torch.optim.Optimizer,
    group_index: int,
    value: float,
    schedulers: Sequence[Any],
) -> None:
    """Make ``value`` the learning rate of a group: its value, or its schedule's base."""
    group = optimizer.param_groups[group_index]
    base = group.get("initial_lr")
    if base is None:  # no schedule: the value is the rate in force
        _assign(group, "lr", None, value, "lr")
        return
    base = float(base)
    if base == 0.0 or not math.isfinite(base):
        for key in ("lr", *_LR_FAMILY):
            if key in group:
                _assign(group, key, None, value, "lr")
        ratio = None
    else:
        ratio = value / base
        group["lr"] = _scaled(group["lr"], ratio)
        for key in _LR_FAMILY:
            if key in group:
                group[key] = _scaled(group[key], ratio)
    for scheduler in _schedulers_of(schedulers):
        if getattr(scheduler, "optimizer", None) is not optimizer:
            continue
        for attr in _SCHEDULER_LISTS:
            values = getattr(scheduler, attr, None)
            if isinstance(values, list) and group_index < len(values):
                old = values[group_index]
                values[group_index] = value if ratio is None else _scaled(old, ratio)
        last = getattr(scheduler, "_last_lr", None)
        if isinstance(last, list) and group_index < len(last):
            last[group_index] = group["lr"]


def apply_hparams(
    optimizer: Any,
    hparams: Mapping[str, Any],
    *,
    scheduler: Any = None,
    param_map: Mapping[str, Any] | None = None,
) -> dict[str, list[str]]:
    """Write hyperparameters into the optimizers' param groups and schedulers' bases.

    Which hyperparameter goes where:

    - ``param_map[name]``, when given: a key (``"lr"``), ``("betas", 0)``, ``("G", "lr")``
      (optimizer ``"G"`` only), ``("G", "betas", 0)``, a :class:`ParamTarget` (to pick
      param groups), or None (leave it alone);
    - else a name that is a param-group key (``lr``, ``momentum``, ``weight_decay``,
      ``betas``, ``eps``, ``dampening``, ``nesterov``, ``alpha``...) goes into every group
      of every optimizer that has that key;
    - else ``<optimizer>_<key>`` (``g_lr`` with ``optimizer={"g": ..., "d": ...}``) goes
      into that optimizer only;
    - else ``beta1``/``beta2`` (or ``<optimizer>_beta1``) go into ``betas[0]``/``betas[1]``;
    - any other hyperparameter (dropout, batch size...) is not the optimizers' business
      and is left alone.

    Learning rates and schedules: with an LR scheduler (anything that set the group's
    ``initial_lr``), ``lr`` is the schedule's base: the scheduler's ``base_lrs`` become
    the value, and the rate in force (with OneCycleLR's and CyclicLR's maximum and minimum)
    is scaled by new base / old base, so the schedule goes on where it was. Without one,
    ``lr`` is the rate in force.

    Args:
        optimizer: One optimizer, ``{name: optimizer}`` or a list.
        hparams: The values, e.g. ``trial.hparams``.
        scheduler: The LR scheduler(s) of these optimizers: one, a mapping or a list.
        param_map: Where hyperparameters with other names go (see above).

    Returns:
        For each hyperparameter written, where it went (``"optimizer.param_groups[0].lr"``).

    Raises:
        ConfigError: A ``param_map`` entry is malformed or names an optimizer or key that
            is not there, or a value does not fit its key.
    """
    optimizers = named(optimizer, "optimizer", "optimizer", torch.optim.Optimizer)
    schedulers = list(named(scheduler, "scheduler", "scheduler").values())
    mapping = dict(param_map or {})
    for name in mapping:
        if not isinstance(name, str):
            raise ConfigError(f"param_map keys are hyperparameter names, got {name!r}")
    written: dict[str, list[str]] = {}
    for name, value in hparams.items():
        if name in mapping:
            target = _target(name, mapping[name])
            if target is None:
                continue
            explicit = True
        else:
            target = _implicit(name, optimizers)
            if target is None:
                continue
            explicit = False
        places = _write(name, value, target, optimizers, schedulers, explicit)
        if places:
            written[name] = places
    return written


def _implicit(name: str, optimizers: Mapping[str, torch.optim.Optimizer]) -> ParamTarget | None:
    def has(opt: torch.optim.Optimizer, key: str) -> bool:
        return any(key in g for g in opt.param_groups)

    if any(has(o, name) for o in optimizers.values()):
        return ParamTarget(name)
    for opt_name, opt in optimizers.items():
        prefix = f"{opt_name}_"
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        if has(opt, rest):
            return ParamTarget(rest, optimizer=opt_name)
        if rest in ("beta1", "beta2") and has(opt, "betas"):
            return ParamTarget("betas", optimizer=opt_name, index=int(rest[-1]) - 1)
    if name in ("beta1", "beta2") and any(has(o, "betas") for o in optimizers.values()):
        return ParamTarget("betas", index=int(name[-1]) - 1)
    return None


def _write(
    name: str,
    value: Any,
    target: ParamTarget,
    optimizers: Mapping[str, torch.optim.Optimizer],
    schedulers: Sequence[Any],
    explicit: bool,
) -> list[str]:
    if target.optimizer is not None:
        if target.optimizer not in optimizers:
            raise ConfigError(
                f"param_map[{name!r}] names optimizer {target.optimizer!r}; the optimizers "
                f"are {', '.join(map(repr, optimizers)) or 'none'}"
            )
        chosen = {target.optimizer: optimizers[target.optimizer]}
    else:
        chosen = dict(optimizers)
    places: list[str] = []
    for opt_name, opt in chosen.items():
        indices = range(len(opt.param_groups)) if target.groups is None else list(target.groups)
        for i in indices:
            if not 0 <= i < len(opt.param_groups):
                raise ConfigError(
                    f"hyperparameter {name!r}: optimizer {opt_name!r} has "
                    f"{len(opt.param_groups)} param groups, no group {i}"
                )
            group = opt.param_groups[i]
            if target.key not in group:
                if explicit and (target.optimizer is not None or target.groups is not None):
                    raise ConfigError(
                        f"param_map[{name!r}]: param group {i} of optimizer {opt_name!r} "
                        f"({type(opt).__name__}) has no {target.key!r}; it has "
                        f"{', '.join(k for k in group if k != 'params')}"
                    )
                continue
            if target.key == "lr" and target.index is None:
                _set_lr(opt, i, _number(name, value), schedulers)
            else:
                _assign(group, target.key, target.index, value, name)
            shown = f"[{target.index}]" if target.index is not None else ""
            places.append(f"{opt_name}.param_groups[{i}].{target.key}{shown}")
    if explicit and not places:
        raise ConfigError(
            f"param_map[{name!r}] = {target.key!r}: no param group of "
            f"{', '.join(map(repr, chosen))} has that key"
        )
    return places
