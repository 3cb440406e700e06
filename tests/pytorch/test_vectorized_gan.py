"""Several networks in one vectorized population: the GAN of pbtkit.examples.vectorized_gan.

A vectorized GAN run on a SQLite file against the ordinary per-member loop re-training
every recorded trial (exploits included, both networks and both optimizers compared);
an exploit's copy of both networks and both optimizers checked against a re-training
from the member's own previous checkpoint; each network's optimizer with its own
learning rate; a member's checkpoint read by pbtkit.torch.load into the ordinary GAN's
networks and optimizers, and replayed; the fitness under vmap against gan.quality; the
refusals of a loss mapping that does not fit the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

import pbtkit as pk
import pbtkit.torch as pt
import pbtkit.torch.vectorized as pv
from pbtkit.controller import Lease
from pbtkit.examples import gan
from pbtkit.examples import vectorized_gan as vg
from pbtkit.worker import Trial

CLOSE = {"rtol": 1e-4, "atol": 1e-5}


def _tensors(directory: Path | str) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(Path(directory) / pt.TENSOR_FILE))


def _retrain(result: pk.Result, record: Any, parent: Path | None, where: Path) -> Path:
    """One recorded trial trained again by the ordinary per-member path from ``parent``."""
    lease = Lease(record, result.name, "mmd", str(where), None, None, 0.0)
    staging = where / f"trial-{record.id}-{parent.name if parent else 'fresh'}"
    staging.mkdir(parents=True)
    vg.train(Trial(lease, staging, parent))
    return staging


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[pk.Result, Path, dict[int, Path]]:
    """A vectorized run, and every recorded trial re-trained by the ordinary loop from
    the sequential checkpoint of its own parent (trial id -> checkpoint directory)."""
    where = tmp_path_factory.mktemp("gan")
    result = pv.run(
        vg.TRAINER,
        space=vg.SPACE,
        metric="mmd",
        mode="min",
        population=4,
        ready_every=5,
        total_steps=15,
        storage=f"sqlite:///{where / 'pbt.db'}",
        exploit=pk.Truncation(0.25),
        seed=2,
    )
    sequential: dict[int, Path] = {}
    for record in sorted(result.trials, key=lambda t: t.id):
        assert record.status == "done", record
        parent = None if record.parent_id is None else sequential[record.parent_id]
        sequential[record.id] = _retrain(result, record, parent, where / "sequential")
    return result, where, sequential


def _final(result: pk.Result) -> dict[int, tuple[Any, Path]]:
    """Each member's latest trial and its (kept) vectorized checkpoint, by trial id."""
    out = {}
    for member in result.members:
        assert member.checkpoint is not None
        latest = next(
            t
            for t in result.trials
            if t.checkpoint and Path(member.checkpoint).name in t.checkpoint
        )
        out[latest.id] = (latest, Path(member.checkpoint))
    return out


def test_a_vectorized_gan_gives_the_weights_and_moments_of_the_per_member_loop(
    gan_run: tuple[pk.Result, Path, dict[int, Path]],
) -> None:
    result, _, sequential = gan_run
    assert result.status == "finished"
    assert all(m.step == 15 for m in result.members)
    assert [e for e in result.events if e.kind == "exploit"], "the test needs an exploit"
    for trial_id, (_, checkpoint) in _final(result).items():
        vectorized, ordinary = _tensors(checkpoint), _tensors(sequential[trial_id])
        assert vectorized.keys() == ordinary.keys()
        # Both networks and both optimizers' moments are in the checkpoint, by the names
        # the ordinary GAN uses.
        for prefix in ("models/G/", "models/D/", "optimizers/g/", "optimizers/d/"):
            assert any(k.startswith(prefix) for k in vectorized), prefix
        for key, value in vectorized.items():
            torch.testing.assert_close(value, ordinary[key], **CLOSE, msg=key)
    # What the trials reported, the losses of both networks included.
    for trial in result.trials:
        assert {"mmd", "energy", "modes", "high_quality", "D_loss", "G_loss"} <= set(trial.metrics)


def test_an_exploit_copies_both_networks_and_both_optimizers(
    gan_run: tuple[pk.Result, Path, dict[int, Path]],
) -> None:
    result, where, sequential = gan_run
    by_id = {t.id: t for t in result.trials}
    exploits = [
        (record, checkpoint)
        for record, checkpoint in _final(result).values()
        if record.parent_id is not None and by_id[record.parent_id].member != record.member
    ]
    assert exploits, "the test needs an exploit in the last generation"
    for record, checkpoint in exploits:
        own = next(
            t
            for t in result.trials
            if t.member == record.member and t.end_step == record.start_step
        )
        vectorized = _tensors(checkpoint)
        from_donor = _tensors(sequential[record.id])  # trained from the donor's checkpoint
        from_own = _tensors(_retrain(result, record, sequential[own.id], where / "own"))
        for prefix in ("models/G/", "models/D/", "optimizers/g/", "optimizers/d/"):
            keys = [k for k in vectorized if k.startswith(prefix) and not k.endswith("/step")]
            assert keys, prefix
            for key in keys:
                torch.testing.assert_close(vectorized[key], from_donor[key], **CLOSE, msg=key)
            # Had this part stayed the member's own, it would be this instead.
            assert any(not torch.allclose(vectorized[k], from_own[k]) for k in keys), prefix


@pytest.mark.parametrize(("g_lr", "d_lr"), [(1e-2, 1e-9), (1e-9, 1e-2)])
def test_each_network_trains_with_its_own_learning_rate(
    tmp_path: Path, g_lr: float, d_lr: float
) -> None:
    result = pv.run(
        vg.TRAINER,
        space={"g_lr": pk.Choice([g_lr]), "d_lr": pk.Choice([d_lr]), "beta1": pk.Choice([0.5])},
        metric="mmd",
        mode="min",
        population=2,
        ready_every=10,
        total_steps=10,
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
    )
    for member in result.members:
        assert member.checkpoint is not None
        start = vg.TRAINER.initial_model(member.member)
        assert isinstance(start, dict)
        moved = {}
        for net in ("G", "D"):
            saved = _tensors(member.checkpoint)
            moved[net] = max(
                float((saved[f"models/{net}/{name}"] - value.detach()).abs().max())
                for name, value in start[net].named_parameters()
            )
        still, trained = ("D", "G") if d_lr < g_lr else ("G", "D")
        assert moved[still] < 1e-6, moved
        assert moved[trained] > 1e-3, moved
        # The checkpoint's optimizers hold their own rates, and load into torch.optim.
        nets, optimizers = gan.build(member.hparams)
        pt.load(member.checkpoint, model=nets, optimizer=optimizers)
        assert optimizers["g"].param_groups[0]["lr"] == pytest.approx(g_lr)
        assert optimizers["d"].param_groups[0]["lr"] == pytest.approx(d_lr)
        assert optimizers["g"].param_groups[0]["betas"][0] == pytest.approx(0.5)


def test_a_vectorized_gan_member_loads_into_the_ordinary_gan_and_replays(
    gan_run: tuple[pk.Result, Path, dict[int, Path]], tmp_path: Path
) -> None:
    result = gan_run[0]
    best = result.best
    assert best.checkpoint is not None
    nets, optimizers = gan.build(best.hparams)  # the ordinary example's networks and Adams
    pt.load(best.checkpoint, model=nets, optimizer=optimizers)
    saved = _tensors(best.checkpoint)
    for net in ("G", "D"):
        for name, value in nets[net].state_dict().items():
            torch.testing.assert_close(value, saved[f"models/{net}/{name}"])
    for opt, key in (("g", "g_lr"), ("d", "d_lr")):
        assert optimizers[opt].param_groups[0]["lr"] == pytest.approx(best.hparams[key])
        assert optimizers[opt].state, f"{opt}'s Adam moments were saved"
    # The member's fitness from the ordinary networks is the one it reported.
    assert gan.quality(nets["G"], n=vg.EVAL_SAMPLES)["mmd"] == pytest.approx(
        best.metrics["mmd"], rel=1e-3, abs=1e-6
    )
    replayed = pk.replay(vg.train, result.schedule(), checkpoint_dir=tmp_path / "again")
    assert replayed.checkpoint is not None
    mine, theirs = _tensors(best.checkpoint), _tensors(replayed.checkpoint)
    weights = [k for k in mine if k.startswith("models/")]
    assert {k.split("/")[1] for k in weights} == {"G", "D"}
    for key in weights:
        torch.testing.assert_close(mine[key], theirs[key], **CLOSE, msg=key)


def test_the_fitness_under_vmap_is_the_one_of_gan_quality() -> None:
    members = [vg.networks() for _ in range(3)]
    stacked = {net: torch.func.stack_module_state([m[net] for m in members])[0] for net in ("G",)}
    template = members[0]["G"]

    def one(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        def call(x: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(template, params, (x,))  # type: ignore[no-any-return]

        return vg.evaluate({"G": call}, {})

    with torch.no_grad():
        found = torch.func.vmap(one)(stacked["G"])
    for i, member in enumerate(members):
        expected = gan.quality(member["G"], n=vg.EVAL_SAMPLES)
        for name, value in expected.items():
            assert float(found[name][i]) == pytest.approx(value, rel=1e-3, abs=1e-5), name


def test_a_loss_for_a_network_the_model_lacks_is_refused(tmp_path: Path) -> None:
    settings: dict[str, Any] = {
        "space": vg.SPACE,
        "metric": "mmd",
        "mode": "min",
        "population": 2,
        "ready_every": 5,
        "total_steps": 5,
        "storage": f"sqlite:///{tmp_path / 'pbt.db'}",
    }
    wrong = pv.VectorizedTrainer(
        model=vg.networks,
        loss={"D": vg.d_loss, "Generator": vg.g_loss},
        data=vg.data,
        optimizer="adam",
    )
    with pytest.raises(pk.ConfigError, match=r"loss names networks \['Generator'\].*'G', 'D'"):
        pv.run(wrong, **settings)
    partial = pv.VectorizedTrainer(
        model=vg.networks, loss={"D": vg.d_loss}, data=vg.data, optimizer="adam"
    )
    with pytest.raises(pk.ConfigError, match=r"networks \['G'\] have no loss"):
        pv.run(partial, **settings, name="partial")
    single = pv.VectorizedTrainer(
        model=lambda: gan._mlp(2, 1), loss={"D": vg.d_loss}, data=vg.data, optimizer="adam"
    )
    with pytest.raises(pk.ConfigError, match="model\\(\\) returns one module"):
        pv.run(single, **settings, name="single")
    names = pv.VectorizedTrainer(
        model=vg.networks,
        loss={"D": vg.d_loss, "G": vg.g_loss},
        data=vg.data,
        optimizer="adam",
        optimizer_names={"G": "x", "D": "x"},
    )
    with pytest.raises(pk.ConfigError, match="optimizer names must be distinct"):
        pv.run(names, **settings, name="names")
    stray = pv.VectorizedTrainer(
        model=vg.networks,
        loss={"D": vg.d_loss, "G": vg.g_loss},
        data=vg.data,
        optimizer="adam",
        optimizer_names={"G": "g", "D": "d"},
        defaults={"G_beta2": 0.99},  # the optimizer is "g"
    )
    with pytest.raises(pk.ConfigError, match=r"defaults names \['G_beta2'\], which no optimizer"):
        pv.run(stray, **settings, name="stray")


def test_the_example_runs_into_its_directory(tmp_path: Path) -> None:
    result = vg.main(tmp_path / "run", population=4, total_steps=20, ready_every=10)
    assert result.status == "finished"
    assert (tmp_path / "run" / "pbt.db").exists()
    assert (tmp_path / "run" / "checkpoints").is_dir()
    assert 0.0 <= result.best.metrics["mmd"] < 2.0
    assert 0.0 <= result.best.metrics["modes"] <= 8.0


def _joint_loss(model: Any, batch: Any, hp: Any) -> Any:
    return vg.g_loss(model, batch, hp) + vg.d_loss(model, batch, hp)


def test_one_loss_over_several_networks_trains_them_all_at_once(tmp_path: Path) -> None:
    joint = pv.VectorizedTrainer(
        model=vg.networks, loss=_joint_loss, data=vg.data, evaluate=vg.evaluate, optimizer="adam"
    )
    result = pv.run(
        joint,
        space=vg.SPACE,  # g_lr, d_lr: no optimizer has these names here ("G", "D")
        metric="mmd",
        mode="min",
        population=3,
        ready_every=5,
        total_steps=10,
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        exploit=pk.Truncation(0.34),
    )
    assert all("loss" in t.metrics for t in result.trials)
    best = result.best
    assert best.checkpoint is not None
    saved = _tensors(best.checkpoint)
    assert any(k.startswith("optimizers/G/") for k in saved)
    assert any(k.startswith("optimizers/D/") for k in saved)
    replayed = pk.replay(joint.train_trial, result.schedule(), checkpoint_dir=tmp_path / "again")
    assert replayed.checkpoint is not None
    theirs = _tensors(replayed.checkpoint)
    for key, value in saved.items():
        torch.testing.assert_close(value, theirs[key], **CLOSE, msg=key)
