"""Shrink and perturb for PyTorch tensors, on their device.

It depends on nothing of pbtkit above :mod:`pbtkit.core` and lives outside
:mod:`pbtkit.torch` (which re-exports it), so ``Trial.inherited`` can hand tensors to it
without the worker depending on that package, whose vectorized runner sits above the
worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pbtkit._exceptions import ConfigError
from pbtkit.core.inheritance import check_shrink_noise

__all__ = ["shrink_perturb"]


def shrink_perturb(
    target: Any,
    shrink: float,
    noise: float,
    *,
    seed: int | None = None,
) -> Any:
    """Shrink and perturb weights on their device: ``shrink * w + noise * N(0, 1)``.

    On a module it works in place on its floating-point parameters (buffers such as
    BatchNorm's running statistics are kept: noise could make a variance negative) and
    returns the module. On a mapping it returns a new dict in which every floating-point
    tensor is moved and everything else (integer tensors, step counters) is copied,
    tensors on the device they were on. ``trial.inherited(...)`` calls this for tensors,
    and :func:`load` for the models it loads after a shrink-and-perturb exploit.

    Args:
        target: A ``torch.nn.Module`` or a mapping of tensors (a state dict).
        shrink: The factor in ``[0, 1]``.
        noise: The noise's standard deviation, ``>= 0``.
        seed: Seeds the noise (one generator per device), so the result is repeatable;
            None draws from torch's global generator.

    Returns:
        The module, or the new mapping.

    Raises:
        ConfigError: ``shrink`` or ``noise`` is out of range, or ``target`` is neither.
    """
    factor, sigma = check_shrink_noise("pbtkit.torch.shrink_perturb", shrink, noise)
    generators: dict[torch.device, torch.Generator] = {}

    def moved(tensor: torch.Tensor) -> torch.Tensor:
        out = tensor * factor
        if sigma:
            gen = generators.get(tensor.device)
            if gen is None and seed is not None:
                gen = torch.Generator(device=tensor.device).manual_seed(seed)
                generators[tensor.device] = gen
            out += sigma * torch.randn(
                tensor.shape, generator=gen, device=tensor.device, dtype=tensor.dtype
            )
        return out

    if isinstance(target, nn.Module):
        with torch.no_grad():
            for _, param in sorted(target.named_parameters(), key=lambda item: item[0]):
                if param.is_floating_point():
                    param.copy_(moved(param))
        return target
    if not isinstance(target, Mapping):
        raise ConfigError(
            f"shrink_perturb takes a torch.nn.Module or a mapping of tensors, got "
            f"{type(target).__name__}"
        )
    out: dict[str, Any] = {}
    with torch.no_grad():
        for name in sorted(target, key=str):
            value = target[name]
            if isinstance(value, torch.Tensor):
                out[name] = moved(value) if value.is_floating_point() else value.clone()
            else:
                out[name] = value
    return {name: out[name] for name in target}
