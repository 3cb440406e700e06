"""Weights & Biases: a run per member, grouped by experiment (``pip install 'pbtkit[wandb]'``).

What goes where (all runs in the group named after the experiment):

- a **run per member** (``<experiment>/member-000``, job type ``member``): every reported
  metric, and the hyperparameters in force as ``hparams/<name>`` at the first and last
  step of each trial (a categorical value at its index among the domain's values, its
  text in the run's summary as ``hparams.<name>``), so schedules are curves;
  ``pbt/score`` at the last step of each trial; ``pbt/exploit_donor`` (the donor's
  member number) at each exploit; its exploits as the table ``exploits`` at the end.
  Every value is logged with ``member_step``, the member's own step, which the runs use
  as their x axis (``define_metric``), because W&B's own step only goes forward and a
  trial that is retried reports its steps again.
- an **experiment run** (``<experiment>/experiment``, job type ``experiment``): the
  settings as its config; ``pbt/best_score``, the population's best so far, at each step
  where a trial ended; at the end the table ``exploits`` of every member (step, member,
  donor member and trial, what changed) and the best member in its summary.

Offline (``mode="offline"`` or ``WANDB_MODE=offline``) the runs are written under
``<dir>/wandb/offline-run-*`` and ``wandb sync`` uploads them later.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from pbtkit._exceptions import ConfigError
from pbtkit.loggers._base import (
    Logger,
    RunInfo,
    Update,
    describe_changes,
    hparam_value,
)
from pbtkit.store import EventRecord, MemberRecord

__all__ = ["WandbLogger"]

STEP = "member_step"
_EXPLOIT_COLUMNS = ["step", "member", "donor_member", "donor_trial", "trial", "changes"]


def _wandb() -> Any:
    try:
        import wandb
    except ImportError as exc:
        raise ConfigError(
            "the Weights & Biases logger needs wandb: pip install 'pbtkit[wandb]'"
        ) from exc
    return wandb


class WandbLogger(Logger):
    """Writes a run to Weights & Biases (see the module docstring).

    Args:
        project: The W&B project (default: ``WANDB_PROJECT``, else ``pbtkit``).
        entity: The W&B entity (user or team; default: yours).
        group: The runs' group (default: the experiment's name).
        mode: ``"online"``, ``"offline"`` or ``"disabled"`` (default: ``WANDB_MODE``,
            else W&B's default).
        dir: The folder under which W&B writes its ``wandb/`` files (default: W&B's).
        tags: Tags for every run.

    Raises:
        ConfigError: wandb is not installed, or ``mode`` is not one W&B knows; when the
            run starts, W&B cannot start a run (not logged in, say).
    """

    kind = "wandb"

    def __init__(
        self,
        project: str | None = None,
        *,
        entity: str | None = None,
        group: str | None = None,
        mode: str | None = None,
        dir: str | None = None,
        tags: Sequence[str] = (),
    ) -> None:
        self._wandb = _wandb()
        if mode is not None and mode not in ("online", "offline", "disabled"):
            raise ConfigError(f"W&B mode must be 'online', 'offline' or 'disabled', got {mode!r}")
        self.project = project
        self.entity = entity
        self.group = group
        self.mode = mode
        self.dir = dir
        self.tags = list(tags)
        self.runs: dict[int, Any] = {}
        self.experiment_run: Any = None
        self._run: RunInfo | None = None
        self._exploits: dict[int, list[list[Any]]] = defaultdict(list)
        self._best = float("nan")
        self._ended: set[int] = set()

    # the contract ----------------------------------------------------------------------
    def open(self, run: RunInfo) -> None:
        """Start the experiment's run."""
        import os

        self._run = run
        self.project = self.project or os.environ.get("WANDB_PROJECT") or "pbtkit"
        try:
            self.experiment_run = self._init(
                "experiment", "experiment", {"pbtkit": _settings(run), "experiment": run.name}
            )
        except Exception as exc:  # W&B's own errors say what it needs; say what to do
            raise ConfigError(
                f"W&B could not start a run ({type(exc).__name__}: {exc}); log in with "
                "`wandb login` (or set WANDB_API_KEY), or log offline with mode='offline' "
                "and upload later with `wandb sync`"
            ) from exc

    def log(self, update: Update) -> None:
        """Write the update's hyperparameters, reports, trial ends and events."""
        run = self._run
        assert run is not None, "open() comes first"
        rows: dict[int, dict[int, dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
        texts: dict[int, dict[str, str]] = defaultdict(dict)
        best_rows: list[tuple[int, float]] = []
        for t in update.started:
            for key, value in t.hparams.items():
                point, text = hparam_value(key, value, run.space)
                if point is not None:
                    rows[t.member][t.start_step][f"hparams/{key}"] = point
                texts[t.member][f"hparams.{key}"] = text if text is not None else str(value)
            for key in run.space:
                if key not in t.hparams:  # left out of this trial (inactive)
                    texts[t.member][f"hparams.{key}"] = "inactive"
        for r in update.reports:
            rows[r.member][r.step].update(r.metrics)
        for t in sorted(update.finished, key=lambda t: (t.end_step, t.id)):
            last = max(t.end_step - 1, t.start_step)
            for key, value in t.hparams.items():
                point, _ = hparam_value(key, value, run.space)
                if point is not None:
                    rows[t.member][last][f"hparams/{key}"] = point
            rows[t.member][last]["pbt/score"] = t.score
            if run.better(t.score, self._best):
                self._best = t.score
                best_rows.append((t.end_step, t.score))
        for e in update.events:
            if e.kind != "exploit":
                continue
            step = update.event_step(e)
            self._exploits[e.member].append(_exploit_row(e, step))
            if e.donor_member is not None:
                rows[e.member][step]["pbt/exploit_donor"] = e.donor_member
        for member in sorted(set(rows) | set(texts)):
            handle = self._member(member)
            for step in sorted(rows[member]):
                handle.log({STEP: step, **rows[member][step]})
            for key, text in texts[member].items():
                handle.summary[key] = text
        for step, score in best_rows:
            self.experiment_run.log({STEP: step, "pbt/best_score": score})
        for m in update.members_finished:
            self._end_member(m)

    def close(self, update: Update | None = None) -> None:
        """Log the exploit tables and the best member, then finish every run."""
        if self.experiment_run is None or self._run is None:
            return
        wandb = self._wandb
        try:
            for member, handle in self.runs.items():
                if member not in self._ended:
                    handle.log({"exploits": wandb.Table(columns=_EXPLOIT_COLUMNS,
                                                        data=self._exploits[member])})  # fmt: skip
            every = [row for rows in self._exploits.values() for row in rows]
            every.sort(key=lambda row: (row[0], row[1]))
            self.experiment_run.log({"exploits": wandb.Table(columns=_EXPLOIT_COLUMNS, data=every)})
            if update is not None:
                best = self._run.best(update.members)
                summary = self.experiment_run.summary
                summary["pbtkit.status"] = update.experiment.status
                if best is not None:
                    summary["pbtkit.best_member"] = best.member
                    summary["pbtkit.best_score"] = best.score
                    summary["pbtkit.best_hparams"] = json.dumps(dict(best.hparams), default=str)
        finally:
            failed = {m.member for m in update.members if m.status == "failed"} if update else set()
            for member, handle in self.runs.items():
                if member not in self._ended:
                    handle.finish(exit_code=1 if member in failed else 0)
                    self._ended.add(member)
            self.experiment_run.finish()

    # helpers ---------------------------------------------------------------------------
    def _init(self, suffix: str, job_type: str, config: Mapping[str, Any]) -> Any:
        assert self._run is not None
        wandb = self._wandb
        handle = wandb.init(
            project=self.project,
            entity=self.entity,
            group=self.group or self._run.name,
            name=f"{self._run.name}/{suffix}",
            job_type=job_type,
            config=dict(config),
            tags=self.tags or None,
            mode=self.mode,
            dir=self.dir,
            reinit="create_new",  # one run per member, open at once in this process
            # The driver's own output is not the runs' console, and the machine's
            # statistics are not a member's: neither is captured.
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
        )
        handle.define_metric(STEP)
        handle.define_metric("*", step_metric=STEP)
        return handle

    def _member(self, member: int) -> Any:
        if member not in self.runs:
            assert self._run is not None
            self.runs[member] = self._init(
                f"member-{member:03d}", "member", {"member": member, "experiment": self._run.name}
            )
        return self.runs[member]

    def _end_member(self, member: MemberRecord) -> None:
        if member.member in self._ended or member.member not in self.runs:
            return
        wandb = self._wandb
        handle = self.runs[member.member]
        handle.log({"exploits": wandb.Table(columns=_EXPLOIT_COLUMNS,
                                            data=self._exploits[member.member])})  # fmt: skip
        handle.summary["pbtkit.status"] = member.status
        handle.finish(exit_code=1 if member.status == "failed" else 0)
        self._ended.add(member.member)


def _settings(run: RunInfo) -> dict[str, Any]:
    config = run.config
    policy = config.get("policy")
    policy = policy if isinstance(policy, Mapping) else {}
    return {
        "population": config.get("population"),
        "evolution": config.get("evolution"),
        "seed": config.get("seed"),
        "metric": run.metric,
        "mode": run.mode,
        "ready_every": policy.get("ready_every"),
        "total_steps": policy.get("total_steps"),
        "exploit": policy.get("exploit"),
        "explore": policy.get("explore"),
        "space": {k: dict(v) for k, v in run.space.items()},
    }


def _exploit_row(e: EventRecord, step: int) -> list[Any]:
    return [
        step,
        e.member,
        e.donor_member,
        e.donor_trial,
        e.trial_id,
        describe_changes(e.old_hparams or {}, e.new_hparams or {}),
    ]
