"""The worker of :mod:`pbtkit.torch.vectorized`: a batch of leases trained as one
computation (:class:`_Population`), each member's checkpoint committed as its own slice,
the batch finished in one call (:func:`run_vectorized_worker`)."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import functional_call, vmap

import pbtkit.torch as pt
from pbtkit._exceptions import BadCheckpoint, ConfigError, LeaseLost, PBTError
from pbtkit.checkpoints import CheckpointStore, open_checkpoints
from pbtkit.controller import FINISHED, WAIT, ControllerAPI, Lease, TrialResult
from pbtkit.controller._batch import MAX_BATCH
from pbtkit.store._base import Measurement
from pbtkit.torch._stacked import (
    StackedOptimizer,
    make_optimizer,
    param_group,
    torch_optimizer,
)
from pbtkit.worker import Trial

if TYPE_CHECKING:
    from pbtkit.torch.vectorized import LossFn, VectorizedTrainer

__all__ = ["run_vectorized_worker"]

_SAVERS = 4  # threads writing members' checkpoints at once


class _Population:
    """The stacked members a worker trains, slot ``i`` the ``i``-th trial it holds; every
    table is keyed by network name first (one network is named ``"model"``)."""

    def __init__(self, trainer: VectorizedTrainer) -> None:
        self.trainer = trainer
        built = trainer.initial_model(0)
        self.layout = trainer.layout(built)  # a model/loss mismatch is refused here
        self.templates = self.layout.networks(built)  # the modules functional_call runs
        self.names = {
            net: tuple(name for name, _ in module.named_parameters())
            for net, module in self.templates.items()
        }
        # Each entry of a network's state dict as (parameters or buffers, stacked name):
        # a member's state dict is then its slices, read without the shared template, so
        # members are saved in parallel. Tied weights map to the one stacked tensor.
        self.state_names: dict[str, dict[str, tuple[bool, str]]] = {}
        for net, module in self.templates.items():
            by_id = {id(t): (True, n) for n, t in module.named_parameters()}
            by_id.update({id(t): (False, n) for n, t in module.named_buffers()})
            self.state_names[net] = {
                key: by_id[id(value)] for key, value in module.state_dict(keep_vars=True).items()
            }
        self.params: dict[str, dict[str, torch.Tensor]] = {}
        self.buffers: dict[str, dict[str, torch.Tensor]] = {}
        self.optimizers: dict[str, StackedOptimizer] = {}
        self.kept: dict[str, int] = {}  # committed checkpoint name -> slot holding it

    def arrange(self, trials: Sequence[Trial], leases: Sequence[Lease]) -> None:
        """Fill the slots for ``trials``: a first trial from its initial weights, a parent
        trained here from memory (an exploit is a copy of the donor's slice of every
        network and optimizer), any other from its checkpoint."""
        size, device = len(trials), self.trainer.device
        params = {
            net: {
                n: torch.zeros((size, *p.shape), dtype=p.dtype, device=device)
                for n, p in module.named_parameters()
            }
            for net, module in self.templates.items()
        }
        buffers = {
            net: {
                n: torch.zeros((size, *b.shape), dtype=b.dtype, device=device)
                for n, b in module.named_buffers()
            }
            for net, module in self.templates.items()
        }
        optimizers = {
            net: make_optimizer(self.trainer.optimizer, params[net]) for net in self.templates
        }
        sources = [self.kept.get(lease.parent_checkpoint or "", -1) for lease in leases]
        here = [
            i
            for i, source in enumerate(sources)
            if source >= 0 and trials[i].shrink_perturb is None and self.optimizers
        ]
        if here:
            index = torch.tensor([sources[i] for i in here], device=device)
            slots = torch.tensor(here, device=device)
            with torch.no_grad():
                for net in self.templates:
                    for n, stacked in params[net].items():
                        stacked[slots] = self.params[net][n].index_select(0, index)
                    for n, stacked in buffers[net].items():
                        stacked[slots] = self.buffers[net][n].index_select(0, index)
                    old, new = self.optimizers[net], optimizers[net]
                    for n, moments in new.moments.items():
                        for key, tensor in moments.items():
                            tensor[slots] = old.moments[n][key].index_select(0, index)
                    new.steps[slots] = old.steps.index_select(0, index)
        for i, trial in enumerate(trials):
            if i in here:
                continue
            if trial.parent_checkpoint is None:
                member = self.layout.networks(self.trainer.initial_model(trial.member))
                _put(params, buffers, i, member)
            else:
                self._load(i, trial, params, buffers, optimizers)
        self.params, self.buffers, self.optimizers = params, buffers, optimizers
        self.kept = {}

    def _load(
        self,
        slot: int,
        trial: Trial,
        params: dict[str, dict[str, torch.Tensor]],
        buffers: dict[str, dict[str, torch.Tensor]],
        optimizers: dict[str, StackedOptimizer],
    ) -> None:
        trainer, names = self.trainer, self.layout.optimizers
        values = trainer.hparams(trial.hparams)
        opts = {
            names[net]: torch_optimizer(
                trainer.optimizer, module.parameters(), trainer.optimizer_values(names[net], values)
            )
            for net, module in self.templates.items()
        }
        pt.load(trial, model=self.templates, optimizer=opts, hparams=values, device=trainer.device)
        _put(params, buffers, slot, self.templates)
        for net in self.templates:
            optimizers[net].set_member_state(slot, opts[names[net]].state_dict()["state"])

    def train(self, trials: Sequence[Trial]) -> dict[int, list[Measurement]]:
        """Train every slot from its trial's start to its end step, in lockstep; the
        reports of each slot."""
        trainer, layout, optimizers = self.trainer, self.layout, self.optimizers
        assert optimizers
        values = [trainer.hparams(t.hparams) for t in trials]
        names = set(values[0])
        for trial, v in zip(trials, values, strict=True):
            if set(v) != names:
                raise ConfigError(
                    f"member {trial.member} has hyperparameters {sorted(v)}, others "
                    f"{sorted(names)}: members of one batch need the same names (a "
                    "conditional search space cannot be vectorized)"
                )
        device = trainer.device
        hp = {n: torch.tensor([v[n] for v in values], device=device) for n in sorted(names)}
        optimizer_hp = {}  # network -> the values its optimizer steps with, [P] each
        for net, opt_name in layout.optimizers.items():
            own = [trainer.optimizer_values(opt_name, v) for v in values]
            optimizer_hp[net] = {
                k: torch.tensor([o[k] for o in own], device=device) for k in own[0]
            }
        templates = self.templates

        def member_call(
            params: dict[str, dict[str, torch.Tensor]],
            buffers: dict[str, dict[str, torch.Tensor]],
        ) -> Any:
            def forward(net: str) -> Any:
                def call(*args: Any, **kwargs: Any) -> Any:
                    return functional_call(
                        templates[net], (params[net], buffers[net]), args, kwargs
                    )

                return call

            return layout.calls({net: forward(net) for net in templates})

        def stage_forward(loss_fn: LossFn) -> Any:
            def member_loss(
                params: dict[str, dict[str, torch.Tensor]],
                buffers: dict[str, dict[str, torch.Tensor]],
                hparams: dict[str, torch.Tensor],
                batch: Any,
            ) -> torch.Tensor:
                return loss_fn(member_call(params, buffers), batch, hparams)

            return vmap(member_loss, in_dims=(0, 0, 0, None), randomness=trainer.randomness)

        # The forward under vmap, the backward by ordinary autograd of the members' summed
        # losses: member i's loss depends on its own slice only, so the gradient of the sum
        # is every member's own gradient. It is the same arithmetic as vmap(grad(...)),
        # faster on small models, and it spares the first step a second of imports
        # (torch.func.grad loads torch._dynamo). With several losses (a GAN's D, then G)
        # each stage's networks alone require a gradient, and are stepped before the next
        # stage runs on them.
        stages = [
            (
                layout.report_name(stage),
                stage_forward(loss_fn),
                trained,
                [
                    (net, name, self.params[net][name])
                    for net in trained
                    for name in self.names[net]
                ],
            )
            for stage, loss_fn, trained in layout.stages
        ]
        start, end = trials[0].start_step, trials[0].end_step
        reports: dict[int, list[Measurement]] = {i: [] for i in range(len(trials))}
        for module in templates.values():
            module.train()
        try:
            for step in range(start, end):
                batch = trainer.data(step)
                found: dict[str, list[float]] = {}
                for report, forward, trained, leaves in stages:
                    for net in templates:
                        for leaf in self.params[net].values():
                            leaf.requires_grad_(net in trained)
                    losses = forward(self.params, self.buffers, hp, batch)
                    if losses.shape != (len(trials),):
                        raise ConfigError(
                            f"loss(model, batch, hparams) must return one number per member "
                            f"(a 0-d tensor); it returned shape {tuple(losses.shape[1:])}"
                        )
                    grads = torch.autograd.grad(
                        losses.sum(), [leaf for _, _, leaf in leaves], allow_unused=True
                    )
                    by_net: dict[str, dict[str, torch.Tensor]] = {net: {} for net in trained}
                    for (net, name, leaf), grad in zip(leaves, grads, strict=True):
                        by_net[net][name] = grad if grad is not None else torch.zeros_like(leaf)
                    for net in trained:
                        optimizers[net].step(self.params[net], by_net[net], optimizer_hp[net])
                    if trainer._reports_at(step, end):
                        found[report] = losses.detach().tolist()
                for i in range(len(trials)):
                    if found:
                        metrics = {k: float(v[i]) for k, v in found.items()}
                        reports[i].append(Measurement(step, metrics))
        finally:
            for net in templates:
                for leaf in self.params[net].values():
                    leaf.requires_grad_(False)
        for net, optimizer in optimizers.items():
            optimizer.settle(optimizer_hp[net])
        if trainer.evaluate is not None:
            evaluate = trainer.evaluate

            def member_eval(
                params: dict[str, dict[str, torch.Tensor]],
                buffers: dict[str, dict[str, torch.Tensor]],
                hparams: dict[str, torch.Tensor],
            ) -> dict[str, torch.Tensor]:
                return dict(evaluate(member_call(params, buffers), hparams))

            for module in templates.values():
                module.eval()
            with torch.no_grad():
                scores = vmap(member_eval, randomness=trainer.randomness)(
                    self.params, self.buffers, hp
                )
            columns = {k: v.tolist() for k, v in scores.items()}
            for i in range(len(trials)):
                reports[i].append(
                    Measurement(end - 1, {k: float(v[i]) for k, v in columns.items()})
                )
        return reports

    def save(self, slot: int, trial: Trial) -> None:
        """Write slot ``slot`` as an ordinary :mod:`pbtkit.torch` checkpoint of ``trial``:
        :func:`pbtkit.torch.load` reads it into ``torch.optim`` optimizers (one per
        network, by the layout's optimizer names). Safe to call for several slots at once
        from threads."""
        assert self.optimizers
        trainer = self.trainer
        values = trainer.hparams(trial.hparams)
        models: dict[str, Any] = {}
        optimizers: dict[str, Any] = {}
        for net, names in self.state_names.items():
            models[net] = {
                key: (self.params if is_param else self.buffers)[net][name][slot]
                for key, (is_param, name) in names.items()
            }
            opt_name = self.layout.optimizers[net]
            own = trainer.optimizer_values(opt_name, values)
            optimizers[opt_name] = {
                "state": self.optimizers[net].member_state(slot),
                "param_groups": [param_group(trainer.optimizer, own, len(self.names[net]))],
            }
        states: dict[str, dict[str, Any]] = {"models": models, "optimizers": optimizers}
        pt._write_states(trial, states, trial.hparams, {})


@torch.no_grad()
def _put(
    params: dict[str, dict[str, torch.Tensor]],
    buffers: dict[str, dict[str, torch.Tensor]],
    slot: int,
    modules: Mapping[str, nn.Module],
) -> None:
    """Copy each network's parameters and buffers into slot ``slot`` of the stacks."""
    for net, module in modules.items():
        for name, value in module.named_parameters():
            params[net][name][slot] = value.detach()
        for name, buffer in module.named_buffers():
            buffers[net][name][slot] = buffer.detach()


class _Heartbeat:
    """Keeps the leases of a batch alive while it trains; notes the ones lost."""

    def __init__(self, controller: ControllerAPI, trial_ids: Sequence[int], worker_id: str) -> None:
        self._controller, self._ids, self._worker = controller, list(trial_ids), worker_id
        self._every = max(controller.lease_seconds / 4.0, 0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="pbtkit-beat")
        self.lost: set[int] = set()

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            for trial_id in self._ids:
                if trial_id in self.lost:
                    continue
                try:
                    self._controller.heartbeat(trial_id, self._worker)
                except LeaseLost:
                    self.lost.add(trial_id)  # finish_batch refuses it; nothing to stop here
                except PBTError:
                    pass  # unreachable for now: the lease outlives a short outage


def run_vectorized_worker(
    controller: ControllerAPI,
    experiment: str,
    trainer: VectorizedTrainer,
    worker_id: str,
    *,
    max_members: int = MAX_BATCH,
    checkpoint_root: str | None = None,
    verify_checkpoints: bool = True,
    stop: threading.Event | None = None,
    poll: float = 0.02,
) -> int:
    """Lease every ready member of ``experiment`` at once and train them together, until
    the experiment is finished (or ``stop`` is set).

    Args:
        controller: The controller, in process or a :class:`~pbtkit.service.RemoteController`.
        experiment: The experiment's name.
        trainer: What to train.
        worker_id: This worker's lease-owner name (see :func:`pbtkit.controller.worker_identity`).
        max_members: The most trials to lease and train at once.
        checkpoint_root: Where this machine sees the checkpoint root, if not where the
            experiment says.
        verify_checkpoints: Check a parent checkpoint's SHA-256 sums before loading it.
        stop: Set it to make the worker return after its current batch.
        poll: The first wait when nothing is ready (it doubles, up to a second).

    Returns:
        How many trials this worker finished.

    Raises:
        ConfigError: A hyperparameter cannot be vectorized (the message says which).
        StorageError: The controller stayed unreachable longer than its ``max_outage``.
    """
    population = _Population(trainer)
    roots: dict[str, CheckpointStore] = {}
    finished = 0
    wait = poll
    while stop is None or not stop.is_set():
        got = controller.lease_batch(experiment, worker_id, max_trials=max_members)
        if got == FINISHED:
            break
        if got == WAIT:
            time.sleep(wait)
            wait = min(wait * 2, 1.0)
            continue
        assert isinstance(got, list)
        wait = poll
        root = checkpoint_root or got[0].checkpoint_root
        if root not in roots:
            roots[root] = open_checkpoints(root)
        # Lockstep needs one range of steps; members at other steps train as a group of
        # their own (rare: a retry, or an exploit of an earlier generation's donor).
        groups: dict[tuple[int, int], list[Lease]] = {}
        for lease in sorted(got, key=lambda x: x.trial.member):
            groups.setdefault((lease.trial.start_step, lease.trial.end_step), []).append(lease)
        for group in groups.values():
            finished += _run_group(
                controller, roots[root], population, group, worker_id, verify_checkpoints
            )
    return finished


def _give_back(
    controller: ControllerAPI,
    checkpoints: CheckpointStore,
    leases: Sequence[Lease],
    worker_id: str,
    error: BaseException,
    *,
    bad_parent: bool = False,
) -> None:
    text = "".join(traceback.format_exception(error))
    for lease in leases:
        try:
            released = controller.fail(lease.trial.id, worker_id, text, bad_parent=bad_parent)
        except LeaseLost:
            continue
        _delete(checkpoints, released)


def _delete(checkpoints: CheckpointStore, names: Sequence[str]) -> None:
    for stale in names:
        with contextlib.suppress(OSError, PBTError):  # the run's final sweep catches it
            checkpoints.delete(stale)


def _run_group(
    controller: ControllerAPI,
    checkpoints: CheckpointStore,
    population: _Population,
    leases: Sequence[Lease],
    worker_id: str,
    verify: bool,
) -> int:
    """Train one group of leases in lockstep, commit each member's checkpoint and finish
    them in one call; returns how many were recorded."""
    trials: list[Trial] = []
    kept: list[Lease] = []
    for lease in leases:
        in_memory = lease.parent_checkpoint in population.kept and (
            lease.trial.inherit is None or lease.trial.inherit.get("mode") != "shrink_perturb"
        )
        parent: Path | None = None
        if lease.parent_checkpoint is not None:
            try:
                parent = (
                    Path(lease.parent_checkpoint)  # in memory: the path is never read
                    if in_memory
                    else checkpoints.fetch(lease.parent_checkpoint, verify=verify)
                )
            except BadCheckpoint as exc:
                _give_back(controller, checkpoints, [lease], worker_id, exc, bad_parent=True)
                continue
            except Exception as exc:
                _give_back(controller, checkpoints, [lease], worker_id, exc)
                continue
        staging = checkpoints.staging_dir(lease.experiment, lease.trial.id)
        trials.append(Trial(lease, staging, parent, device=population.trainer.device))
        kept.append(lease)
    if not trials:
        return 0
    names: list[str | None] = []
    try:
        with _Heartbeat(controller, [lease.trial.id for lease in kept], worker_id):
            population.arrange(trials, kept)
            reports = population.train(trials)
            names.extend(_save_all(population, checkpoints, trials, kept))
        _check_objective(kept[0], reports)
    except Exception as exc:  # the user's code may raise anything
        for trial in trials:
            shutil.rmtree(trial.checkpoint_dir, ignore_errors=True)
        _delete(checkpoints, [n for n in names if n])
        population.kept = {}
        _give_back(controller, checkpoints, kept, worker_id, exc)
        if isinstance(exc, ConfigError):
            raise  # wrong for every member alike: stop and say so
        return 0  # the trials are retried, as any worker's would be
    results = [
        TrialResult(lease.trial.id, tuple(reports[slot]), names[slot])
        for slot, lease in enumerate(kept)
    ]
    population.kept = {name: slot for slot, name in enumerate(names) if name is not None}
    done = controller.finish_batch(kept[0].experiment, worker_id, results)
    _delete(checkpoints, done.released)
    for slot, lease in enumerate(kept):
        name = names[slot]
        if lease.trial.id in done.lost and name is not None:
            population.kept.pop(name, None)
            _delete(checkpoints, [name])
    return len(kept) - len(done.lost)


def _save_all(
    population: _Population,
    checkpoints: CheckpointStore,
    trials: Sequence[Trial],
    leases: Sequence[Lease],
) -> list[str | None]:
    """Write and commit every member's checkpoint, several at a time: most of the time
    is file writes and fsyncs, which run outside the GIL."""

    def one(slot: int) -> str | None:
        trial = trials[slot]
        population.save(slot, trial)
        return checkpoints.commit(
            trial.checkpoint_dir, leases[slot].experiment, trial.trial_id, attempt=trial.attempt
        )

    if len(trials) == 1:
        return [one(0)]
    with ThreadPoolExecutor(min(_SAVERS, len(trials)), thread_name_prefix="pbtkit-save") as pool:
        futures = [pool.submit(one, slot) for slot in range(len(trials))]
    failed = [f.exception() for f in futures if f.exception() is not None]
    if failed:
        # The members saved before the failure are not recorded: remove their
        # checkpoints now rather than leave them to the run's final sweep.
        _delete(checkpoints, [n for f in futures if f.exception() is None and (n := f.result())])
        raise failed[0]  # type: ignore[misc]
    return [f.result() for f in futures]


def _check_objective(lease: Lease, reports: Mapping[int, Sequence[Measurement]]) -> None:
    needed = lease.metrics or (lease.metric,)
    seen = {name for m in reports.get(0, ()) for name in m.metrics}
    missing = [name for name in needed if name not in seen]
    if missing:
        raise ConfigError(
            f"the objective needs {missing}, which the trainer never reported: return it "
            "from evaluate(model, hparams) (the loss is reported as 'loss')"
        )
