"""A small LightningModule and the training functions the Lightning tests run in worker
processes (module-level, so the workers can import them)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pbtkit as pk
from pbtkit.lightning import PBTCallback


def _data(n: int = 256) -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return TensorDataset(x, y)


class LitNet(pl.LightningModule):
    """A two-layer classifier that logs what the tests check: accuracy, the learning rate
    and momentum in force, the epoch and step counters, and its weights at the start."""

    def __init__(self, lr: float, momentum: float, hidden: int = 16) -> None:
        super().__init__()
        self.lr, self.momentum = lr, momentum
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def on_train_start(self) -> None:
        # after PBTCallback.on_fit_start: what was restored
        self.weights_at_start = float(sum(p.detach().sum() for p in self.parameters()))

    def on_train_epoch_start(self) -> None:
        group = self.trainer.optimizers[0].param_groups[0]
        self.log("lr_in_force", group["lr"])
        self.log("momentum_in_force", group["momentum"])
        self.log("epoch_seen", float(self.current_epoch))
        self.log("global_step_seen", float(self.global_step))
        self.log("weights_at_start", self.weights_at_start)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)


def lightning_train(trial: pk.Trial) -> None:
    """One Trainer.fit per trial, driven by PBTCallback."""
    torch.manual_seed(trial.member)
    model = LitNet(trial.hparams["lr"], trial.hparams["momentum"])
    pbt = PBTCallback(trial, monitor="val_acc")
    trainer = pl.Trainer(
        callbacks=[pbt],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **pbt.trainer_kwargs(),
    )
    data = _data()
    trainer.fit(
        model,
        DataLoader(data, batch_size=32, shuffle=True),
        DataLoader(data, batch_size=256),
    )
