"""The PyTorch examples at a small size, in real runs with worker processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

import pbtkit as pk
from tests.pytorch import torch_trainers

pytestmark = pytest.mark.slow


def exploits_not_in_force(result: pk.Result) -> tuple[int, list[str]]:
    """How many exploits trained on, and those whose next trial trained with another lr or
    momentum than its own hyperparameters, as read back from the optimizer after loading."""
    by_id = {t.id: t for t in result.trials}
    checked, wrong = 0, []
    for event in result.exploits:
        assert event.trial_id is not None
        trial = by_id[event.trial_id]
        if trial.status != "done":
            continue
        checked += 1
        for name in ("lr", "momentum"):
            in_force, explored = trial.metrics[f"{name}_in_force"], trial.hparams[name]
            if in_force != explored:
                wrong.append(f"trial {trial.id}: {name} {in_force} in force, {explored} explored")
                break
    return checked, wrong


def _digits(tmp_path: Path, train: Any = None) -> pk.Result:
    from pbtkit.examples import run_in, torch_digits

    small = {"population": 6, "total_steps": 8, "seed": 1, "tensorboard": False}
    settings = {**torch_digits.SETTINGS, "progress": False}
    return run_in(tmp_path, train or torch_digits.train, small, **settings)


def test_every_exploit_trains_with_the_explored_lr_and_momentum(tmp_path: Path) -> None:
    result = _digits(tmp_path)
    assert all(m.status == "done" and m.step == 8 for m in result.members)
    checked, wrong = exploits_not_in_force(result)
    assert checked >= 2
    assert wrong == []
    assert 0.5 < result.best.metrics["accuracy"] <= 1.0
    assert "test_accuracy" in result.best.metrics


def test_the_same_check_catches_the_naive_load_state_dict(tmp_path: Path) -> None:
    result = _digits(tmp_path, torch_trainers.naive_digits)
    checked, wrong = exploits_not_in_force(result)
    assert checked >= 2
    # the donor's values replace the explored ones (equal only where both hit a bound)
    assert len(wrong) >= max(1, checked // 2), wrong


def _tensors(directory: Path) -> dict[str, Any]:
    import safetensors.torch

    import pbtkit.torch as pt

    return safetensors.torch.load_file(str(directory / pt.TENSOR_FILE))


def test_each_gan_exploit_copies_both_networks_and_both_optimizers(tmp_path: Path) -> None:
    import json

    import torch

    import pbtkit.torch as pt
    from pbtkit.examples import gan, run_in

    small = {"population": 4, "ready_every": 100, "total_steps": 400, "tensorboard": False}
    settings = {**gan.SETTINGS, "progress": False, "keep_checkpoints": "all"}
    result = run_in(tmp_path, torch_trainers.gan_recording, small, **settings)
    assert all(m.status == "done" for m in result.members)
    by_id = {t.id: t for t in result.trials}
    root = tmp_path / "checkpoints"
    checked = 0
    for event in result.exploits:
        assert event.trial_id is not None
        assert event.donor_trial is not None
        trial, donor = by_id[event.trial_id], by_id[event.donor_trial]
        if trial.status != "done":
            continue
        assert trial.checkpoint is not None
        assert donor.checkpoint is not None
        loaded_dir = root / trial.checkpoint / "loaded"
        loaded, donated = _tensors(loaded_dir), _tensors(root / donor.checkpoint)
        for prefix in ("models/G/", "models/D/", "optimizers/g/", "optimizers/d/"):
            keys = sorted(k for k in donated if k.startswith(prefix))
            assert keys, prefix  # the donor saved both networks' weights and Adam moments
            assert keys == sorted(k for k in loaded if k.startswith(prefix))
            for key in keys:
                assert torch.equal(loaded[key], donated[key]), (trial.id, key)
        groups = json.loads((loaded_dir / pt.STATE_FILE).read_text())["optimizers"]
        for name in ("g", "d"):
            group = groups[name]["param_groups"][0]
            assert group["lr"] == trial.hparams[f"{name}_lr"]  # the explored value, by name
            assert group["betas"]["$tuple"][0] == trial.hparams["beta1"]
        checked += 1
    assert checked >= 2
    for m in result.members:
        assert {"mmd", "energy", "modes", "high_quality"} <= set(m.metrics)


def test_cartpole_runs_small_and_keeps_its_environments_across_trials(tmp_path: Path) -> None:
    pytest.importorskip("gymnasium")
    import numpy as np
    import torch

    import pbtkit.torch as pt
    from pbtkit.examples import cartpole

    result = cartpole.main(tmp_path, progress=False, population=3, total_steps=3, tensorboard=False)
    assert all(m.status == "done" and m.step == 3 for m in result.members)
    for m in result.members:
        assert 0 < m.metrics["eval_return"] <= 500
        assert m.checkpoint is not None
        extra = pt.load(m.checkpoint)
        assert extra["envs"]["state"].shape == (cartpole.N_ENVS, 4)
        # the steps its weights were trained on, along its lineage (a donor's may be fewer)
        assert extra["env_steps"] in {k * cartpole.STEPS_PER_ITERATION for k in (1, 2, 3)}
    best = result.best.checkpoint
    assert best is not None
    returns = cartpole.evaluate(cartpole.load_policy(best), episodes=2, seed=5)
    assert len(returns) == 2

    # a restored set of environments goes on where the saved one stopped
    policy = cartpole.ActorCritic()
    rollout = cartpole._Rollout(0, None)
    rollout.collect(policy, 0.99, torch.Generator().manual_seed(0))
    saved = rollout.state()
    again = cartpole._Rollout(1, saved)
    assert np.allclose(again.obs, saved["state"])
    assert np.array_equal(again.lengths, saved["lengths"])
    assert np.array_equal(again.state()["state"], saved["state"])
    rollout.close()
    again.close()
