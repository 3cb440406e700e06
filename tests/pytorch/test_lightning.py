"""PBTCallback with real Lightning: in process, and under pk.run with worker processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning")
import lightning.pytorch as pl
import safetensors.torch
import torch
from torch.utils.data import DataLoader

import pbtkit as pk
import pbtkit.torch as pt
from pbtkit.controller import Lease
from pbtkit.lightning import PBTCallback
from pbtkit.store import TrialRecord
from tests.pytorch import lightning_trainers as lt

BATCHES_PER_EPOCH = 8  # 256 examples in batches of 32


def _trial(
    tmp_path: Path,
    hparams: dict[str, Any],
    parent: Path | None,
    start: int,
    end: int,
    *,
    trial_id: int = 1,
    donor: int | None = None,
) -> pk.Trial:
    record = TrialRecord(
        id=trial_id,
        experiment_id=1,
        member=0,
        generation=0,
        hparams=hparams,
        parent_id=None,
        start_step=start,
        end_step=end,
        attempt=1,
    )
    out = tmp_path / f"trial-{trial_id}"
    out.mkdir()
    lease = Lease(record, "e", "val_acc", str(tmp_path), None, donor, 0.0)
    return pk.Trial(lease, out, parent, device="cpu")


def _fit(trial: pk.Trial, callback: PBTCallback | None = None, **trainer: Any) -> lt.LitNet:
    model = lt.LitNet(trial.hparams["lr"], trial.hparams["momentum"])
    pbt = callback or PBTCallback(trial)
    settings: dict[str, Any] = {
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        **pbt.trainer_kwargs(),
    }
    settings.update(trainer)
    data = lt._data()
    pl.Trainer(callbacks=[pbt], **settings).fit(
        model, DataLoader(data, batch_size=32), DataLoader(data, batch_size=256)
    )
    return model


def test_a_trial_continues_from_its_parent_and_reports_each_epoch(tmp_path: Path) -> None:
    first = _trial(tmp_path, {"lr": 0.1, "momentum": 0.9}, None, 0, 2, trial_id=1)
    trained = _fit(first)
    reports = first._take_reports()
    assert sorted({r.step for r in reports}) == [0, 1]
    assert all({"val_acc", "val_loss"} <= set(r.metrics) for r in reports)
    # on_epoch training metrics are logged after validation: reported at the epoch's end
    assert {r.step for r in reports if "train_loss" in r.metrics} == {0, 1}
    saved = pt.saved_hparams(first.checkpoint_dir)
    assert saved == {"lr": 0.1, "momentum": 0.9}

    # An exploit: the next trial starts from that checkpoint at the member's own step 5,
    # with an explored learning rate.
    second = _trial(
        tmp_path, {"lr": 0.05, "momentum": 0.8}, first.checkpoint_dir, 5, 7, trial_id=2, donor=3
    )
    pbt = PBTCallback(second)
    model = lt.LitNet(0.05, 0.8)
    seen: dict[str, Any] = {}

    class Peek(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            group = trainer.optimizers[0].param_groups[0]
            seen.update(
                lr=group["lr"],
                momentum=group["momentum"],
                buffers=len(trainer.optimizers[0].state),
                epoch=trainer.current_epoch,
                step=trainer.global_step,
                weights={k: v.clone() for k, v in module.state_dict().items()},
            )

    data = lt._data()
    pl.Trainer(
        callbacks=[pbt, Peek()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **pbt.trainer_kwargs(),
    ).fit(model, DataLoader(data, batch_size=32), DataLoader(data, batch_size=256))
    assert (seen["lr"], seen["momentum"]) == (0.05, 0.8)  # the explored values, not 0.1/0.9
    assert seen["buffers"] > 0  # the donor's momentum buffers came along
    assert seen["epoch"] == 5  # the trial's start; the step count is the checkpoint's
    assert seen["step"] == 2 * BATCHES_PER_EPOCH
    for key, value in trained.state_dict().items():
        assert torch.equal(seen["weights"][key], value), key
    assert sorted({r.step for r in second._take_reports()}) == [5, 6]


def test_a_step_trial_stops_at_its_last_optimizer_step(tmp_path: Path) -> None:
    trial = _trial(tmp_path, {"lr": 0.1, "momentum": 0.0}, None, 0, 12)
    pbt = PBTCallback(trial, unit="step")
    _fit(trial, pbt, val_check_interval=4)
    steps = [r.step for r in trial._take_reports() if "val_acc" in r.metrics]
    assert sorted(set(steps)) == [3, 7, 11]
    state = json.loads((trial.checkpoint_dir / pt.STATE_FILE).read_text())
    assert state["extra"]["lightning"]["global_step"] == 12


def test_a_missing_monitored_metric_is_explained(tmp_path: Path) -> None:
    trial = _trial(tmp_path, {"lr": 0.1, "momentum": 0.0}, None, 0, 1)
    with pytest.raises(pk.MetricError, match=r"logged no 'val_f1'.*val_acc, val_loss"):
        _fit(trial, PBTCallback(trial, monitor="val_f1"))


def test_the_monitored_metric_is_reported_under_the_runs_name(tmp_path: Path) -> None:
    trial = _trial(tmp_path, {"lr": 0.1, "momentum": 0.0}, None, 0, 1)
    _fit(trial, PBTCallback(trial, monitor="val_loss"))
    report = trial._take_reports()[0]
    assert report.metrics["val_acc"] == report.metrics["val_loss"]  # trial.metric is val_acc


def test_lightning_checkpointing_is_warned_about_and_callbacks_are_single_use(
    tmp_path: Path,
) -> None:
    trial = _trial(tmp_path, {"lr": 0.1, "momentum": 0.0}, None, 0, 1)
    pbt = PBTCallback(trial)
    with pytest.warns(UserWarning, match="pickled .ckpt"):
        _fit(trial, pbt, enable_checkpointing=True, default_root_dir=str(tmp_path / "lightning"))
    with pytest.raises(pk.ConfigError, match=r"one Trainer\.fit for one trial"):
        _fit(trial, pbt)


def test_a_wrong_unit_or_names_are_refused(tmp_path: Path) -> None:
    trial = _trial(tmp_path, {"lr": 0.1, "momentum": 0.0}, None, 0, 1)
    with pytest.raises(pk.ConfigError, match="unit must be 'epoch' or 'step'"):
        PBTCallback(trial, unit="batch")  # type: ignore[arg-type]
    with pytest.raises(pk.ConfigError, match="names 2 optimizers"):
        _fit(trial, PBTCallback(trial, optimizer_names=["g", "d"]))


@pytest.mark.slow
def test_a_population_trains_with_lightning_in_worker_processes(tmp_path: Path) -> None:
    result = pk.run(
        lt.lightning_train,
        space={"lr": pk.LogUniform(1e-3, 1.0), "momentum": pk.Uniform(0.0, 0.95)},
        metric="val_acc",
        population=4,
        workers=2,
        ready_every=2,
        total_steps=6,
        exploit=pk.Truncation(0.25),
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        checkpoint_dir=tmp_path / "ckpt",
        keep_checkpoints="all",
        progress=False,
        tensorboard=False,
        name="lightning",
    )
    assert all(m.status == "done" and m.step == 6 for m in result.members)
    assert result.exploits, "a population this spread out must exploit"
    root = tmp_path / "ckpt"
    by_id = {t.id: t for t in result.trials}
    for t in result.trials:
        # the explored values were in force, in every trial
        assert t.metrics["lr_in_force"] == pytest.approx(t.hparams["lr"], rel=1e-6), t.id
        assert t.metrics["momentum_in_force"] == pytest.approx(t.hparams["momentum"]), t.id
        # the epochs ran on from the trial's start
        assert t.metrics["epoch_seen"] == t.end_step - 1
        if t.parent_id is None:
            continue
        parent = by_id[t.parent_id]
        assert parent.checkpoint is not None
        tensors = safetensors.torch.load_file(str(root / parent.checkpoint / pt.TENSOR_FILE))
        weights = sum(float(v.sum()) for k, v in tensors.items() if k.startswith("models/"))
        # the weights it started from are its parent's: its own, or the donor's
        assert t.metrics["weights_at_start"] == pytest.approx(weights, abs=1e-4), t.id
        parent_steps = (parent.end_step - _origin(parent, by_id)) * BATCHES_PER_EPOCH
        assert (
            t.metrics["global_step_seen"]
            == parent_steps + (t.end_step - t.start_step - 1) * BATCHES_PER_EPOCH
        )


def _origin(trial: Any, by_id: dict[int, Any]) -> int:
    """Epochs the weights did not receive: where the lineage skipped ahead at an exploit
    (an exploiting trial starts at its member's step, not its donor's)."""
    skipped = 0
    while trial.parent_id is not None:
        parent = by_id[trial.parent_id]
        skipped += trial.start_step - parent.end_step
        trial = parent
    return skipped
