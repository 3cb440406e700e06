"""Training functions for the PyTorch example tests (module-level for worker processes).

``naive_digits`` is the code a user writes without pbtkit.torch: build the optimizer from
the trial's hyperparameters, then ``optimizer.load_state_dict(...)`` from the parent's
checkpoint. It is kept here to show the trap: the loaded state dict carries the donor's
learning rate and momentum, which replace the explored ones.
"""

from __future__ import annotations

from typing import Any

import torch

import pbtkit as pk
from pbtkit.examples import torch_digits as td


def naive_digits(trial: pk.Trial) -> None:
    """The torch digits example with torch.save / torch.load + load_state_dict."""
    _, _, x_val, y_val, _, _ = td.load_tensors()
    model, optimizer = td.build(trial.hparams, trial.device, seed=trial.member)
    if trial.parent_checkpoint is not None:
        # weights_only=True: this is the trap of the optimizer's values, not of pickle
        state = torch.load(trial.parent_checkpoint / "naive.pt", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    group = optimizer.param_groups[0]
    trial.report(trial.start_step, lr_in_force=group["lr"], momentum_in_force=group["momentum"])
    for step in trial.steps():
        loss = td.fit_epoch(
            model, optimizer, int(trial.hparams["batch_size"]), seed=trial.member * 100_003 + step
        )
        trial.report(step, loss=loss)
    trial.report(trial.last_step, accuracy=td.evaluate(model, x_val, y_val))
    torch.save(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict()},
        trial.checkpoint_dir / "naive.pt",
    )


def _record_loaded(trial: pk.Trial, nets: dict[str, Any], optimizers: dict[str, Any]) -> None:
    """Keep what the trial loaded, beside its checkpoint, for the test to compare."""
    import pbtkit.torch as pt

    pt.save(trial.checkpoint_dir / "loaded", model=nets, optimizer=optimizers)


def gan_recording(trial: pk.Trial) -> None:
    """The GAN example, recording the networks and optimizers right after loading."""
    from pbtkit.examples import gan

    gan.train(trial, on_loaded=_record_loaded)
