"""pbtkit.torch.vectorized: a population trained in one process as one computation.

The optimizers over stacked tensors against torch.optim; a vectorized PBT run on a SQLite
file against the ordinary per-member loop re-training every recorded trial (exploits
included); a replay of a vectorized member with the ordinary path; a vectorized worker
against a real server on 127.0.0.1; refusals.
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
from pbtkit.controller import Controller, Lease, worker_identity
from pbtkit.core.fitness import Objective
from pbtkit.core.policy import PBT
from pbtkit.service import PBTServer, RemoteController
from pbtkit.spec import ExperimentSpec
from pbtkit.store import open_store
from pbtkit.torch._stacked import make_optimizer, torch_optimizer
from pbtkit.worker import Trial
from tests.pytorch import vector_trainers as vt

SPACE = {
    "lr": pk.LogUniform(0.01, 0.5),
    "momentum": pk.Uniform(0.0, 0.95),
    "weight_decay": pk.LogUniform(1e-5, 1e-2),
    "penalty": pk.LogUniform(1e-4, 1e-1),
}
ADAM_SPACE = {
    "lr": pk.LogUniform(1e-3, 3e-2),
    "beta1": pk.Uniform(0.8, 0.95),
    "beta2": pk.Uniform(0.9, 0.999),
    "weight_decay": pk.LogUniform(1e-5, 1e-2),
    "penalty": pk.LogUniform(1e-4, 1e-1),
}
CLOSE = {"rtol": 1e-4, "atol": 1e-5}


# the optimizers over stacked tensors ---------------------------------------------------


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_each_member_steps_as_torch_optim_would_with_its_own_values(kind: str) -> None:
    torch.manual_seed(0)
    members = 4
    shapes = {"w": (3, 5), "b": (5,)}
    start = {n: torch.randn(members, *s) for n, s in shapes.items()}
    values = [
        {"lr": 0.05 * (i + 1), "momentum": [0.0, 0.5, 0.9, 0.0][i], "weight_decay": 0.01 * i}
        | {"beta1": 0.8 + 0.05 * i, "beta2": 0.99 - 0.02 * i, "eps": 1e-8}
        for i in range(members)
    ]
    grads = [{n: torch.randn(members, *s) for n, s in shapes.items()} for _ in range(6)]
    params = {n: t.clone() for n, t in start.items()}
    stacked = make_optimizer(kind, params)
    hp = {k: torch.tensor([v[k] for v in values]) for k in values[0]}
    for g in grads:
        stacked.step(params, g, hp)
    stacked.settle(hp)  # as the trainer does at the end of a trial
    if kind == "sgd":  # no buffer where torch keeps none (momentum 0)
        assert not stacked.moments["w"]["momentum_buffer"][0].any()
        assert stacked.moments["w"]["momentum_buffer"][1].any()
    for i in range(members):
        own = [torch.nn.Parameter(start[n][i].clone()) for n in shapes]
        opt = torch_optimizer(kind, own, values[i])
        for g in grads:
            for p, n in zip(own, shapes, strict=True):
                p.grad = g[n][i].clone()
            opt.step()
        for p, n in zip(own, shapes, strict=True):
            torch.testing.assert_close(params[n][i], p.detach(), **CLOSE)
        # The member's state, in torch.optim's form, continues exactly in torch.optim.
        restored = [torch.nn.Parameter(params[n][i].clone()) for n in shapes]
        again = torch_optimizer(kind, restored, values[i])
        again.load_state_dict(
            {"state": stacked.member_state(i), "param_groups": again.state_dict()["param_groups"]}
        )
        for p, n in zip(own + restored, list(shapes) * 2, strict=True):
            p.grad = grads[0][n][i].clone()
        opt.step()
        again.step()
        for a, b in zip(own, restored, strict=True):
            torch.testing.assert_close(a.detach(), b.detach(), **CLOSE)
    # Different values really were in force: members with the same start would differ.
    assert not torch.allclose(params["w"][0], params["w"][1])


# a vectorized run against the ordinary loop ---------------------------------------------


def _sequential(result: pk.Result, trainer: pv.VectorizedTrainer, where: Path) -> dict[int, Any]:
    """Every recorded trial re-trained by the ordinary per-member loop, each from the
    sequential checkpoint of its own parent; trial id -> (checkpoint dir, reports)."""
    out: dict[int, Any] = {}
    for record in sorted(result.trials, key=lambda t: t.id):
        assert record.status == "done", record
        parent = None if record.parent_id is None else out[record.parent_id][0]
        lease = Lease(record, result.name, "accuracy", str(where), None, None, 0.0)
        staging = where / f"trial-{record.id}"
        staging.mkdir(parents=True)
        trial = Trial(lease, staging, parent)
        trainer.train_trial(trial)
        out[record.id] = (
            staging,
            {k: v for m in trial._take_reports() for k, v in m.metrics.items()},
        )
    return out


def _tensors(directory: Path | str) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(Path(directory) / pt.TENSOR_FILE))


@pytest.mark.parametrize(
    ("trainer", "space"), [(vt.SGD, SPACE), (vt.ADAM, ADAM_SPACE)], ids=["sgd", "adam"]
)
@pytest.mark.parametrize("evolution", ["async", "generational"])
def test_a_vectorized_run_gives_the_weights_of_the_per_member_loop(
    tmp_path: Path, trainer: pv.VectorizedTrainer, space: dict[str, Any], evolution: str
) -> None:
    result = pv.run(
        trainer,
        space=space,
        metric="accuracy",
        population=4,
        ready_every=5,
        total_steps=20,
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        exploit=pk.Truncation(0.25),
        evolution=evolution,  # type: ignore[arg-type]
        seed=3,
    )
    assert result.status == "finished"
    assert all(m.step == 20 for m in result.members)
    exploits = [e for e in result.events if e.kind == "exploit"]
    assert exploits, "the run must exploit for this test to mean anything"
    sequential = _sequential(result, trainer, tmp_path / "sequential")
    for trial in result.trials:  # what each trial reported, checkpoints aside
        _, reports = sequential[trial.id]
        assert trial.metrics["val_loss"] == pytest.approx(reports["val_loss"], rel=1e-4)
    for member in result.members:
        assert member.checkpoint is not None
        latest = next(
            t
            for t in result.trials
            if t.checkpoint and Path(member.checkpoint).name in t.checkpoint
        )
        vectorized, ordinary = _tensors(member.checkpoint), _tensors(sequential[latest.id][0])
        assert vectorized.keys() == ordinary.keys()  # weights and optimizer moments alike
        for key, value in vectorized.items():
            torch.testing.assert_close(value, ordinary[key], **CLOSE, msg=key)
        # An ordinary checkpoint: pbtkit.torch.load reads it into a module and a
        # torch.optim optimizer, with the member's own hyperparameters in force.
        model = vt.mlp()
        values = trainer.hparams(member.hparams)
        optimizer = torch_optimizer(trainer.optimizer, model.parameters(), values)
        pt.load(member.checkpoint, model=model, optimizer=optimizer, hparams=values)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(member.hparams["lr"])
        assert optimizer.state, "the optimizer state was saved with the weights"


def test_a_vectorized_member_replays_on_the_ordinary_path(tmp_path: Path) -> None:
    result = pv.run(
        vt.SGD,
        space=SPACE,
        metric="accuracy",
        population=4,
        ready_every=5,
        total_steps=15,
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        exploit=pk.Truncation(0.25),
        seed=5,
    )
    best = result.best
    assert best.checkpoint is not None
    replayed = pk.replay(vt.SGD.train_trial, result.schedule(), checkpoint_dir=tmp_path / "again")
    assert replayed.checkpoint is not None
    mine, theirs = _tensors(best.checkpoint), _tensors(replayed.checkpoint)
    weights = [k for k in mine if k.startswith("models/")]
    assert weights
    for key in weights:
        torch.testing.assert_close(mine[key], theirs[key], **CLOSE, msg=key)


def _server_spec(population: int) -> ExperimentSpec:
    return ExperimentSpec(
        space=pk.SearchSpace(SPACE),
        policy=PBT(
            objective=Objective("accuracy", "max"),
            exploit=pk.Truncation(0.25),
            ready_every=5,
            total_steps=15,
        ),
        population=population,
        checkpoint_root="/tmp/pbtkit-test-unused",  # the server substitutes its own root
    )


def test_a_vectorized_worker_trains_a_population_through_a_server(tmp_path: Path) -> None:
    with (
        PBTServer(
            0, "k", storage=f"sqlite:///{tmp_path / 'pbt.db'}", checkpoint_root=tmp_path / "ckpt"
        ) as server,
        RemoteController(server.url, "k", max_outage=0) as remote,
    ):
        remote.create("v", _server_spec(6))
        done = pv.run_vectorized_worker(remote, "v", vt.SGD, worker_identity("vec"))
        snapshot = remote.snapshot("v")
    assert done == 18  # 6 members x 3 trials, every one in a batch
    assert snapshot.experiment.status == "finished"
    assert {m.step for m in snapshot.members} == {15}
    assert any(e.kind == "exploit" for e in snapshot.events)
    assert {t.lease_owner for t in snapshot.trials} == {None}
    for member in snapshot.members:
        assert member.checkpoint is not None
        model = vt.mlp()
        pt.load(tmp_path / "ckpt" / member.checkpoint, model=model)


def test_a_hyperparameter_that_is_not_a_number_is_refused(tmp_path: Path) -> None:
    with pytest.raises(pk.ConfigError, match=r"'act' = '(tanh|relu)' is not a number"):
        pv.run(
            vt.SGD,
            space={**SPACE, "act": pk.Choice(["tanh", "relu"])},
            metric="accuracy",
            population=2,
            ready_every=5,
            total_steps=10,
            storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        )


def test_bad_settings_are_refused() -> None:
    with pytest.raises(pk.ConfigError, match="optimizer must be one of sgd, adam, adamw"):
        pv.VectorizedTrainer(model=vt.mlp, loss=vt.loss, data=vt.data, optimizer="lbfgs")
    with pytest.raises(pk.ConfigError, match="sgd does not take"):
        pv.VectorizedTrainer(model=vt.mlp, loss=vt.loss, data=vt.data, defaults={"beta1": 0.9})


def test_an_objective_never_reported_is_refused_with_its_name(tmp_path: Path) -> None:
    quiet = pv.VectorizedTrainer(model=vt.mlp, loss=vt.loss, data=vt.data)
    with pytest.raises(pk.ConfigError, match=r"objective needs \['accuracy'\]"):
        pv.run(
            quiet,
            space=SPACE,
            metric="accuracy",
            population=2,
            ready_every=5,
            total_steps=10,
            storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        )


def _exploding_loss(model: Any, batch: Any, hp: Any) -> Any:
    raise RuntimeError("the loss exploded")


def test_a_failing_loss_gives_the_trials_back_and_the_run_says_why(tmp_path: Path) -> None:
    broken = pv.VectorizedTrainer(model=vt.mlp, loss=_exploding_loss, data=vt.data)
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    with pytest.raises(pk.PBTError, match="the loss exploded"):
        pv.run(
            broken,
            space=SPACE,
            metric="accuracy",
            population=2,
            ready_every=5,
            total_steps=10,
            storage=storage,
            name="broken",
        )
    with open_store(storage) as store:
        result = pk.Result(Controller(store), "broken")
        events, trials = result.events, result.trials
    retried = [e for e in events if e.kind == "retry"]
    assert retried, "each failure is given back as an attempt, as any worker's"
    assert all(t.status != "running" for t in trials)


def test_a_failed_save_leaves_no_committed_checkpoint_of_its_batch(tmp_path: Path) -> None:
    # Members are saved by several threads; when one fails, the others' committed
    # checkpoints would be recorded nowhere: they are removed, and the error raised.
    from types import SimpleNamespace

    from pbtkit.checkpoints import open_checkpoints
    from pbtkit.checkpoints._manifest import MANIFEST
    from pbtkit.torch._vector_worker import _save_all

    checkpoints = open_checkpoints(tmp_path / "ckpt")

    class Population:
        def __init__(self, fail_at: int | None) -> None:
            self.fail_at = fail_at

        def save(self, slot: int, trial: Any) -> None:
            if slot == self.fail_at:
                raise OSError("disk full")
            (trial.checkpoint_dir / "weights.bin").write_bytes(b"x" * 10)

    def batch(first: int) -> list[Any]:
        return [
            SimpleNamespace(
                checkpoint_dir=checkpoints.staging_dir("e", first + i),
                trial_id=first + i,
                attempt=1,
            )
            for i in range(8)
        ]

    leases = [SimpleNamespace(experiment="e")] * 8
    with pytest.raises(OSError, match="disk full"):
        _save_all(Population(5), checkpoints, batch(0), leases)  # type: ignore[arg-type]
    assert not list((tmp_path / "ckpt").rglob(MANIFEST))
    # The same batch with nothing failing commits every member.
    names = _save_all(Population(None), checkpoints, batch(10), leases)  # type: ignore[arg-type]
    assert all(names)
    assert len(set(names)) == 8
    assert len(list((tmp_path / "ckpt").rglob(MANIFEST))) == 8
