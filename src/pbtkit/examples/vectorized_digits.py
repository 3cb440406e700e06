"""The whole population of a digits MLP trained in one process, as one computation.

The task of :mod:`pbtkit.examples.torch_digits` (scikit-learn's digits, 30% of the
training labels noisy, the same 60/20/20 split) with a small MLP (64 -> 64 -> 10) trained
by :mod:`pbtkit.torch.vectorized`: every member's parameters stacked, one forward and
backward through ``torch.func.vmap`` per step, SGD with each member's own learning rate,
momentum and weight decay, and a label-smoothing weight that the loss reads as a
per-member tensor. One step is one minibatch of 64; the batches depend on the step only,
so every member (and :func:`train`, the same task one member at a time) sees the same
data in the same order. The objective is validation accuracy; test accuracy is reported
beside it.

Runs in well under a minute on 2 cores: ``python examples/vectorized_digits.py``. Needs
``pip install 'pbtkit[torch,examples]'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import pbtkit as pk

try:
    import torch
    from torch import nn
    from torch.nn import functional
except ImportError as _missing:  # pragma: no cover - depends on the environment
    raise pk.ConfigError(
        f"the vectorized digits example needs PyTorch ({_missing}): pip install 'pbtkit[torch]'"
    ) from _missing

import pbtkit.torch.vectorized as pv
from pbtkit.examples import run_in

__all__ = ["BATCH", "SETTINGS", "SPACE", "TRAINER", "data", "main", "mlp", "train"]

BATCH = 64

SPACE = {
    "lr": pk.LogUniform(1e-3, 0.5),
    "momentum": pk.Uniform(0.0, 0.99),
    "weight_decay": pk.LogUniform(1e-6, 1e-2),
    "smoothing": pk.Uniform(0.0, 0.3),
}


@cache
def _tensors() -> tuple[torch.Tensor, ...]:
    from pbtkit.examples.digits import load_data

    arrays = load_data(0)
    return tuple(
        torch.from_numpy(a).float() if i % 2 == 0 else torch.from_numpy(a).long()
        for i, a in enumerate(arrays)
    )


def data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The minibatch of a step: the training set in a fixed shuffled order, epoch after
    epoch (a new order each epoch, the same for every member)."""
    x, y = _tensors()[:2]
    per_epoch = len(x) // BATCH
    epoch, index = divmod(step, per_epoch)
    rows = _order(epoch, len(x))[index * BATCH : (index + 1) * BATCH]
    return x[rows], y[rows]


@lru_cache(maxsize=4)
def _order(epoch: int, rows: int) -> torch.Tensor:
    """The training set's order in an epoch (drawn once, not at every step)."""
    return torch.randperm(rows, generator=torch.Generator().manual_seed(epoch))


def mlp() -> nn.Module:
    """One member's network."""
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def loss(model: Any, batch: tuple[torch.Tensor, torch.Tensor], hp: Mapping[str, Any]) -> Any:
    """Cross-entropy with label smoothing whose weight is this member's hyperparameter.

    Written with ``log_softmax`` and ``gather`` rather than ``functional.cross_entropy``
    (the same value): under ``vmap`` the latter runs a Python decomposition, slower at
    every step, whose first call imports sympy (about a second)."""
    x, y = batch
    log_p = functional.log_softmax(model(x), dim=1)
    smooth = hp["smoothing"]
    nll = -log_p.gather(1, y.unsqueeze(1)).mean()
    uniform = -log_p.mean()
    return (1 - smooth) * nll + smooth * uniform


def evaluate(model: Any, hp: Mapping[str, Any]) -> dict[str, Any]:
    """Validation and test accuracy."""
    _, _, x_val, y_val, x_test, y_test = _tensors()
    return {
        "accuracy": (model(x_val).argmax(dim=1) == y_val).float().mean(),
        "test_accuracy": (model(x_test).argmax(dim=1) == y_test).float().mean(),
    }


TRAINER = pv.VectorizedTrainer(model=mlp, loss=loss, data=data, evaluate=evaluate)

#: The same task one member at a time: a ``train`` for :func:`pbtkit.run` and replay.
train = TRAINER.train_trial

#: 32 members x 400 steps (about 24 epochs), ready every 50 steps.
SETTINGS: dict[str, Any] = {
    "space": SPACE,
    "metric": "accuracy",
    "mode": "max",
    "population": 32,
    "ready_every": 50,
    "total_steps": 400,
    "exploit": pk.Truncation(0.25),
    "name": "vectorized_digits",
}


def main(directory: str | Path = "pbt-vectorized-digits", **overrides: Any) -> pk.Result:
    """Run :data:`SETTINGS` into ``directory``, every member in this process."""
    return run_in(directory, TRAINER, overrides, runner=pv.run, **SETTINGS)


if __name__ == "__main__":
    result = main()
    print(result.summary_text())
    print(f"test accuracy of the best member: {result.best.metrics['test_accuracy']:.3f}")
