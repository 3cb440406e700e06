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

from collections.abc import Callable, Mapping
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

__all__ = ["VectorizedTrainer", "run", "run_vectorized_worker"]

ModelCall = Callable[..., Any]
LossFn = Callable[[ModelCall, Any, Mapping[str, torch.Tensor]], torch.Tensor]
EvalFn = Callable[[ModelCall, Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]]


@dataclass(frozen=True, slots=True)
class VectorizedTrainer:
    """What to train, the same for every member (see the module docstring).

    Attributes:
        model: Builds one member's network; called under a seed of its own per member
            (``seed`` and the member's index), so a member starts from the same weights
            in the vectorized and the per-member path.
        loss: ``loss(model, batch, hparams) -> scalar tensor``: ``model`` is this
            member's forward, ``hparams`` its hyperparameters as 0-d tensors (the
            optimizer's included).
        data: ``data(step)``: the batch of a step, the same for every member (on the
            device already).
        evaluate: ``evaluate(model, hparams) -> {metric: 0-d tensor}`` at the end of each
            trial (the objective usually comes from here); None reports the loss only.
        optimizer: ``"sgd"`` (momentum, weight decay), ``"adam"`` or ``"adamw"``; its
            hyperparameters are read from each member's hyperparameters by the names of
            :data:`pbtkit.torch._stacked.DEFAULTS` (``lr``, ``momentum``,
            ``weight_decay``, ``beta1``, ``beta2``, ``eps``), else from ``defaults``.
        defaults: Optimizer values for the names the search space does not tune.
        seed: Seeds each member's initial weights.
        device: Where the population trains (``"cpu"``, ``"cuda:0"``).
        randomness: ``vmap``'s: ``"error"`` (default; a model with dropout must choose),
            ``"different"`` (each member its own dropout masks) or ``"same"``.
        report_every: Report the loss every this many steps (0: at each trial's last
            step only).
    """

    model: Callable[[], nn.Module]
    loss: LossFn
    data: Callable[[int], Any]
    evaluate: EvalFn | None = None
    optimizer: str = "sgd"
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
        unknown = sorted(set(self.defaults) - set(DEFAULTS[self.optimizer]))
        if unknown:
            raise ConfigError(
                f"defaults names {unknown}, which {self.optimizer} does not take; its "
                f"hyperparameters are {sorted(DEFAULTS[self.optimizer])}"
            )
        if self.randomness not in ("error", "different", "same"):
            raise ConfigError(
                f"randomness must be 'error', 'different' or 'same', got {self.randomness!r}"
            )
        if isinstance(self.report_every, bool) or not isinstance(self.report_every, int):
            raise ConfigError(f"report_every must be an integer, got {self.report_every!r}")

    # one member, the ordinary way --------------------------------------------------

    def initial_model(self, member: int) -> nn.Module:
        """Member ``member``'s network as it starts, on :attr:`device`."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + member)
            return self.model().to(self.device)

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

    def train_trial(self, trial: Trial) -> None:
        """Train one member's trial the ordinary way (a ``train`` function for
        :func:`pbtkit.run` and :func:`pbtkit.replay`), with the same data, loss and
        optimizer arithmetic as the vectorized path."""
        values = self.hparams(trial.hparams)
        model = self.initial_model(trial.member)
        optimizer = torch_optimizer(self.optimizer, model.parameters(), values)
        pt.load(trial, model=model, optimizer=optimizer, hparams=values, device=self.device)
        tensors = {k: torch.tensor(v, device=self.device) for k, v in values.items()}
        loss = torch.tensor(float("nan"))
        for step in trial.steps():
            model.train()
            optimizer.zero_grad(set_to_none=True)
            loss = self.loss(model, self.data(step), tensors)
            torch.autograd.backward(loss)
            optimizer.step()
            if self._reports_at(step, trial.end_step):
                trial.report(step, loss=float(loss.detach()))
        if self.evaluate is not None:
            model.eval()
            with torch.no_grad():
                found = self.evaluate(model, tensors)
            trial.report(trial.last_step, **{k: float(v) for k, v in found.items()})
        pt.save(trial, model=model, optimizer=optimizer, hparams=trial.hparams)

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
