"""Optimizers over stacked parameters, each member with its own hyperparameters.

A population of ``P`` members of one architecture is held as one tensor ``[P, ...]`` per
parameter (:func:`torch.func.stack_module_state`). The optimizers here update all of them
at once, with every hyperparameter a tensor ``[P]``: member ``i`` steps with its own
learning rate, momentum, weight decay and betas, so the values explore chose are the ones
in force. The arithmetic is that of ``torch.optim.SGD`` (momentum, weight decay, no
dampening, no Nesterov), ``torch.optim.Adam`` and ``torch.optim.AdamW`` (single-tensor
implementations), so a member trained here and one trained by the ordinary optimizer end
within float tolerance of each other; :meth:`StackedOptimizer.member_state` and
:meth:`StackedOptimizer.set_member_state` translate a member's slice to and from that
optimizer's ``state_dict`` form, which is what a checkpoint holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from pbtkit._exceptions import ConfigError

__all__ = [
    "DEFAULTS",
    "OPTIMIZERS",
    "StackedOptimizer",
    "make_optimizer",
    "param_group",
    "torch_optimizer",
]

Kind = Literal["sgd", "adam", "adamw"]
OPTIMIZERS: tuple[Kind, ...] = ("sgd", "adam", "adamw")

#: Each optimizer's hyperparameters and their defaults (torch.optim's).
DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0},
    "adam": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
    "adamw": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
}
_MOMENTS = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq")}


def _per_member(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``[P]`` hyperparameter shaped to broadcast against a ``[P, ...]`` parameter."""
    return value.view(-1, *([1] * (like.dim() - 1)))


@dataclass(slots=True)
class StackedOptimizer:
    """One optimizer for a whole population (see the module docstring).

    Attributes:
        kind: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        moments: Per parameter name, its moment tensors ``[P, ...]`` by their
            ``torch.optim`` names (``momentum_buffer``; ``exp_avg``, ``exp_avg_sq``).
        steps: How many steps each member has taken, ``[P]`` (float, as torch keeps it).
    """

    kind: Kind
    moments: dict[str, dict[str, torch.Tensor]]
    steps: torch.Tensor
    names: tuple[str, ...] = field(default=())

    @torch.no_grad()
    def step(
        self,
        params: dict[str, torch.Tensor],
        grads: Mapping[str, torch.Tensor],
        hparams: Mapping[str, torch.Tensor],
    ) -> None:
        """Update ``params`` in place from ``grads``, member ``i`` with ``hparams[k][i]``."""
        self.steps += 1
        lr = hparams["lr"]
        decay = hparams["weight_decay"]
        for name, param in params.items():
            grad = grads[name]
            state = self.moments[name]
            rate, wd = _per_member(lr, param), _per_member(decay, param)
            if self.kind == "sgd":
                # torch's order of rounding: d_p = grad + wd * param, buf = m * buf + d_p,
                # param -= lr * buf; fused into as few passes over the population as
                # keep it (the step is memory-bound at large populations). The buffer
                # is zero at the start, so the first step gives d_p itself, as torch's
                # SGD does when it creates the buffer; see settle() for momentum 0.
                buffer = state["momentum_buffer"]
                momentum = _per_member(hparams["momentum"], param)
                buffer.mul_(momentum).add_(torch.addcmul(grad, wd, param))
                param.addcmul_(rate, buffer, value=-1)
                continue
            beta1 = _per_member(hparams["beta1"], param)
            beta2 = _per_member(hparams["beta2"], param)
            if self.kind == "adamw":
                param.mul_(1 - rate * wd)
            else:
                grad = grad + wd * param
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad * (1 - beta2))
            count = _per_member(self.steps, param)
            correction1 = 1 - beta1**count
            correction2_sqrt = (1 - beta2**count).sqrt()
            denom = (exp_avg_sq.sqrt() / correction2_sqrt).add_(_per_member(hparams["eps"], param))
            param.sub_((rate / correction1) * exp_avg / denom)

    @torch.no_grad()
    def settle(self, hparams: Mapping[str, torch.Tensor]) -> None:
        """End a run of steps: zero the SGD momentum buffer of members whose momentum is
        0, where torch keeps no buffer at all (a checkpoint or an exploit then copies
        none). Between steps it does not matter: at momentum 0 the next step overwrites
        the buffer with the gradient."""
        if self.kind != "sgd":
            return
        keep = hparams["momentum"] != 0
        for state in self.moments.values():
            buffer = state["momentum_buffer"]
            buffer.mul_(_per_member(keep, buffer))

    def member_state(self, index: int) -> dict[int, dict[str, torch.Tensor]]:
        """Member ``index``'s state in ``torch.optim`` form (``state_dict()["state"]``),
        parameters numbered in ``names`` order; empty before its first step."""
        if float(self.steps[index]) == 0:
            return {}
        out: dict[int, dict[str, torch.Tensor]] = {}
        for number, name in enumerate(self.names):
            entry = {k: v[index].detach().clone() for k, v in self.moments[name].items()}
            if self.kind != "sgd":
                entry["step"] = self.steps[index].detach().clone().cpu()
            out[number] = entry
        return out

    @torch.no_grad()
    def set_member_state(self, index: int, state: Mapping[Any, Mapping[str, Any]]) -> None:
        """Put a ``torch.optim`` state (``state_dict()["state"]``) into member ``index``'s
        slice; an empty state (a fresh optimizer) zeroes it."""
        steps = 0.0
        for number, name in enumerate(self.names):
            entry = state.get(number) or state.get(str(number)) or {}
            for key, tensor in self.moments[name].items():
                value = entry.get(key)
                if isinstance(value, torch.Tensor):
                    tensor[index].copy_(value)
                else:  # no buffer (torch keeps none at momentum 0, or before a step)
                    tensor[index].zero_()
            if "step" in entry:
                steps = float(entry["step"])
            elif entry:
                steps = max(steps, 1.0)
        self.steps[index] = steps


def make_optimizer(kind: str, params: Mapping[str, torch.Tensor]) -> StackedOptimizer:
    """A fresh :class:`StackedOptimizer` for stacked ``params``.

    Raises:
        ConfigError: ``kind`` is not one of :data:`OPTIMIZERS`.
    """
    if kind not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {kind!r}")
    checked: Kind = kind
    moments = {
        name: {key: torch.zeros_like(p) for key in _MOMENTS["sgd" if kind == "sgd" else "adam"]}
        for name, p in params.items()
    }
    population = next(iter(params.values())).shape[0] if params else 0
    device = next(iter(params.values())).device if params else torch.device("cpu")
    return StackedOptimizer(
        checked,
        moments,
        torch.zeros(population, dtype=torch.float32, device=device),
        tuple(params),
    )


def param_group(kind: str, hparams: Mapping[str, float], count: int) -> dict[str, Any]:
    """The ``torch.optim`` param group of one member's optimizer over ``count`` parameters,
    as its ``state_dict()`` holds it: the hyperparameters :class:`StackedOptimizer` uses,
    by torch's names. Keys it does not use (``dampening``, ``foreach``...) are left out;
    :func:`pbtkit.torch.load` fills them from the optimizer it loads into. Building a
    ``torch.optim`` optimizer instead would cost its first use in a process over a second
    (it imports ``torch._dynamo``)."""
    known = DEFAULTS[kind]
    values = {**known, **{k: float(v) for k, v in hparams.items() if k in known}}
    group: dict[str, Any] = {"lr": values["lr"], "weight_decay": values["weight_decay"]}
    if kind == "sgd":
        group["momentum"] = values["momentum"]
    else:
        group["betas"] = (values["beta1"], values["beta2"])
        group["eps"] = values["eps"]
    group["params"] = list(range(count))
    return group


def torch_optimizer(
    kind: str, parameters: Any, hparams: Mapping[str, float]
) -> torch.optim.Optimizer:
    """The ordinary ``torch.optim`` optimizer that :class:`StackedOptimizer` mirrors, with
    ``hparams`` (names as in :data:`DEFAULTS`) in force."""
    if kind not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {kind!r}")
    known = DEFAULTS[kind]
    values = {**known, **{k: float(v) for k, v in hparams.items() if k in known}}
    if kind == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=values["lr"],
            momentum=values["momentum"],
            weight_decay=values["weight_decay"],
        )
    cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    return cls(
        parameters,
        lr=values["lr"],
        betas=(values["beta1"], values["beta2"]),
        eps=values["eps"],
        weight_decay=values["weight_decay"],
        foreach=False,
    )
