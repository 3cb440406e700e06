"""Trainers for the vectorized tests (module-level, so a worker process can import them).

A small MLP on a fixed synthetic classification task: 16 features, 4 classes, batches of
32 that depend only on the step, so the vectorized path and the per-member loop see the
same data in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from pbtkit.torch.vectorized import VectorizedTrainer


@cache
def dataset() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training and validation sets, the same on every call."""
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(512, 16, generator=generator)
    w = torch.randn(16, 4, generator=generator)
    y = (x @ w + 0.5 * torch.randn(512, 4, generator=generator)).argmax(dim=1)
    return x[:384], y[:384], x[384:], y[384:]


def data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of a step."""
    x, y, _, _ = dataset()
    start = (step * 32) % len(x)
    return x[start : start + 32], y[start : start + 32]


def mlp() -> nn.Module:
    """The network every member has."""
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))


def loss(model: Any, batch: tuple[torch.Tensor, torch.Tensor], hp: Mapping[str, Any]) -> Any:
    """Cross-entropy plus an L2 penalty whose weight is a hyperparameter (read here, in
    the loss, as a per-member tensor)."""
    x, y = batch
    logits = model(x)
    return functional.cross_entropy(logits, y) + hp["penalty"] * (logits**2).mean()


def evaluate(model: Any, hp: Mapping[str, Any]) -> dict[str, Any]:
    """Validation accuracy and loss."""
    _, _, x, y = dataset()
    logits = model(x)
    return {
        "accuracy": (logits.argmax(dim=1) == y).float().mean(),
        "val_loss": functional.cross_entropy(logits, y),
    }


SGD = VectorizedTrainer(model=mlp, loss=loss, data=data, evaluate=evaluate, optimizer="sgd")
ADAM = VectorizedTrainer(
    model=mlp, loss=loss, data=data, evaluate=evaluate, optimizer="adam", defaults={"eps": 1e-7}
)
train_sgd = SGD.train_trial  # the per-member path, for pbtkit.run's worker processes
