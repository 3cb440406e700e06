"""PyTorch with pbtkit: checkpoints that load safely, with the explored hyperparameters in force.

::

    import pbtkit as pk
    import pbtkit.torch as pt

    def train(trial: pk.Trial) -> None:
        model = Net(dropout=trial.hparams["dropout"]).to(trial.device)
        opt = torch.optim.SGD(model.parameters(), lr=trial.hparams["lr"], momentum=0.9)
        pt.load(trial, model=model, optimizer=opt)     # parent's weights, trial's lr in force
        for step in trial.steps():
            ...
        pt.save(trial, model=model, optimizer=opt)

:func:`load` reads ``trial.parent_checkpoint`` (the member's own last checkpoint, or the
donor's after an exploit), loads the tensors into the models, optimizers, schedulers and
gradient scaler given, applies shrink-and-perturb when the trial inherits that way, and
then writes ``trial.hparams`` into the optimizers' param groups and the schedulers' base
learning rates (:func:`apply_hparams`). That last step matters: an optimizer's state dict
holds its learning rate, so ``optimizer.load_state_dict(donor_state)`` alone trains on with
the *donor's* learning rate and silently undoes the explore step.

Several networks: pass mappings, ``model={"G": g, "D": d}``,
``optimizer={"g": g_opt, "d": d_opt}``; hyperparameters named ``g_lr`` and ``d_lr`` then
go to the optimizer of that name (see :func:`apply_hparams` for the rules and
``param_map`` for other names).

The format: a checkpoint is two files in a directory, ``torch-tensors.safetensors`` (every
tensor: weights, buffers, optimizer moments) and ``torch-state.json`` (everything else:
param groups, scheduler state, step counters, your extra values, and the hyperparameters
the checkpoint was trained with). Loading never unpickles anything, so a checkpoint from
a shared filesystem or another machine cannot run code in your process.

Needs ``pip install 'pbtkit[torch]'`` (PyTorch and safetensors).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pbtkit._exceptions import CheckpointError, ConfigError

try:
    import safetensors.torch
    import torch
    from torch import nn
except ImportError as _missing:  # pragma: no cover - exercised in a subprocess test
    raise ConfigError(
        f"pbtkit.torch needs PyTorch and safetensors, which cannot be imported ({_missing}): "
        "pip install 'pbtkit[torch]'"
    ) from _missing

from pbtkit._torch_inherit import shrink_perturb
from pbtkit.core.inheritance import inherit_seed
from pbtkit.torch._hparams import ParamTarget, apply_hparams, named
from pbtkit.torch._state import Decoder, Encoder

if TYPE_CHECKING:  # the worker is above these helpers: they take its Trial, never import it
    from pbtkit.worker import Trial

__all__ = [
    "STATE_FILE",
    "TENSOR_FILE",
    "ParamTarget",
    "apply_hparams",
    "load",
    "save",
    "saved_hparams",
    "shrink_perturb",
]

STATE_FILE = "torch-state.json"
TENSOR_FILE = "torch-tensors.safetensors"
_FORMAT = "pbtkit.torch"
_VERSION = 1


def _scaler_types() -> tuple[type, ...]:
    types: list[type] = [torch.amp.GradScaler]
    legacy = getattr(getattr(torch.cuda, "amp", None), "GradScaler", None)
    if isinstance(legacy, type):
        types.append(legacy)
    return tuple(types)


def _groups(model: Any, optimizer: Any, scheduler: Any, scaler: Any) -> dict[str, dict[str, Any]]:
    return {
        "models": named(model, "model", "model", nn.Module),
        "optimizers": named(optimizer, "optimizer", "optimizer", torch.optim.Optimizer),
        "schedulers": named(scheduler, "scheduler", "scheduler"),
        "scalers": named(scaler, "scaler", "scaler", _scaler_types()),
    }


def save(
    where: Trial | str | os.PathLike[str],
    *,
    model: Any = None,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    hparams: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write a checkpoint: tensors to safetensors, everything else to JSON.

    Args:
        where: A :class:`~pbtkit.Trial` (writes into ``trial.checkpoint_dir``) or a
            directory (created if missing), e.g. for the glass-box ``client.save(path, ...)``.
        model: A ``torch.nn.Module``, or ``{name: module}`` for several (``{"G": g, "D": d}``).
        optimizer: An optimizer, or ``{name: optimizer}`` (the names ``param_map`` and
            ``<name>_lr`` hyperparameters refer to).
        scheduler: An LR scheduler, or ``{name: scheduler}``.
        scaler: A ``torch.amp.GradScaler``, or ``{name: scaler}``.
        hparams: The hyperparameters the checkpoint was trained with (default: the
            trial's); :func:`saved_hparams` reads them back.
        extra: Anything else to keep: numbers, strings, lists, dicts, tensors or numpy
            arrays (``step=1200``, ``rng=torch.get_rng_state()``). :func:`load` returns them.

    Returns:
        The checkpoint directory.

    Raises:
        ConfigError: A value is neither a tensor, an array nor plain data (nothing is
            pickled), or a name is malformed.
    """
    groups = _groups(model, optimizer, scheduler, scaler)
    states = {
        kind: {name: thing.state_dict() for name, thing in things.items()}
        for kind, things in groups.items()
    }
    return _write_states(where, states, hparams, extra)


def _write_states(
    where: Trial | str | os.PathLike[str],
    states: Mapping[str, Mapping[str, Any]],
    hparams: Mapping[str, Any] | None,
    extra: Mapping[str, Any],
) -> Path:
    """:func:`save` from ``state_dict()`` values already taken, ``{kind: {name: state}}``
    (kinds: models, optimizers, schedulers, scalers)."""
    if not isinstance(where, str | os.PathLike):  # a Trial
        trial: Trial | None = where
        directory = where.checkpoint_dir
    else:
        trial, directory = None, Path(where)
    directory.mkdir(parents=True, exist_ok=True)
    enc = Encoder()
    doc: dict[str, Any] = {
        "format": _FORMAT,
        "version": _VERSION,
        "torch": torch.__version__,
        "hparams": enc.encode(
            dict(hparams) if hparams is not None else (trial.hparams if trial else None),
            "hparams",
        ),
        "trial": None
        if trial is None
        else {"id": trial.trial_id, "member": trial.member, "step": trial.end_step},
    }
    for kind in ("models", "optimizers", "schedulers", "scalers"):
        doc[kind] = {
            name: enc.encode(state, f"{kind}/{name}")
            for name, state in states.get(kind, {}).items()
        }
    doc["extra"] = enc.encode(dict(extra), "extra")
    # Tensors first, JSON last: the JSON names the tensors, so a reader that finds it
    # finds them too. Each file is replaced whole (another process may be reading it).
    state_tmp = directory / f".{STATE_FILE}.tmp"
    # Compact: an indent would make json use its pure-Python encoder, 10x slower here.
    text = json.dumps(doc, allow_nan=False, separators=(",", ":"))
    state_tmp.write_text(text, encoding="utf-8")
    tensors_tmp = directory / f".{TENSOR_FILE}.tmp"
    safetensors.torch.save_file(enc.tensors, str(tensors_tmp), metadata={"format": _FORMAT})
    # safetensors creates its file readable by its owner only; give it the JSON's mode
    # (the umask's), so workers running as other users can load it as a donor's.
    os.chmod(tensors_tmp, state_tmp.stat().st_mode & 0o777)
    os.replace(tensors_tmp, directory / TENSOR_FILE)
    os.replace(state_tmp, directory / STATE_FILE)
    return directory


def _read(directory: Path, where: str) -> tuple[dict[str, Any], Decoder]:
    state_path, tensor_path = directory / STATE_FILE, directory / TENSOR_FILE
    if not state_path.is_file() or not tensor_path.is_file():
        present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
        raise CheckpointError(
            f"{where} holds no pbtkit.torch checkpoint ({STATE_FILE} and {TENSOR_FILE}; "
            f"found: {', '.join(present) or 'nothing'}): was it written by pbtkit.torch.save?"
        )
    try:
        doc = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{where}: cannot read {STATE_FILE}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise CheckpointError(f"{where}: {STATE_FILE} is not a pbtkit.torch checkpoint")
    if doc.get("version") != _VERSION:
        raise CheckpointError(
            f"{where}: format version {doc.get('version')!r}; this pbtkit reads {_VERSION}"
        )
    try:
        tensors = safetensors.torch.load_file(str(tensor_path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{where}: cannot read {TENSOR_FILE}: {exc}") from exc
    return doc, Decoder(tensors, where)


def saved_hparams(source: Trial | str | os.PathLike[str] | None) -> dict[str, Any] | None:
    """The hyperparameters a checkpoint was trained with (the donor's after an exploit).

    Build a model's architecture from these when a hyperparameter changes its shape, so
    that the donor's weights fit: ``Net(width=pt.saved_hparams(trial)["width"])``.

    Args:
        source: A trial (its parent checkpoint) or a checkpoint directory; None gives None.

    Returns:
        The hyperparameters, or None when there is no checkpoint or it recorded none.

    Raises:
        CheckpointError: The directory holds no readable pbtkit.torch checkpoint.
    """
    path: str | os.PathLike[str] | None
    path = (
        source
        if source is None or isinstance(source, str | os.PathLike)
        else source.parent_checkpoint
    )
    if path is None:
        return None
    doc, decoder = _read(Path(path), str(path))
    found = decoder.decode(doc.get("hparams"))
    return dict(found) if isinstance(found, Mapping) else None


def _differences(mine: Mapping[str, Any], theirs: Mapping[str, Any] | None) -> str:
    if not theirs:
        return ""
    changed = [
        f"{k} ({theirs[k]!r} there, {mine[k]!r} here)"
        for k in mine
        if k in theirs and theirs[k] != mine[k] and not isinstance(mine[k], float)
    ]
    return (
        f" Hyperparameters that differ and may shape the model: {', '.join(changed)}."
        if (changed)
        else ""
    )


def _check_shapes(
    name: str, module: nn.Module, state: Mapping[str, Any], where: str, hint: str
) -> None:
    own = module.state_dict()
    for key, value in state.items():
        mine = own.get(key)
        if (
            isinstance(value, torch.Tensor)
            and isinstance(mine, torch.Tensor)
            and tuple(value.shape) != tuple(mine.shape)
        ):
            raise CheckpointError(
                f"cannot load {where} into model {name!r}: tensor {key!r} has shape "
                f"{tuple(value.shape)} in the checkpoint but {tuple(mine.shape)} in "
                f"this model. A hyperparameter that changes the architecture (a layer's "
                f"width, say) cannot take another member's weights: mark it as not "
                f"perturbed (pk.Perturb(per_param={{'width': {{'factors': (1.0,), "
                f"'resample_probability': 0.0}}}})), or rebuild the model from the "
                f"donor's hyperparameters (pbtkit.torch.saved_hparams(trial)).{hint}"
            )


def _pick(kind: str, saved: Mapping[str, Any], name: str, where: str) -> Any:
    if name not in saved:
        held = ", ".join(map(repr, saved)) or "none"
        raise CheckpointError(
            f"{where} holds no {kind[:-1]} named {name!r} (its {kind}: {held}); pass "
            f"{kind[:-1]}={{...}} with the names it was saved with"
        )
    return saved[name]


def load(
    source: Trial | str | os.PathLike[str] | None,
    *,
    model: Any = None,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    hparams: Mapping[str, Any] | None = None,
    param_map: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    strict: bool = True,
    optimizer_state: Literal["auto", "load", "reset"] = "auto",
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save`, then put the hyperparameters in force.

    Build the model and optimizer from ``trial.hparams`` first (on ``trial.device``),
    then call this once per trial. With no checkpoint (a member's first trial, or a
    glass-box ``client.parameters_path()`` that is None) nothing is loaded and the
    hyperparameters are still written into the optimizers.

    What is loaded: the models' tensors (shapes checked), the optimizers' state (moments,
    step counts, param groups), the schedulers' and scalers' state, then
    :func:`apply_hparams` writes the hyperparameters into the optimizers' param groups and
    the schedulers' base learning rates. The inheritance mode of the run is honoured:
    ``inherit="hparams"`` gives the trial the member's own checkpoint and ``"weights"``
    the donor's with the member's own hyperparameters (pbtkit chooses the parent
    checkpoint and ``trial.hparams``); ``pk.ShrinkPerturb(s, n)`` shrinks and perturbs the
    donor's weights on their device (seeded by the trial id, so a retry starts from the
    same weights) and, with ``optimizer_state="auto"``, starts the optimizers' per-
    parameter state afresh: momentum buffers and Adam's moments describe the donor's
    trajectory, not the moved weights (the param groups, and so a schedule's position,
    are still loaded).

    Args:
        source: A :class:`~pbtkit.Trial` (reads ``trial.parent_checkpoint``, applies
            ``trial.hparams``, maps tensors to ``trial.device``), a checkpoint directory
            (glass box: ``client.parameters_path()``), or None.
        model: A module, or ``{name: module}`` with the names it was saved with.
        optimizer: An optimizer, or ``{name: optimizer}``.
        scheduler: An LR scheduler, or ``{name: scheduler}``.
        scaler: A ``torch.amp.GradScaler``, or ``{name: scaler}``.
        hparams: The values to put in force (default: ``trial.hparams`` for a trial;
            none for a directory: pass ``hparams=client.explore()``).
        param_map: Where hyperparameters whose names are not param-group keys go, e.g.
            ``{"beta1": ("betas", 0), "g_lr": ("G", "lr")}`` (see :func:`apply_hparams`).
        device: Where the extra tensors returned go (default: ``trial.device``, else the
            CPU). Weights and optimizer state go where the model's parameters are.
        strict: Whether every model key must match (``Module.load_state_dict``'s ``strict``).
        optimizer_state: ``"auto"`` (load it, except after shrink-and-perturb), ``"load"``
            or ``"reset"`` (keep only the param groups).

    Returns:
        The ``extra`` values given to :func:`save` (an empty dict without a checkpoint).

    Raises:
        CheckpointError: The checkpoint is missing or damaged, lacks a model or optimizer
            asked for, or a tensor's shape differs from the model's (the message names
            the tensor, both shapes and what to do).
        ConfigError: A setting is malformed (see :func:`apply_hparams`).
    """
    if optimizer_state not in ("auto", "load", "reset"):
        raise ConfigError(
            f"optimizer_state must be 'auto', 'load' or 'reset', got {optimizer_state!r}"
        )
    trial: Trial | None = None
    path: Path | None
    if source is not None and not isinstance(source, str | os.PathLike):  # a Trial
        trial = source
        path = trial.parent_checkpoint
        values: Mapping[str, Any] = trial.hparams if hparams is None else hparams
        target = torch.device(device if device is not None else trial.device)
        moved = trial.shrink_perturb if trial.is_exploit else None
        where = (
            f"the checkpoint of donor member {trial.donor} ({path})"
            if trial.is_exploit
            else f"the parent checkpoint {path}"
        )
    else:
        path = None if source is None else Path(source)
        values = hparams or {}
        target = torch.device(device if device is not None else "cpu")
        moved = None
        where = f"checkpoint {path}"
    groups = _groups(model, optimizer, scheduler, scaler)
    extra: dict[str, Any] = {}
    if path is not None:
        doc, decoder = _read(Path(path), where)
        hint = _differences(values, decoder.decode(doc.get("hparams")) or None)
        for name, module in groups["models"].items():
            state = decoder.decode(_pick("models", doc.get("models", {}), name, where))
            _check_shapes(name, module, state, where, hint)
            try:
                module.load_state_dict(state, strict=strict)
            except RuntimeError as exc:
                raise CheckpointError(f"cannot load {where} into model {name!r}: {exc}") from exc
            if moved is not None:
                shrink_perturb(module, *moved, seed=inherit_seed(trial.trial_id) if trial else None)
        reset = optimizer_state == "reset" or (optimizer_state == "auto" and moved is not None)
        for name, opt in groups["optimizers"].items():
            state = decoder.decode(_pick("optimizers", doc.get("optimizers", {}), name, where))
            if reset:
                state = {"state": {}, "param_groups": state["param_groups"]}
            state = _fill_groups(state, opt)
            try:
                opt.load_state_dict(state)
            except (ValueError, KeyError, RuntimeError) as exc:
                raise CheckpointError(
                    f"cannot load {where} into optimizer {name!r}: {exc}. Build the optimizer "
                    "over the same parameters, in the same groups, as the one saved"
                ) from exc
        for kind in ("schedulers", "scalers"):
            for name, thing in groups[kind].items():
                state = decoder.decode(_pick(kind, doc.get(kind, {}), name, where))
                if kind == "scalers" and not state:
                    continue  # saved from a disabled scaler: nothing to restore
                thing.load_state_dict(state)
        extra = _to_device(decoder.decode(doc.get("extra") or {}), target)
    if groups["optimizers"] and values:
        apply_hparams(
            groups["optimizers"], values, scheduler=groups["schedulers"], param_map=param_map
        )
    return extra


def _fill_groups(state: Any, opt: torch.optim.Optimizer) -> Any:
    """``state`` with each saved param group completed by the keys it lacks from ``opt``'s
    group (a checkpoint of the vectorized path names only the hyperparameters it uses; one
    from another torch version may lack a newer option)."""
    if not isinstance(state, dict):
        return state
    saved = state.get("param_groups")
    if not isinstance(saved, list) or len(saved) != len(opt.param_groups):
        return state  # load_state_dict says what is wrong
    groups = [
        {**{k: v for k, v in live.items() if k != "params"}, **group}
        if isinstance(group, dict)
        else group
        for live, group in zip(opt.param_groups, saved, strict=True)
    ]
    return {**state, "param_groups": groups}


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_device(v, device) for v in value)
    return value
