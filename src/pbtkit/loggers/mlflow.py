"""MLflow: one parent run per experiment, a child run per member (``pip install 'pbtkit[mlflow]'``).

What goes where:

- the **parent run** (named after the experiment, tag ``pbtkit.role = experiment``): the
  settings as parameters (population, ready_every, total_steps, evolution, seed, metric,
  mode, exploit, explore, the search space); the metric ``pbt/best_score``, the best
  score of the population so far at each step where a trial ended; tags
  ``pbtkit.best_member`` and ``pbtkit.best_score``; at the end an artifact
  ``exploits.json`` (every exploit: who copied whom, at which step, what changed) and the
  best member's checkpoint under ``best-checkpoint/`` (when it is on this machine);
- a **child run per member** (``member-000``..., tag ``mlflow.parentRunId``): every
  reported metric under its own name, by step, while the trial runs; the hyperparameters
  in force as metrics ``hparams/<name>`` at the first and last step of each trial, so a
  schedule is a curve (a categorical value at its index among the domain's values), and as
  tags ``hparams.<name>`` holding the values in force now; ``pbt/score`` (the objective)
  at the last step of each trial; each exploit as a tag ``pbtkit.exploit.NNN`` ("step 40:
  copied member 3 (trial 17); lr 0.01 -> 0.012") and as the metric
  ``pbt/exploit_donor`` (the donor's member number) at its step; stops, retries and
  failures as tags ``pbtkit.event.NNN``. A member that failed ends ``FAILED``.

Running again (a resumed experiment) first deletes the runs an earlier writer made for
the same experiment in the same MLflow experiment (MLflow keeps deleted runs until
``mlflow gc``) and writes everything again from the store, so the tracker shows the
experiment once. ``fresh=False`` keeps them.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pbtkit._exceptions import ConfigError
from pbtkit.loggers._base import (
    INACTIVE,
    Logger,
    RunInfo,
    Update,
    changed_hparams,
    describe_changes,
    hparam_value,
    sanitize_key,
)
from pbtkit.store import EventRecord, MemberRecord

__all__ = ["MLflowLogger"]

_MAX_METRICS = 1000  # MLflow's limits on one log_batch request
_MAX_TAGS = 100
_MAX_TAG_VALUE = 5000
_KEY_CHARS = "-_./ :"


def _client_class() -> Any:
    try:
        from mlflow import MlflowClient
    except ImportError as exc:
        raise ConfigError("the MLflow logger needs mlflow: pip install 'pbtkit[mlflow]'") from exc
    return MlflowClient


class MLflowLogger(Logger):
    """Writes a run to MLflow (see the module docstring).

    Args:
        tracking_uri: The tracking server or store (``http://host:5000``,
            ``sqlite:///mlflow.db``, a folder). None: MLflow's own default
            (``MLFLOW_TRACKING_URI``, else ``./mlruns``).
        experiment_name: The MLflow experiment to log into (created when missing);
            default: the pbtkit experiment's name.
        artifact_location: Where a newly created MLflow experiment keeps its artifacts
            (default: the tracking store's choice).
        log_checkpoint: Upload the best member's checkpoint as an artifact at the end.
        tags: More tags for the parent run.
        fresh: Delete the runs an earlier writer made for this experiment first.

    Raises:
        ConfigError: mlflow is not installed; when the run starts, the tracking store
            cannot be reached.
    """

    kind = "mlflow"

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        *,
        artifact_location: str | None = None,
        log_checkpoint: bool = True,
        tags: Mapping[str, str] | None = None,
        fresh: bool = True,
    ) -> None:
        self._client_class = _client_class()
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.artifact_location = artifact_location
        self.log_checkpoint = log_checkpoint
        self.tags = dict(tags or {})
        self.fresh = fresh
        self.client: Any = None
        self.experiment_id: str | None = None
        self.parent_id: str | None = None
        self.children: dict[int, str] = {}
        self._run: RunInfo | None = None
        self._keys: dict[str, str] = {}
        self._exploits: list[dict[str, Any]] = []
        self._notes: dict[int, int] = defaultdict(int)
        self._best = float("nan")
        self._ended: set[int] = set()

    # the contract ----------------------------------------------------------------------
    def open(self, run: RunInfo) -> None:
        """Find or create the MLflow experiment and start the parent run."""
        self._run = run
        name = self.experiment_name or run.name
        try:
            self.client = self._client_class(tracking_uri=self.tracking_uri)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                self.experiment_id = self.client.create_experiment(
                    name, artifact_location=self.artifact_location
                )
            else:
                self.experiment_id = found.experiment_id
        except Exception as exc:  # MLflow's errors name the store; say what to do
            raise ConfigError(
                f"MLflow's tracking store {self.tracking_uri or '(its default)'} cannot be "
                f"used ({type(exc).__name__}: {exc}); give a tracking_uri it can reach, "
                "such as sqlite:///mlflow.db"
            ) from exc
        if self.fresh:
            for old in self._earlier_runs(run.name):
                self.client.delete_run(old)
        parent = self.client.create_run(
            self.experiment_id,
            run_name=run.name,
            tags={
                "pbtkit.experiment": run.name,
                "pbtkit.role": "experiment",
                "mlflow.note.content": (
                    f"Population Based Training experiment {run.name!r}: one child run per "
                    f"member; objective {run.metric} ({run.mode})."
                ),
                **self.tags,
            },
        )
        self.parent_id = parent.info.run_id
        self._batch(self.parent_id, params=_settings(run))

    def log(self, update: Update) -> None:
        """Write the update's hyperparameters, reports, trial ends and events."""
        run = self._run
        assert run is not None, "open() comes first"
        assert self.parent_id is not None
        now = int(time.time() * 1000)
        metrics: dict[int, list[tuple[str, float, int]]] = defaultdict(list)
        tags: dict[int, dict[str, str]] = defaultdict(dict)
        parent_metrics: list[tuple[str, float, int]] = []
        for t in update.started:
            for key, value in t.hparams.items():
                point, text = hparam_value(key, value, run.space)
                if point is not None:
                    metrics[t.member].append((f"hparams/{self._key(key)}", point, t.start_step))
                tags[t.member][f"hparams.{self._key(key)}"] = (
                    text if text is not None else str(value)
                )
            for key in run.space:  # left out of this trial (inactive): say so
                if key not in t.hparams:
                    tags[t.member][f"hparams.{self._key(key)}"] = "inactive"
        for r in update.reports:
            for key, value in r.metrics.items():
                metrics[r.member].append((self._key(key), value, r.step))
        for t in sorted(update.finished, key=lambda t: (t.end_step, t.id)):
            last = max(t.end_step - 1, t.start_step)
            for key, value in t.hparams.items():
                point, _ = hparam_value(key, value, run.space)
                if point is not None:
                    metrics[t.member].append((f"hparams/{self._key(key)}", point, last))
            metrics[t.member].append(("pbt/score", t.score, last))
            if run.better(t.score, self._best):
                self._best = t.score
                parent_metrics.append(("pbt/best_score", t.score, t.end_step))
        for e in update.events:
            step = update.event_step(e)
            self._notes[e.member] += 1
            index = self._notes[e.member]
            if e.kind == "exploit":
                self._exploits.append(_exploit_row(e, step))
                text = (
                    f"step {step}: copied member {e.donor_member} (trial {e.donor_trial}); "
                    f"{describe_changes(e.old_hparams or {}, e.new_hparams or {})}"
                )
                tags[e.member][f"pbtkit.exploit.{index:03d}"] = text
                if e.donor_member is not None:
                    metrics[e.member].append(("pbt/exploit_donor", float(e.donor_member), step))
            else:
                detail = (e.detail or "").strip().splitlines()
                text = f"step {step}: {e.kind}" + (f": {detail[-1]}" if detail else "")
                tags[e.member][f"pbtkit.event.{index:03d}"] = text
        for member in sorted(set(metrics) | set(tags)):
            self._batch(
                self._child(member),
                metrics=[(k, v, s, now) for k, v, s in metrics[member]],
                tags=tags[member],
            )
        if parent_metrics:
            self._batch(self.parent_id, metrics=[(k, v, s, now) for k, v, s in parent_metrics])
        for m in update.members_finished:
            self._end_member(m)

    def close(self, update: Update | None = None) -> None:
        """Name the best member, upload the exploits and its checkpoint, end the runs."""
        if self.client is None or self.parent_id is None or self._run is None:
            return
        finished = update is not None and update.experiment.status == "finished"
        try:
            if update is not None:
                best = self._run.best(update.members)
                tags: dict[str, str] = {"pbtkit.status": str(update.experiment.status)}
                if best is not None:
                    tags.update(
                        {
                            "pbtkit.best_member": str(best.member),
                            "pbtkit.best_score": repr(best.score),
                            "pbtkit.best_hparams": json.dumps(dict(best.hparams), default=str),
                        }
                    )
                    if best.member in self.children:
                        tags["pbtkit.best_run_id"] = self.children[best.member]
                self._batch(self.parent_id, tags=tags)
                self.client.log_dict(self.parent_id, {"exploits": self._exploits}, "exploits.json")
                if best is not None and self.log_checkpoint:
                    folder = _local_checkpoint(self._run.checkpoint_root, best.checkpoint)
                    if folder is not None:
                        self.client.log_artifacts(self.parent_id, str(folder), "best-checkpoint")
                for m in update.members:
                    if m.status != "active":
                        self._end_member(m)
        finally:
            ending = "FINISHED" if finished else "KILLED"
            for member, run_id in self.children.items():
                if member not in self._ended:
                    self.client.set_terminated(run_id, ending)
                    self._ended.add(member)
            self.client.set_terminated(self.parent_id, ending)

    # helpers ---------------------------------------------------------------------------
    def _earlier_runs(self, name: str) -> list[str]:
        quoted = name.replace("\\", "\\\\").replace("'", "\\'")
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`pbtkit.experiment` = '{quoted}'"
        )
        return [r.info.run_id for r in runs]

    def _child(self, member: int) -> str:
        if member not in self.children:
            assert self._run is not None
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"member-{member:03d}",
                tags={
                    "mlflow.parentRunId": self.parent_id,
                    "pbtkit.experiment": self._run.name,
                    "pbtkit.role": "member",
                    "pbtkit.member": str(member),
                },
            )
            self.children[member] = run.info.run_id
        return self.children[member]

    def _end_member(self, member: MemberRecord) -> None:
        if member.member in self._ended or member.member not in self.children:
            return
        run_id = self.children[member.member]
        self.client.set_terminated(run_id, "FAILED" if member.status == "failed" else "FINISHED")
        self._ended.add(member.member)

    def _key(self, name: str) -> str:
        """A metric or tag key MLflow accepts; two names never share one."""
        if name not in self._keys:
            key = sanitize_key(name, _KEY_CHARS)[:200]
            taken = set(self._keys.values())
            base, n = key, 1
            while key in taken:
                n += 1
                key = f"{base}_{n}"
            self._keys[name] = key
        return self._keys[name]

    def _batch(
        self,
        run_id: str,
        *,
        metrics: Sequence[tuple[str, float, int, int]] = (),
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Log in as few requests as MLflow's limits allow (usually one per run per
        sync: each request costs the tracking store a transaction)."""
        from mlflow.entities import Metric, Param, RunTag

        metric_items = [Metric(k, float(v), ts, int(s)) for k, v, s, ts in metrics]
        param_items = [Param(k, v) for k, v in (params or {}).items()]
        tag_items = [RunTag(k, v[:_MAX_TAG_VALUE]) for k, v in (tags or {}).items()]
        while metric_items or param_items or tag_items:
            chunk_params = param_items[:_MAX_TAGS]
            chunk_tags = tag_items[:_MAX_TAGS]
            room = _MAX_METRICS - len(chunk_params) - len(chunk_tags)
            chunk_metrics = metric_items[:room]
            self.client.log_batch(
                run_id,
                metrics=chunk_metrics,
                params=chunk_params,
                tags=chunk_tags,
                synchronous=True,
            )
            del metric_items[:room], param_items[:_MAX_TAGS], tag_items[:_MAX_TAGS]


def _settings(run: RunInfo) -> dict[str, str]:
    config = run.config
    policy = config.get("policy") if isinstance(config.get("policy"), Mapping) else {}
    assert isinstance(policy, Mapping)
    out = {
        "population": str(config.get("population")),
        "evolution": str(config.get("evolution")),
        "seed": str(config.get("seed")),
        "metric": run.metric,
        "mode": run.mode,
        "ready_every": str(policy.get("ready_every")),
        "total_steps": str(policy.get("total_steps")),
        "exploit": json.dumps(policy.get("exploit"), sort_keys=True, default=str),
        "explore": json.dumps(policy.get("explore"), sort_keys=True, default=str),
        "objective": json.dumps(policy.get("objective"), sort_keys=True, default=str),
    }
    for name, domain in run.space.items():
        out[f"space.{sanitize_key(name, _KEY_CHARS)}"] = json.dumps(dict(domain), default=str)
    return {k: v[:_MAX_TAG_VALUE] for k, v in out.items()}


def _exploit_row(e: EventRecord, step: int) -> dict[str, Any]:
    return {
        "step": step,
        "member": e.member,
        "donor_member": e.donor_member,
        "donor_trial": e.donor_trial,
        "trial": e.trial_id,
        "changes": [
            {
                "name": k,
                **({} if a is INACTIVE else {"old": a}),
                **({} if b is INACTIVE else {"new": b}),
            }
            for k, a, b in changed_hparams(e.old_hparams or {}, e.new_hparams or {})
        ],
        "old_hparams": dict(e.old_hparams or {}),
        "new_hparams": dict(e.new_hparams or {}),
    }


def _local_checkpoint(root: str, name: str | None) -> Path | None:
    """The checkpoint's folder when it is on this machine (not in an object store), else
    None; a name that leaves the root is refused by the checkpoint store, not followed."""
    from pbtkit._exceptions import PBTError
    from pbtkit.checkpoints import open_checkpoints

    if not name or not root:
        return None
    try:
        folder = open_checkpoints(root, create=False).resolve(name)
    except PBTError:
        return None
    return folder if folder.is_dir() else None
