"""Lightning with pbtkit: one ``Trainer.fit`` per trial, driven by :class:`PBTCallback`.

::

    import lightning as L
    import pbtkit as pk
    from pbtkit.lightning import PBTCallback

    def train(trial: pk.Trial) -> None:
        model = LitNet(dropout=trial.hparams["dropout"], lr=trial.hparams["lr"])
        pbt = PBTCallback(trial, monitor="val_acc")
        trainer = L.Trainer(callbacks=[pbt], logger=False, **pbt.trainer_kwargs())
        trainer.fit(model, datamodule=DigitsData(batch_size=trial.hparams["batch_size"]))

    pk.run(train, metric="val_acc", mode="max", ready_every=2, total_steps=16, ...)

A step is one epoch by default (``unit="epoch"``): a trial of steps ``[a, b)`` trains
epochs ``a .. b - 1``, so ``ready_every`` counts epochs and ``trainer.current_epoch`` runs
on across trials and exploits. With ``unit="step"`` a step is one optimizer step
(``trainer.global_step``); validate often enough (``val_check_interval``) that the last
one falls near the end of each trial.

What the callback does, at the start of ``fit`` (after ``configure_optimizers``): it loads
the parent checkpoint (the member's own, or the donor's after an exploit) into the
LightningModule, its optimizers, LR schedulers and AMP scaler with
:func:`pbtkit.torch.load`, sets the trainer's epoch and step counters to where the trial
starts, and writes the trial's hyperparameters into the optimizers *after* their state
was restored, so the explored values are in force (``lr``, ``momentum``... by name; others
with ``param_map``). At each validation end it reports the monitored metric and every
other scalar the module logged. At the end of training it saves the checkpoint into the
trial's directory. The checkpoint is pbtkit.torch's (safetensors and JSON): Lightning's
own ``.ckpt`` files are pickles, which nothing here reads or writes, so pass
``enable_checkpointing=False`` (``trainer_kwargs()`` does).

Needs ``pip install 'pbtkit[lightning]'`` (``lightning``; the older ``pytorch_lightning``
package works too).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pbtkit._exceptions import ConfigError, MetricError

try:
    import torch

    try:
        import lightning.pytorch as pl
    except ImportError:  # the standalone package of older installs
        import pytorch_lightning as pl  # type: ignore[no-redef]
except ImportError as _missing:  # pragma: no cover - depends on the environment
    raise ConfigError(
        f"pbtkit.lightning needs Lightning, which cannot be imported ({_missing}): "
        "pip install 'pbtkit[lightning]'"
    ) from _missing

import pbtkit.torch as pt
from pbtkit.worker import Trial

__all__ = ["PBTCallback"]

_FIELDS = ("ready", "started", "processed", "completed")


def _set_progress(progress: Any, value: int) -> None:
    """Set every counter of a Lightning progress record (total and current) to ``value``."""
    for tracker in (getattr(progress, "total", None), getattr(progress, "current", None)):
        if tracker is None:
            continue
        for name in _FIELDS:
            if hasattr(tracker, name):
                setattr(tracker, name, value)


class PBTCallback(pl.Callback):
    """Runs one pbtkit trial inside ``Trainer.fit``: restore, report, save.

    Args:
        trial: The trial the training function was called with.
        monitor: The logged metric PBT ranks members by (default: the run's metric,
            ``trial.metric``). Its value is also reported under ``trial.metric``, so
            ``monitor="val/acc"`` works with ``pk.run(metric="val_acc")``.
        unit: What one step of the trial is: ``"epoch"`` (default) or ``"step"`` (an
            optimizer step).
        param_map: Where hyperparameters whose names are not param-group keys go
            (see :func:`pbtkit.torch.apply_hparams`), e.g. ``{"beta1": ("betas", 0)}``.
        optimizer_names: Names for the optimizers ``configure_optimizers`` returns, in
            order (default: ``"optimizer"`` for one, ``"0"``, ``"1"``... for several),
            so that ``{"g_lr": ("g", "lr")}`` or a hyperparameter ``g_lr`` finds them.

    Raises:
        ConfigError: ``unit`` is neither, or the callback is used for a second fit.
        MetricError: A validation ended without the monitored metric.
    """

    def __init__(
        self,
        trial: Trial,
        monitor: str | None = None,
        *,
        unit: Literal["epoch", "step"] = "epoch",
        param_map: Mapping[str, Any] | None = None,
        optimizer_names: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(trial, Trial):
            raise ConfigError(f"PBTCallback needs the pk.Trial given to train(), got {trial!r}")
        if unit not in ("epoch", "step"):
            raise ConfigError(f"PBTCallback(unit={unit!r}): unit must be 'epoch' or 'step'")
        self.trial = trial
        self.monitor = monitor or trial.metric
        self.unit = unit
        self.param_map = dict(param_map or {})
        self.optimizer_names = tuple(optimizer_names) if optimizer_names is not None else None
        self._started = False
        self.reported = 0

    def trainer_kwargs(self) -> dict[str, Any]:
        """Trainer settings that suit a trial: its length, its device, no pickled checkpoints.

        ``max_epochs`` (or ``max_steps``) to the trial's end, ``accelerator`` and
        ``devices`` from ``trial.device``, and ``enable_checkpointing=False``. Pass them on
        with your own: ``L.Trainer(callbacks=[pbt], **pbt.trainer_kwargs())``.
        """
        kwargs: dict[str, Any] = {"enable_checkpointing": False}
        if self.unit == "epoch":
            kwargs["max_epochs"] = self.trial.end_step
        else:
            kwargs.update(max_steps=self.trial.end_step, max_epochs=-1)
        device = torch.device(self.trial.device)
        if device.type == "cuda":
            kwargs.update(accelerator="gpu", devices=[device.index or 0])
        else:
            kwargs.update(accelerator="cpu", devices=1)
        return kwargs

    # what is saved and restored ------------------------------------------------------
    def _optimizers(self, trainer: pl.Trainer) -> dict[str, torch.optim.Optimizer]:
        optimizers = list(trainer.optimizers)
        if self.optimizer_names is not None:
            if len(self.optimizer_names) != len(optimizers):
                raise ConfigError(
                    f"PBTCallback(optimizer_names={list(self.optimizer_names)}) names "
                    f"{len(self.optimizer_names)} optimizers; configure_optimizers returned "
                    f"{len(optimizers)}"
                )
            return dict(zip(self.optimizer_names, optimizers, strict=True))
        if len(optimizers) == 1:
            return {"optimizer": optimizers[0]}
        return {str(i): opt for i, opt in enumerate(optimizers)}

    @staticmethod
    def _schedulers(trainer: pl.Trainer) -> dict[str, Any]:
        return {str(i): config.scheduler for i, config in enumerate(trainer.lr_scheduler_configs)}

    @staticmethod
    def _scaler(trainer: pl.Trainer) -> Any:
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        return scaler if isinstance(scaler, torch.amp.GradScaler) else None

    @staticmethod
    def _loop_counters(trainer: pl.Trainer) -> dict[str, int]:
        epoch_loop = trainer.fit_loop.epoch_loop
        return {
            "epoch": int(trainer.current_epoch),
            "global_step": int(trainer.global_step),
            "batches_that_stepped": int(getattr(epoch_loop, "_batches_that_stepped", 0)),
            "batches": int(epoch_loop.batch_progress.total.completed),
        }

    def _set_loop_counters(self, trainer: pl.Trainer, saved: Mapping[str, Any]) -> None:
        """Put the trainer where this trial starts: the unit's counter at ``start_step``,
        the others as the checkpoint left them (the donor's, after an exploit)."""
        start = self.trial.start_step
        epoch = start if self.unit == "epoch" else int(saved.get("epoch", 0))
        step = start if self.unit == "step" else int(saved.get("global_step", 0))
        loop = trainer.fit_loop
        _set_progress(loop.epoch_progress, epoch)
        epoch_loop = loop.epoch_loop
        _set_progress(epoch_loop.automatic_optimization.optim_progress.optimizer.step, step)
        _set_progress(epoch_loop.manual_optimization.optim_step_progress, step)
        epoch_loop._batches_that_stepped = int(saved.get("batches_that_stepped", step))
        total = epoch_loop.batch_progress.total
        for name in _FIELDS:
            if hasattr(total, name):
                setattr(total, name, int(saved.get("batches", 0)))

    # hooks --------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Restore the parent checkpoint and put the trial's hyperparameters in force."""
        if self._started:
            raise ConfigError(
                "a PBTCallback runs one Trainer.fit for one trial; make a new one per trial"
            )
        self._started = True
        if trainer.checkpoint_callbacks:
            warnings.warn(
                "PBTCallback saves the trial's checkpoint itself; Lightning's "
                "ModelCheckpoint also writes pickled .ckpt files that PBT never reads. "
                "Pass enable_checkpointing=False (PBTCallback.trainer_kwargs() does)",
                stacklevel=2,
            )
        if self.unit == "epoch":
            trainer.fit_loop.max_epochs = self.trial.end_step
        else:
            trainer.fit_loop.epoch_loop.max_steps = self.trial.end_step
            trainer.fit_loop.max_epochs = -1
        extra = pt.load(
            self.trial,
            model=pl_module,
            optimizer=self._optimizers(trainer),
            scheduler=self._schedulers(trainer),
            scaler=self._scaler(trainer),
            param_map=self.param_map,
        )
        self._set_loop_counters(trainer, extra.get("lightning") or {})

    def _step(self, trainer: pl.Trainer) -> int:
        trial = self.trial
        here = trainer.current_epoch if self.unit == "epoch" else trainer.global_step - 1
        return min(max(int(here), trial.start_step), max(trial.end_step - 1, trial.start_step))

    def _logged(self, trainer: pl.Trainer) -> dict[str, float]:
        values: dict[str, float] = {}
        for name, value in trainer.callback_metrics.items():
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    continue
                values[name] = float(value.detach().cpu())
            elif isinstance(value, int | float) and not isinstance(value, bool):
                values[name] = float(value)
        return values

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the monitored metric and the other logged scalars at this step."""
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        values = self._logged(trainer)
        if self.monitor not in values:
            raise MetricError(
                f"PBTCallback(monitor={self.monitor!r}): the LightningModule logged no "
                f"{self.monitor!r} by the end of validation; it logged "
                f"{', '.join(sorted(values)) or 'nothing'}. Call self.log({self.monitor!r}, ...) "
                "in validation_step"
            )
        values[self.trial.metric] = values[self.monitor]
        self.trial.report(self._step(trainer), **values)  # NaN too: a diverged member ranks last
        self.reported += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report what the epoch logged at its end (``on_epoch`` training metrics come
        after validation in Lightning's order)."""
        if not trainer.is_global_zero:
            return
        values = self._logged(trainer)
        if self.monitor in values:
            values[self.trial.metric] = values[self.monitor]
        if values:
            self.trial.report(self._step(trainer), **values)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save the trial's checkpoint (weights, optimizers, schedulers, counters)."""
        if not trainer.is_global_zero:
            return
        pt.save(
            self.trial,
            model=pl_module,
            optimizer=self._optimizers(trainer),
            scheduler=self._schedulers(trainer),
            scaler=self._scaler(trainer),
            lightning=self._loop_counters(trainer),
        )
