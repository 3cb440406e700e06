"""A whole population in one process: members stacked and trained as one computation.

For small models a process per member wastes the machine: each step is too small to fill
even one core, let alone a GPU. Here one worker leases every member that is ready
(:meth:`~pbtkit.controller.ControllerAPI.lease_batch`), stacks their parameters into one
tensor ``[P, ...]`` per parameter, and trains them in lockstep through
``torch.func.functional_call`` under ``torch.func.vmap``, each member with its own
hyperparameters as tensors: the optimizers of :mod:`pbtkit.torch._stacked` step member
``i`` with its own learning rate, momentum, weight decay and betas, and the loss receives
every hyperparameter (a dropout rate, an entropy coefficient) as a per-member tensor.

::

    import pbtkit.torch.vectorized as pv

    def loss(model, batch, hp):                   # model: this member's forward
        x, y = batch
        return F.cross_entropy(model(x), y) + hp["l2"] * 0.0

    trainer = pv.VectorizedTrainer(
        model=lambda: nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)),
        loss=loss,
        data=lambda step: batches[step % len(batches)],  # the batch of a step, shared
        evaluate=lambda model, hp: {"accuracy": (model(xv).argmax(1) == yv).float().mean()},
        optimizer="sgd",                          # or "adam", "adamw"
    )
    result = pv.run(trainer, space={"lr": pk.LogUniform(1e-3, 0.5)}, metric="accuracy",
                    population=32, ready_every=50, total_steps=500)

Several networks, each with its own optimizer and loss (a GAN): ``model`` returns
``{"G": generator, "D": discriminator}``, ``loss`` is ``{"D": d_loss, "G": g_loss}``,
stepped in that order (each loss's gradient with respect to its own network only, the
next loss seeing the updated weights), and the loss receives ``model`` as a mapping
name -> forward. ``optimizer_names={"G": "g", "D": "d"}`` names the optimizers as
:func:`pbtkit.torch.load` does, so ``g_lr`` is the generator's learning rate and a bare
``beta1`` both optimizers'; :mod:`pbtkit.examples.vectorized_gan` is the example.

Everything downstream sees ordinary members. Decisions come from the same policy and go
to the same store (trials, reports, events), and each member's checkpoint is committed at
each ready point as its own slice, written by :func:`pbtkit.torch.save` with a real
``torch.optim`` state: :func:`pbtkit.torch.load` reads it, so export, replay and a run of
the ordinary per-member path (:meth:`VectorizedTrainer.train_trial`, a ``train`` function
for :func:`pbtkit.run`) continue from it. An exploit whose donor trained in this process
is copied in memory (weights and optimizer state, one ``index_select``); others are read
from the checkpoint.

Which hyperparameters can be vectorized: numbers. The architecture cannot depend on a
hyperparameter (the model factory takes none, so members always stack), and the data of
a step is shared by every member (``data(step)``), so a batch size is not per member; a
hyperparameter that is not a number (a categorical string) is refused with a message,
since grouping members by it would split the one computation this module exists for.
Models whose buffers change while training (batch norm's running statistics) are not
supported under ``vmap``; layer norm and dropout are (dropout with
``randomness="different"``).

Needs ``pip install 'pbtkit[torch]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pbtkit._exceptions import ConfigError
from pbtkit.api import _checkpoint_root as checkpoint_root  # pbtkit.run's rule, shared
from pbtkit.api import raise_if_failed
from pbtkit.controller import (
    Controller,
    worker_identity,
)
from pbtkit.core.exploit import Exploiter, Truncation
from pbtkit.core.explore import Explorer, Perturb
from pbtkit.core.fitness import Fitness, Objective
from pbtkit.core.policy import PBT
from pbtkit.core.space import Domain, SearchSpace
from pbtkit.result import Result
from pbtkit.spec import ExperimentSpec, check_experiment_name
from pbtkit.store import normalize_url, open_store
from pbtkit.worker import Trial

try:
    import torch
    from torch import nn
except ImportError as _missing:  # pragma: no cover - depends on the environment
    raise ConfigError(
        f"pbtkit.torch.vectorized needs PyTorch ({_missing}): pip install 'pbtkit[torch]'"
    ) from _missing

import pbtkit.torch as pt
from pbtkit.torch._stacked import DEFAULTS, OPTIMIZERS, torch_optimizer
from pbtkit.torch._vector_worker import run_vectorized_worker

__all__ = ["Layout", "VectorizedTrainer", "run", "run_vectorized_worker"]

ModelCall = Callable[..., Any]
#: ``loss(model, batch, hparams) -> 0-d tensor``; ``model`` is one forward, or a mapping
#: network name -> forward when the model factory returns several networks.
LossFn = Callable[[Any, Any, Mapping[str, torch.Tensor]], torch.Tensor]
EvalFn = Callable[[Any, Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]]
Networks = nn.Module | Mapping[str, nn.Module]

_SINGLE = "model"  # the network's name in a checkpoint when there is one (pbtkit.torch's)
_SINGLE_OPTIMIZER = "optimizer"


@dataclass(frozen=True, slots=True)
class Layout:
    """How a trainer's networks are trained: which optimizer each has and the losses in
    the order they are stepped (built by :meth:`VectorizedTrainer.layout`).

    Attributes:
        single: The model factory returns one module (the loss gets one forward).
        optimizers: Network name -> its optimizer's name (the name in a checkpoint and
            the prefix of its hyperparameters: ``g`` takes ``g_lr``).
        stages: ``(loss name, loss, networks it trains)`` in the order they are stepped.
    """

    single: bool
    optimizers: Mapping[str, str]
    stages: tuple[tuple[str, LossFn, tuple[str, ...]], ...]

    def networks(self, built: Networks) -> dict[str, nn.Module]:
        """The model factory's result as a mapping by network name."""
        return {_SINGLE: built} if isinstance(built, nn.Module) else dict(built)

    def calls(self, forwards: Mapping[str, ModelCall]) -> Any:
        """What the loss and ``evaluate`` receive as ``model``: the one forward, or the
        mapping network name -> forward."""
        return forwards[_SINGLE] if self.single else dict(forwards)

    def report_name(self, stage: str) -> str:
        """The metric a stage's loss is reported as: ``loss``, or ``<name>_loss``."""
        return "loss" if len(self.stages) == 1 else f"{stage}_loss"


@dataclass(frozen=True, slots=True)
class VectorizedTrainer:
    """What to train, the same for every member (see the module docstring).

    Attributes:
        model: Builds one member's network, or several as a mapping name -> module
            (``{"G": generator, "D": discriminator}``); called under a seed of its own
            per member (``seed`` and the member's index), so a member starts from the
            same weights in the vectorized and the per-member path.
        loss: ``loss(model, batch, hparams) -> scalar tensor``: ``model`` is this
            member's forward (with several networks, a mapping name -> forward),
            ``hparams`` its hyperparameters as 0-d tensors (the optimizer's included).
            With several networks, a mapping network name -> loss trains them in turn,
            in the mapping's order, each loss's gradient taken with respect to its own
            network only and stepped by that network's optimizer (a GAN's
            ``{"D": d_loss, "G": g_loss}``: the discriminator step, then the generator
            step against the updated discriminator); one loss trains every network at
            once.
        data: ``data(step)``: the batch of a step, the same for every member (on the
            device already).
        evaluate: ``evaluate(model, hparams) -> {metric: 0-d tensor}`` at the end of each
            trial (the objective usually comes from here); None reports the loss only.
        optimizer: ``"sgd"`` (momentum, weight decay), ``"adam"`` or ``"adamw"``, every
            network's; its hyperparameters are read from each member's hyperparameters by
            the names of :data:`pbtkit.torch._stacked.DEFAULTS` (``lr``, ``momentum``,
            ``weight_decay``, ``beta1``, ``beta2``, ``eps``), else from ``defaults``. With
            several networks, the rule of :func:`pbtkit.torch.apply_hparams`:
            ``<optimizer>_<name>`` (``g_lr``) is one optimizer's, a bare name every
            optimizer's, and the prefixed one wins where both are given.
        optimizer_names: Network name -> its optimizer's name (``{"G": "g", "D": "d"}``);
            by default each network's own name (``"optimizer"`` with one network).
        defaults: Optimizer values for the names the search space does not tune (bare or
            prefixed by an optimizer's name).
        seed: Seeds each member's initial weights.
        device: Where the population trains (``"cpu"``, ``"cuda:0"``).
        randomness: ``vmap``'s: ``"error"`` (default; a model with dropout must choose),
            ``"different"`` (each member its own dropout masks) or ``"same"``.
        report_every: Report the loss every this many steps (0: at each trial's last
            step only).
    """

    model: Callable[[], Networks]
    loss: LossFn | Mapping[str, LossFn]
    data: Callable[[int], Any]
    evaluate: EvalFn | None = None
    optimizer: str = "sgd"
    optimizer_names: Mapping[str, str] | None = None
    defaults: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    randomness: Literal["error", "different", "same"] = "error"
    report_every: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        unknown = self._stray_defaults(None)
        if unknown:
            raise ConfigError(
                f"defaults names {unknown}, which {self.optimizer} does not take; its "
                f"hyperparameters are {sorted(DEFAULTS[self.optimizer])} (or <optimizer>_<name>)"
            )
        if self.randomness not in ("error", "different", "same"):
            raise ConfigError(
                f"randomness must be 'error', 'different' or 'same', got {self.randomness!r}"
            )
        if isinstance(self.report_every, bool) or not isinstance(self.report_every, int):
            raise ConfigError(f"report_every must be an integer, got {self.report_every!r}")
        if isinstance(self.loss, Mapping) and not self.loss:
            raise ConfigError("loss is an empty mapping: give one loss per network")

    # one member, the ordinary way --------------------------------------------------

    def initial_model(self, member: int) -> Networks:
        """Member ``member``'s network (or networks) as it starts, on :attr:`device`."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + member)
            built = self.model()
            if isinstance(built, nn.Module):
                return built.to(self.device)
            return {name: net.to(self.device) for name, net in built.items()}

    def layout(self, built: Networks) -> Layout:
        """Check the model factory's result against the loss and the optimizer names.

        Raises:
            ConfigError: The model is neither a module nor a mapping of modules, a loss
                names a network the model does not have, a network has no loss, or the
                optimizer names do not fit the networks.
        """
        single = isinstance(built, nn.Module)
        if not single and not (
            isinstance(built, Mapping)
            and built
            and all(isinstance(n, nn.Module) for n in built.values())
        ):
            raise ConfigError(
                f"model() must return an nn.Module or a mapping name -> nn.Module, got "
                f"{type(built).__name__}"
            )
        networks = [_SINGLE] if single else list(built)  # type: ignore[arg-type]
        for name in networks:
            if not isinstance(name, str) or not name or "/" in name:
                raise ConfigError(f"network names must be strings without '/', got {name!r}")
        if isinstance(self.loss, Mapping):
            if single:
                raise ConfigError(
                    "loss is a mapping by network name, but model() returns one module: give "
                    "one loss, or return the networks as a mapping name -> module"
                )
            strange = [name for name in self.loss if name not in networks]
            if strange:
                raise ConfigError(
                    f"loss names networks {strange} that the model does not have; its "
                    f"networks are {networks}"
                )
            untrained = [name for name in networks if name not in self.loss]
            if untrained:
                raise ConfigError(
                    f"networks {untrained} have no loss: give loss[name] for each of "
                    f"{networks}, or leave a fixed network out of the model"
                )
            stages: tuple[tuple[str, LossFn, tuple[str, ...]], ...] = tuple(
                (name, fn, (name,)) for name, fn in self.loss.items()
            )
        else:
            stages = (("loss", self.loss, tuple(networks)),)
        given = dict(self.optimizer_names or {})
        strange = [name for name in given if name not in networks]
        if strange:
            raise ConfigError(
                f"optimizer_names names networks {strange} that the model does not have; "
                f"its networks are {networks}"
            )
        default = _SINGLE_OPTIMIZER if single else None
        optimizers = {name: given.get(name, default or name) for name in networks}
        names = list(optimizers.values())
        if len(set(names)) != len(names) or any(
            not isinstance(n, str) or not n or "/" in n for n in names
        ):
            raise ConfigError(
                f"optimizer names must be distinct strings without '/', got {optimizers}"
            )
        stray = self._stray_defaults(names)
        if stray:
            raise ConfigError(
                f"defaults names {stray}, which no optimizer takes: the optimizers are "
                f"{names}, their hyperparameters {sorted(DEFAULTS[self.optimizer])} (or "
                "<optimizer>_<name>)"
            )
        return Layout(single, optimizers, stages)

    def _stray_defaults(self, optimizers: Sequence[str] | None) -> list[str]:
        """The names in :attr:`defaults` that no optimizer takes: neither one of the
        optimizer's hyperparameters nor one prefixed by an optimizer's name (by any name
        while the optimizers are not known yet)."""
        known = DEFAULTS[self.optimizer]

        def takes(name: str) -> bool:
            return name in known or any(
                name.endswith(f"_{key}")
                and (optimizers is None or name[: -len(key) - 1] in optimizers)
                for key in known
            )

        return sorted(name for name in self.defaults if not takes(name))

    def hparams(self, hparams: Mapping[str, Any]) -> dict[str, float]:
        """A member's hyperparameters as numbers, the optimizer's defaults filled in.

        Raises:
            ConfigError: A value is not a number (it cannot be a tensor).
        """
        values = {**DEFAULTS[self.optimizer], **self.defaults}
        for name, value in hparams.items():
            if isinstance(value, str) or not isinstance(value, int | float):
                raise ConfigError(
                    f"hyperparameter {name!r} = {value!r} is not a number, so it cannot be "
                    "vectorized: members train as one computation with their hyperparameters "
                    "as tensors. Tune it with pbtkit.run, or make it numeric"
                )
            values[name] = float(value)
        return values

    def optimizer_values(self, optimizer: str, values: Mapping[str, float]) -> dict[str, float]:
        """The values optimizer ``optimizer`` steps with, from a member's :meth:`hparams`:
        ``<optimizer>_<name>`` where given, else the bare name, else the default (what
        :func:`pbtkit.torch.load` writes into a ``torch.optim`` optimizer of that name)."""
        known = DEFAULTS[self.optimizer]
        return {
            key: float(values.get(f"{optimizer}_{key}", values.get(key, default)))
            for key, default in known.items()
        }

    def train_trial(self, trial: Trial) -> None:
        """Train one member's trial the ordinary way (a ``train`` function for
        :func:`pbtkit.run` and :func:`pbtkit.replay`), with the same data, losses and
        optimizer arithmetic as the vectorized path."""
        values = self.hparams(trial.hparams)
        built = self.initial_model(trial.member)
        layout = self.layout(built)
        nets = layout.networks(built)
        optimizers = {
            layout.optimizers[name]: torch_optimizer(
                self.optimizer,
                net.parameters(),
                self.optimizer_values(layout.optimizers[name], values),
            )
            for name, net in nets.items()
        }
        pt.load(trial, model=nets, optimizer=optimizers, hparams=values, device=self.device)
        tensors = {k: torch.tensor(v, device=self.device) for k, v in values.items()}
        model = layout.calls(nets)
        losses: dict[str, float] = {}
        for step in trial.steps():
            batch = self.data(step)
            for net in nets.values():
                net.train()
            for stage, loss_fn, trained in layout.stages:
                # Only this loss's networks take its gradient (the others' forward is a
                # constant here), as the vectorized path does.
                for name, net in nets.items():
                    net.requires_grad_(name in trained)
                params = [p for name in trained for p in nets[name].parameters()]
                loss = loss_fn(model, batch, tensors)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                for param, grad in zip(params, grads, strict=True):
                    # A parameter the loss does not use steps with a zero gradient, as
                    # in the stacked optimizer (torch.optim would skip it).
                    param.grad = grad if grad is not None else torch.zeros_like(param)
                for name in trained:
                    optimizers[layout.optimizers[name]].step()
                losses[layout.report_name(stage)] = float(loss.detach())
            if self._reports_at(step, trial.end_step):
                trial.report(step, **losses)
        for net in nets.values():
            net.requires_grad_(True)
        if self.evaluate is not None:
            for net in nets.values():
                net.eval()
            with torch.no_grad():
                found = self.evaluate(model, tensors)
            trial.report(trial.last_step, **{k: float(v) for k, v in found.items()})
        pt.save(trial, model=nets, optimizer=optimizers, hparams=trial.hparams)

    def _reports_at(self, step: int, end_step: int) -> bool:
        return step == end_step - 1 or (
            self.report_every > 0 and (step + 1) % self.report_every == 0
        )


def run(
    trainer: VectorizedTrainer,
    *,
    space: SearchSpace | Mapping[str, Domain | Mapping[str, Any]],
    metric: str | Fitness,
    mode: Literal["max", "min"] = "max",
    population: int = 8,
    ready_every: int,
    total_steps: int,
    storage: str = "sqlite:///pbt.db",
    checkpoint_dir: str | Path | None = None,
    name: str | None = None,
    evolution: Literal["async", "generational"] = "async",
    exploit: Exploiter | None = None,
    explore: Explorer | None = None,
    seed: int = 0,
    lease_seconds: float = 60.0,
    resume: bool = True,
) -> Result:
    """Train a population with PBT, every member in this process as one computation.

    The arguments mean what they mean for :func:`pbtkit.run` (``workers``, executors and
    devices aside: one process trains everyone, on ``trainer.device``). Inheritance is
    ``"all"``: an exploit takes the donor's weights, optimizer state and hyperparameters,
    then explores.

    Returns:
        A :class:`~pbtkit.Result`, as :func:`pbtkit.run` gives.

    Raises:
        ConfigError: A setting is invalid, or a hyperparameter cannot be vectorized.
        ExperimentConflict: ``name`` exists with other settings.
    """
    name = check_experiment_name(name or "vectorized")
    url = normalize_url(storage)
    spec = ExperimentSpec(
        space=SearchSpace.coerce(space),
        policy=PBT(
            objective=metric if isinstance(metric, Fitness) else Objective(metric, mode),
            exploit=exploit if exploit is not None else Truncation(0.2),
            explore=explore if explore is not None else Perturb(),
            ready_every=ready_every,
            total_steps=total_steps,
        ),
        population=population,
        checkpoint_root=str(checkpoint_root(checkpoint_dir, url, name)),
        evolution=evolution,
        seed=seed,
    )
    store = open_store(url)
    controller = Controller(store, lease_seconds=lease_seconds)
    try:
        controller.create(name, spec, resume=resume)
        controller.reclaim_orphans(name)
        run_vectorized_worker(controller, name, trainer, worker_identity("vectorized"))
        result = Result(controller, name)
    except BaseException:
        store.close()
        raise
    raise_if_failed(result, name, url)  # as pbtkit.run ends
    return result
