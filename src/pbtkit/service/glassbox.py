"""The glass-box API: your own training loop asks a PBT server what to do.

::

    client = PBTClient("http://127.0.0.1", 8765, "secret", "pbt.yaml")
    hp = client.hyperparameters()
    while not client.done:
        train_for_a_while(model, hp)
        path = save_checkpoint(model)            # anywhere inside the server's checkpoint root
        client.save(path, evaluate(model))
        if client.should_exploit():
            donor = client.exploit()             # the member to copy
            load_checkpoint(model, client.parameters_path())
            hp = client.explore()                # its hyperparameters, perturbed

Each ``save`` ends one trial of the client's member; the server ranks the member at once
(truncation: the bottom 20% copy the top 20% by default) and records the decision, so
members, scores, checkpoints and decisions are stored exactly like a black-box run's and
``pbtkit status``, plots and replay work the same.

The config file (YAML, JSON or TOML) holds::

    name: my-experiment        # the experiment all clients of one run share
    population: 4              # how many clients will join
    metric: accuracy           # the name the metric is stored under (default: score)
    mode: max                  # default: the server's maximize_metric
    ready_every: 1             # steps per save (default 1: steps count saves)
    total_steps: 100           # a member is done after this many steps (default: never)
    space:
      lr: {type: loguniform, low: 0.0001, high: 0.1}
    exploit: {type: truncation, fraction: 0.2}
    explore: {type: perturb, factors: [0.8, 1.2], resample_probability: 0.25}
    checkpoint_root: ckpt      # where the clients save (relative to this file); it must lie
                               # inside the server's root (PBTServer(checkpoint_root=...))

Checkpoint paths given to :meth:`PBTClient.save` may be relative to where the client
runs; the server checks that they lie inside its checkpoint root (by default the folder
``PBTServer`` was started in) and says how to fix it when they do not.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

from pbtkit._exceptions import CheckpointError, ConfigError, LeaseLost, MetricError, PBTError
from pbtkit.config import read_settings
from pbtkit.controller import FINISHED, WAIT, Lease, worker_identity
from pbtkit.core.exploit import Truncation, exploiter_from_dict
from pbtkit.core.explore import Perturb, explorer_from_dict
from pbtkit.core.fitness import Objective, metric_value
from pbtkit.core.policy import PBT
from pbtkit.core.space import SearchSpace
from pbtkit.service.client import RemoteController
from pbtkit.spec import ExperimentSpec
from pbtkit.store._base import Measurement

__all__ = ["PBTClient"]

_FOREVER = 2**62
_KEYS = {
    "name", "population", "metric", "mode", "ready_every", "total_steps", "space", "exploit",
    "explore", "evolution", "seed", "max_attempts", "checkpoint_root",
}  # fmt: skip


def glassbox_spec(config: dict[str, Any], maximize: bool) -> tuple[str, ExperimentSpec]:
    """The experiment name and spec a glass-box config describes."""
    unknown = sorted(set(config) - _KEYS)
    if unknown:
        raise ConfigError(
            f"unknown glass-box settings: {', '.join(unknown)}; known: {', '.join(sorted(_KEYS))}"
        )
    for required in ("name", "population", "space"):
        if required not in config:
            raise ConfigError(f"the glass-box config needs {required!r}")
    policy = PBT(
        objective=Objective(
            str(config.get("metric", "score")), config.get("mode") or ("max" if maximize else "min")
        ),
        exploit=exploiter_from_dict(config["exploit"]) if "exploit" in config else Truncation(0.2),
        explore=explorer_from_dict(config["explore"]) if "explore" in config else Perturb(),
        ready_every=int(config.get("ready_every", 1)),
        total_steps=int(config.get("total_steps", _FOREVER)),
    )
    spec = ExperimentSpec(
        space=SearchSpace.coerce(config["space"]),
        policy=policy,
        population=int(config["population"]),
        checkpoint_root="(the server's)",
        evolution=config.get("evolution", "async"),
        seed=int(config.get("seed", 0)),
        max_attempts=int(config.get("max_attempts", 3)),
        keep_checkpoints="all",  # a glass-box user's files are theirs: never deleted
    )
    return str(config["name"]), spec


class PBTClient:
    """One member of a population, driven by your own training loop.

    Args:
        server_url: The server's URL without port, e.g. ``http://127.0.0.1`` (a URL with a
            port is accepted too, then ``server_port`` may be None).
        server_port: The server's port.
        server_key: The server's auth key (None if it has none).
        config_path: The YAML, JSON or TOML file with the space and policy (module docs).
        member: Rejoin as this member (after a client died); default: the next free one.

    Raises:
        ConfigError: The config is invalid, or the population is already full.
        ServiceError: The server refused the key.
    """

    def __init__(
        self,
        server_url: str,
        server_port: int | None,
        server_key: str | None,
        config_path: str | Path,
        *,
        member: int | None = None,
    ) -> None:
        url = server_url.rstrip("/")
        if server_port is not None:
            url = f"{url}:{server_port}"
        self._remote = RemoteController(url, server_key or "")
        try:
            self._join(config_path, member)
        except BaseException:
            self._remote.close()
            raise
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._lost: LeaseLost | None = None
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="pbtkit-client")
        self._beat.start()

    def _join(self, config_path: str | Path, member: int | None) -> None:
        config = read_settings(config_path)
        self.experiment, spec = glassbox_spec(config, bool(self._remote.info["maximize_metric"]))
        self._root = Path(self._remote.info["checkpoint_root"])
        self.checkpoint_root = self._root
        if "checkpoint_root" in config:
            mine = (Path(config_path).resolve().parent / str(config["checkpoint_root"])).resolve()
            if mine != self._root and self._root not in mine.parents:
                raise ConfigError(
                    f"{config_path} saves checkpoints under {mine}, outside the server's "
                    f"checkpoint root {self._root}: start the server with "
                    f"PBTServer(..., checkpoint_root={str(mine)!r}) (or `pbtkit serve "
                    f"--checkpoint-root {mine}`), or set checkpoint_root in {config_path} "
                    f"to a folder inside {self._root}"
                )
            self.checkpoint_root = mine
        self._remote.create(self.experiment, spec, resume=True)
        self._metric = spec.metric
        self._worker_id = worker_identity(f"glassbox-{time.time_ns() % 10**9}")
        got = self._remote.lease(
            self.experiment,
            self._worker_id,
            member=member,
            generation=0 if member is None else None,
        )
        if not isinstance(got, Lease):
            raise ConfigError(
                f"experiment {self.experiment!r} has no member left to join (population "
                f"{spec.population}); raise population in {config_path} or pass member="
            )
        self._lease: Lease | None = got
        self.member = got.trial.member

    # what the loop asks ------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Whether this member has finished (its budget is spent, or it failed).

        Raises:
            LeaseLost: The server gave this member to another client (this one was
                silent for longer than the lease): stop training it.
        """
        if self._lost is not None:
            raise self._lost
        return self._lease is None

    def hyperparameters(self) -> dict[str, Any]:
        """This member's current hyperparameter values."""
        return dict(self._current().trial.hparams)

    def save(self, ckpt_path: str | Path, metric_val: float, **metrics: float) -> None:
        """Tell the server this member wrote a checkpoint with score ``metric_val``.

        The server ranks the member at once and decides whether it should exploit.

        Args:
            ckpt_path: Where the checkpoint was written, inside the server's checkpoint
                root: absolute, relative to where this client runs (if it exists here),
                or else relative to the root.
            metric_val: The member's score now.
            metrics: Other values to record beside it (loss=..., ...).

        Raises:
            CheckpointError: ``ckpt_path`` lies outside the checkpoint root.
            MetricError: A value is not a real number, or ``metrics`` repeats the objective.
            LeaseLost: The server gave this member to another client (this one was
                silent for longer than the lease).
        """
        if self._metric in metrics:
            raise MetricError(
                f"{self._metric!r} is the objective: pass it as metric_val, not as a keyword"
            )
        values = {self._metric: metric_value(self._metric, metric_val)}
        values.update({name: metric_value(name, value) for name, value in metrics.items()})
        path = Path(ckpt_path)
        if not path.is_absolute() and path.exists():
            # A path that exists here is meant from here, not from the root.
            path = path.resolve()
        with self._lock:
            lease = self._current()
            trial = lease.trial
            report = Measurement(trial.end_step - 1, values)
            try:
                self._remote.finish(trial.id, self._worker_id, [report], str(path))
            except CheckpointError as exc:
                raise CheckpointError(
                    f"{exc}. Save under {self.checkpoint_root} (client.checkpoint_root), or "
                    f"start the server with PBTServer(..., checkpoint_root=...) naming the "
                    f"folder that holds {path}"
                ) from None
            self._lease = self._next()

    def should_exploit(self) -> bool:
        """Whether the last :meth:`save` decided that this member copies another."""
        return self._lease is not None and self._lease.donor is not None

    def exploit(self) -> int | None:
        """The member to copy (chosen at the last save), or None if there is none."""
        return None if self._lease is None else self._lease.donor

    def parameters_path(self) -> str | None:
        """The checkpoint to load: the donor's after an exploit, else this member's own."""
        if self._lease is None or self._lease.parent_checkpoint is None:
            return None
        return str(self._root / self._lease.parent_checkpoint)

    def explore(self) -> dict[str, Any]:
        """This member's new hyperparameters (the donor's, perturbed or resampled)."""
        return self.hyperparameters()

    def close(self) -> None:
        """Stop the heartbeat; an unfinished trial comes back to this member when rejoined."""
        self._stop.set()
        self._beat.join(5)
        with self._lock:
            if self._lease is not None:
                with contextlib.suppress(PBTError):
                    self._remote.fail(
                        self._lease.trial.id, self._worker_id, "client closed", penalize=False
                    )
                self._lease = None
        self._remote.close()

    def __enter__(self) -> PBTClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # internals ---------------------------------------------------------------------
    def _current(self) -> Lease:
        if self._lost is not None:
            raise self._lost
        if self._lease is None:
            raise ConfigError(f"member {self.member} is done; stop training it")
        return self._lease

    def _next(self) -> Lease | None:
        delay = 0.01
        while True:
            got = self._remote.lease(self.experiment, self._worker_id, member=self.member)
            if isinstance(got, Lease):
                return got
            if got == FINISHED:
                return None
            assert got == WAIT  # generational: the others have not reached the barrier
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _heartbeat(self) -> None:
        every = max(self._remote.lease_seconds / 4.0, 0.05)
        while not self._stop.wait(every):
            with self._lock:
                if self._lease is None:
                    continue
                try:
                    self._remote.heartbeat(self._lease.trial.id, self._worker_id)
                except LeaseLost as exc:
                    self._lost = exc
                    self._lease = None
                    return
                except PBTError:
                    continue
