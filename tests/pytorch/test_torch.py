"""pbtkit.torch: safe checkpoints, hyperparameters put in force, shrink-and-perturb."""

from __future__ import annotations

import math
import pickle
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import pbtkit as pk  # noqa: E402
import pbtkit.torch as pt  # noqa: E402
from pbtkit.controller import Lease  # noqa: E402
from pbtkit.core.inheritance import inherit_seed  # noqa: E402
from pbtkit.store import TrialRecord  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _net(width: int = 8) -> nn.Module:
    torch.manual_seed(width)
    return nn.Sequential(nn.Linear(4, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, 2))


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 3, sched: Any = None) -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(16, 4, generator=gen)).pow(2).mean().backward()
        opt.step()
        if sched is not None:
            sched.step()


def _trial(
    tmp_path: Path,
    hparams: dict[str, Any],
    parent: Path | None,
    *,
    donor: int | None = None,
    inherit: dict[str, Any] | None = None,
    trial_id: int = 7,
) -> pk.Trial:
    record = TrialRecord(
        id=trial_id,
        experiment_id=1,
        member=0,
        generation=1,
        hparams=hparams,
        parent_id=3 if parent else None,
        start_step=10,
        end_step=20,
        inherit=inherit,
    )
    lease = Lease(record, "e", "score", str(tmp_path), None, donor, 0.0)
    out = tmp_path / f"out-{trial_id}"
    out.mkdir(exist_ok=True)
    return pk.Trial(lease, out, parent, device="cpu")


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), key
        elif isinstance(value, dict):
            _same_state(value, b[key])
        else:
            assert value == b[key], key


# the format ------------------------------------------------------------------------------
def test_a_round_trip_restores_models_optimizers_schedulers_scalers_and_extras(
    tmp_path: Path,
) -> None:
    model = _net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    _train(model, opt, 5, sched)
    extra = {
        "step": 5,
        "rng": torch.get_rng_state(),
        "history": np.arange(4.0),
        "pairs": {(1, 2): "a", 3: (1.5, float("inf"))},
        "note": None,
    }
    where = pt.save(
        tmp_path / "ck", model=model, optimizer=opt, scheduler=sched, scaler=scaler, **extra
    )
    assert sorted(p.name for p in where.iterdir()) == [pt.STATE_FILE, pt.TENSOR_FILE]

    torch.manual_seed(99)
    model2 = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
    opt2 = torch.optim.AdamW(model2.parameters(), lr=5.0)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=2, gamma=0.5)
    scaler2 = torch.amp.GradScaler("cpu")
    got = pt.load(where, model=model2, optimizer=opt2, scheduler=sched2, scaler=scaler2)
    _same_state(model.state_dict(), model2.state_dict())
    _same_state(opt.state_dict(), opt2.state_dict())
    assert sched2.state_dict() == sched.state_dict()
    assert scaler2.get_scale() == 1024.0
    assert got["step"] == 5
    assert got["note"] is None
    assert torch.equal(got["rng"], extra["rng"])
    assert isinstance(got["history"], np.ndarray)
    assert np.array_equal(got["history"], extra["history"])
    assert got["pairs"] == {(1, 2): "a", 3: (1.5, math.inf)}
    # the restored optimizer trains on exactly as the original
    _train(model, opt, 2)
    _train(model2, opt2, 2)
    _same_state(model.state_dict(), model2.state_dict())


def test_tied_weights_and_views_are_saved_and_loaded(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
    model[1].weight = model[0].weight  # tied, as in language models
    pt.save(tmp_path / "ck", model=model, view=model[0].weight[1:3])
    fresh = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
    fresh[1].weight = fresh[0].weight
    extra = pt.load(tmp_path / "ck", model=fresh)
    assert torch.equal(fresh[0].weight, model[0].weight)
    assert torch.equal(extra["view"], model[0].weight[1:3])


def test_values_that_would_need_pickle_are_refused_when_saving(tmp_path: Path) -> None:
    with pytest.raises(pk.ConfigError, match=r"cannot save extra/fn: a builtins.function"):
        pt.save(tmp_path / "ck", fn=lambda: 1)
    with pytest.raises(pk.ConfigError, match="numpy array of Python objects"):
        pt.save(tmp_path / "ck", arr=np.array([object()]))


def test_loading_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _train(model, opt)
    pt.save(tmp_path / "ck", model=model, optimizer=opt, step=3)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    model2 = _net()
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.5)
    assert pt.load(tmp_path / "ck", model=model2, optimizer=opt2) == {"step": 3}
    _same_state(model.state_dict(), model2.state_dict())


def test_the_torch_modules_contain_no_pickle_and_no_torch_load() -> None:
    pytest.importorskip("lightning")
    import pbtkit.lightning

    for module in (pt, pt._state, pt._hparams, pbtkit.lightning):
        text = Path(str(module.__file__)).read_text()
        assert "import pickle" not in text, module
        assert "torch.load(" not in text, module


def test_the_tensor_file_is_as_readable_as_the_json(tmp_path: Path) -> None:
    where = pt.save(tmp_path / "ck", model=_net())
    modes = {
        stat.S_IMODE((where / name).stat().st_mode) for name in (pt.STATE_FILE, pt.TENSOR_FILE)
    }
    assert len(modes) == 1


def test_a_directory_without_a_checkpoint_is_explained(tmp_path: Path) -> None:
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "model.pt").write_bytes(b"x")
    with pytest.raises(pk.CheckpointError, match=r"holds no pbtkit.torch checkpoint.*model.pt"):
        pt.load(tmp_path / "ck", model=_net())


def test_a_model_the_checkpoint_lacks_is_named(tmp_path: Path) -> None:
    pt.save(tmp_path / "ck", model={"G": _net(), "D": _net()})
    with pytest.raises(
        pk.CheckpointError, match=r"no model named 'model' \(its models: 'G', 'D'\)"
    ):
        pt.load(tmp_path / "ck", model=_net())


def test_without_torch_the_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import pbtkit.torch\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert "ConfigError" in out.stdout
    assert "pip install 'pbtkit[torch]'" in out.stdout


# the explored values in force ------------------------------------------------------------
def _donor(tmp_path: Path, **hparams: Any) -> Path:
    model = _net()
    opt = torch.optim.SGD(model.parameters(), **hparams)
    _train(model, opt)
    return pt.save(tmp_path / "donor", model=model, optimizer=opt, hparams=hparams)


def test_the_naive_load_state_dict_keeps_the_donors_values_and_load_writes_the_trials(
    tmp_path: Path,
) -> None:
    donor = _donor(tmp_path, lr=0.1, momentum=0.9, weight_decay=1e-4)
    explored = {"lr": 0.08, "momentum": 0.95, "weight_decay": 2e-4, "dropout": 0.3}
    # The trap: build the optimizer with the explored values, then load the donor's state.
    naive_model = _net()
    naive = torch.optim.SGD(naive_model.parameters(), lr=0.08, momentum=0.95, weight_decay=2e-4)
    state = pt._read(donor, "donor")[1].decode(pt._read(donor, "donor")[0]["optimizers"])
    naive.load_state_dict(state["optimizer"])
    assert naive.param_groups[0]["lr"] == 0.1  # the donor's: the explore step is lost
    # pbtkit.torch.load puts the trial's values in force
    trial = _trial(tmp_path, explored, donor, donor=2)
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.08, momentum=0.95, weight_decay=2e-4)
    pt.load(trial, model=model, optimizer=opt)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.08, 0.95, 2e-4)
    assert opt.state_dict()["state"], "the donor's momentum buffers are loaded"


def test_adam_betas_eps_and_named_hyperparameters(tmp_path: Path) -> None:
    model = _net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    written = pt.apply_hparams(
        opt, {"lr": 2e-3, "beta1": 0.8, "eps": 1e-6, "width": 64}, param_map=None
    )
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"]) == (2e-3, (0.8, 0.999), 1e-6)
    assert set(written) == {"lr", "beta1", "eps"}  # width is the model's business
    pt.apply_hparams(opt, {"betas": [0.7, 0.98]})
    assert group["betas"] == (0.7, 0.98)
    pt.apply_hparams(opt, {"b2": 0.95}, param_map={"b2": ("betas", 1)})
    assert group["betas"][1] == 0.95


def test_two_optimizers_by_name_and_by_map(tmp_path: Path) -> None:
    g, d = _net(), _net()
    opts = {
        "G": torch.optim.Adam(g.parameters(), lr=1e-4),
        "D": torch.optim.Adam(d.parameters(), lr=4e-4),
    }
    pt.apply_hparams(
        opts, {"G_lr": 2e-4, "D_beta1": 0.5, "lr_d": 1e-3}, param_map={"lr_d": ("D", "lr")}
    )
    assert opts["G"].param_groups[0]["lr"] == 2e-4
    assert opts["D"].param_groups[0]["lr"] == 1e-3
    assert opts["D"].param_groups[0]["betas"][0] == 0.5
    assert opts["G"].param_groups[0]["betas"][0] == 0.9
    pt.apply_hparams(opts, {"glr": 3e-4}, param_map={"glr": ("G", "lr")})
    assert opts["G"].param_groups[0]["lr"] == 3e-4
    pt.apply_hparams(opts, {"lr": 5e-4}, param_map={"lr": None})  # None: leave it alone
    assert opts["G"].param_groups[0]["lr"] == 3e-4


def test_param_target_picks_param_groups() -> None:
    model = _net()
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.01},
            {"params": model[3].parameters(), "lr": 0.1},
        ],
        lr=0.1,
    )
    pt.apply_hparams(
        opt, {"head_lr": 0.5}, param_map={"head_lr": pt.ParamTarget("lr", groups=(1,))}
    )
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.5]


@pytest.mark.parametrize(
    ("param_map", "message"),
    [
        ({"x": ("H", "lr")}, "names optimizer 'H'; the optimizers are 'G'"),
        ({"x": ("G", "betas")}, "has no 'betas'"),
        ({"x": "nesterov_typo"}, "no param group of 'G' has that key"),
        ({"x": ("lr", "G", "zzz")}, "give a param-group key"),
        ({"x": pt.ParamTarget("lr", groups=(3,))}, "has 1 param groups, no group 3"),
    ],
)
def test_a_wrong_param_map_is_explained(param_map: dict[str, Any], message: str) -> None:
    opt = {"G": torch.optim.SGD(_net().parameters(), lr=0.1)}
    with pytest.raises(pk.ConfigError) as info:
        pt.apply_hparams(opt, {"x": 0.5}, param_map=param_map)
    assert message in str(info.value)


def test_with_a_scheduler_lr_is_the_schedules_base(tmp_path: Path) -> None:
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    _train(model, opt, 5, sched)  # 5 epochs: lr = 0.1 * 0.5**2
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)
    donor = pt.save(tmp_path / "ck", model=model, optimizer=opt, scheduler=sched)
    model2 = _net()
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.2)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=2, gamma=0.5)
    pt.load(donor, model=model2, optimizer=opt2, scheduler=sched2, hparams={"lr": 0.2})
    assert sched2.base_lrs == [0.2]
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.05)  # the same point of the schedule
    _train(model2, opt2, 1, sched2)  # epoch 6: 0.2 * 0.5**3
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.025)


def test_one_cycle_scales_its_maximum_and_minimum() -> None:
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    _train(model, opt, 3, sched)
    before = opt.param_groups[0]["lr"]
    pt.apply_hparams(opt, {"lr": 0.08}, scheduler=sched)  # base was 1.0 / 25 = 0.04
    group = opt.param_groups[0]
    assert group["initial_lr"] == pytest.approx(0.08)
    assert group["max_lr"] == pytest.approx(2.0)
    assert group["lr"] == pytest.approx(2 * before)


def test_sequential_schedulers_get_the_new_base() -> None:
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=2)
    decay = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    seq = torch.optim.lr_scheduler.SequentialLR(opt, [warm, decay], milestones=[2])
    pt.apply_hparams(opt, {"lr": 0.3}, scheduler=seq)
    assert warm.base_lrs == [pytest.approx(0.3)]
    assert decay.base_lrs == [pytest.approx(0.3)]


# architecture changes --------------------------------------------------------------------
def test_a_donor_tensor_of_another_shape_is_refused_with_advice(tmp_path: Path) -> None:
    donor = pt.save(tmp_path / "ck", model=_net(16), hparams={"width": 16, "lr": 0.1})
    trial = _trial(tmp_path, {"width": 8, "lr": 0.1}, donor, donor=4)
    with pytest.raises(pk.CheckpointError) as info:
        pt.load(trial, model=_net(8))
    text = str(info.value)
    assert "tensor '0.weight' has shape (16, 4) in the checkpoint but (8, 4) in this model" in text
    assert "donor member 4" in text
    assert "not perturbed" in text
    assert "saved_hparams" in text
    assert "width (16 there, 8 here)" in text
    assert pt.saved_hparams(trial) == {"width": 16, "lr": 0.1}
    pt.load(trial, model=_net(pt.saved_hparams(trial)["width"]))  # rebuilt: it fits


# inheritance -----------------------------------------------------------------------------
def test_shrink_perturb_moves_the_donors_weights_and_restarts_the_optimizer_state(
    tmp_path: Path,
) -> None:
    donor_model = _net()
    donor_opt = torch.optim.SGD(donor_model.parameters(), lr=0.1, momentum=0.9)
    _train(donor_model, donor_opt)
    donor = pt.save(tmp_path / "ck", model=donor_model, optimizer=donor_opt)
    inherit = {"mode": "shrink_perturb", "shrink": 0.5, "noise": 0.01}
    trial = _trial(tmp_path, {"lr": 0.05, "momentum": 0.8}, donor, donor=1, inherit=inherit)
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.8)
    pt.load(trial, model=model, optimizer=opt)
    gen = torch.Generator().manual_seed(inherit_seed(trial.trial_id))
    for (name, got), (_, was) in zip(
        sorted(model.named_parameters()), sorted(donor_model.named_parameters()), strict=True
    ):
        expected = 0.5 * was + 0.01 * torch.randn(was.shape, generator=gen)
        assert torch.allclose(got, expected), name
    # buffers are the donor's as they were: noise could make a variance negative
    assert torch.equal(model[1].running_var, donor_model[1].running_var)
    assert opt.state_dict()["state"] == {}  # the momentum of the unshrunk weights is dropped
    assert (opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]) == (0.05, 0.8)
    # a retry of the same trial starts from the same weights
    again = _net()
    pt.load(trial, model=again, optimizer=torch.optim.SGD(again.parameters(), lr=0.05))
    _same_state(model.state_dict(), again.state_dict())
    # optimizer_state="load" keeps the buffers anyway
    kept = torch.optim.SGD(_net().parameters(), lr=0.05, momentum=0.8)
    pt.load(trial, model=_net(), optimizer=kept, optimizer_state="load")
    assert kept.state_dict()["state"]


def test_torch_shrink_perturb_keeps_tensors_and_dtypes() -> None:
    state = {"w": torch.ones(3, dtype=torch.float64), "n": torch.tensor(5), "s": "x"}
    out = pt.shrink_perturb(state, 0.5, 0.0)
    assert torch.equal(out["w"], torch.full((3,), 0.5, dtype=torch.float64))
    assert torch.equal(out["n"], torch.tensor(5))
    assert out["s"] == "x"
    assert torch.equal(state["w"], torch.ones(3, dtype=torch.float64))  # input untouched
    a = pt.shrink_perturb(state, 0.5, 0.1, seed=3)["w"]
    b = pt.shrink_perturb(state, 0.5, 0.1, seed=3)["w"]
    assert torch.equal(a, b)
    assert not torch.equal(a, out["w"])
    with pytest.raises(pk.ConfigError, match="shrink must be a number in"):
        pt.shrink_perturb(state, 2.0, 0.1)


def test_numpy_shrink_perturb_refuses_tensors_and_trial_inherited_keeps_them(
    tmp_path: Path,
) -> None:
    with pytest.raises(pk.ConfigError, match=r"pbtkit\.torch\.shrink_perturb"):
        pk.shrink_perturb({"w": torch.ones(2)}, 0.5, 0.1, np.random.default_rng(0))
    inherit = {"mode": "shrink_perturb", "shrink": 0.5, "noise": 0.0}
    trial = _trial(tmp_path, {}, None, donor=1, inherit=inherit)
    out = trial.inherited({"w": torch.ones(2)})
    assert isinstance(out["w"], torch.Tensor)
    assert torch.equal(out["w"], torch.full((2,), 0.5))


# glass box -------------------------------------------------------------------------------
def test_paths_work_for_glass_box_loops(tmp_path: Path) -> None:
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    assert pt.load(None, model=model, optimizer=opt, hparams={"lr": 0.3}) == {}
    assert opt.param_groups[0]["lr"] == 0.3  # in force even without a checkpoint
    path = pt.save(str(tmp_path / "member0-epoch3"), model=model, optimizer=opt, epoch=3)
    opt2 = torch.optim.SGD(_net().parameters(), lr=0.1, momentum=0.5)
    assert pt.load(str(path), model=_net(), optimizer=opt2, hparams={"momentum": 0.7}) == {
        "epoch": 3
    }
    assert (opt2.param_groups[0]["lr"], opt2.param_groups[0]["momentum"]) == (0.3, 0.7)


def test_extra_tensors_go_to_the_device_asked_for(tmp_path: Path) -> None:
    pt.save(tmp_path / "ck", t=torch.ones(2))
    assert pt.load(tmp_path / "ck", device="cpu")["t"].device.type == "cpu"
    assert pt.load(tmp_path / "ck", device="meta")["t"].device.type == "meta"


def test_the_module_imports_nothing_heavy_at_import_of_pbtkit() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sys, pbtkit; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "False"
