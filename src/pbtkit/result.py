"""What a run leaves behind, read back from the store: members, the best one, schedules."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pbtkit._exceptions import ConfigError, NotFound
from pbtkit.checkpoints import CheckpointStore, open_checkpoints
from pbtkit.core.lineage import Schedule, TrialNode, ancestry, schedule
from pbtkit.core.ranking import Standing, rank
from pbtkit.spec import ExperimentSpec

if TYPE_CHECKING:
    from pbtkit.controller import ControllerAPI
from pbtkit.store import EventRecord, TrialRecord, open_store

__all__ = ["MemberResult", "Result"]


@dataclass(frozen=True, slots=True)
class MemberResult:
    """One member's final state.

    Attributes:
        member: Its slot.
        status: ``done``, ``failed``, or ``active`` for a run that has not finished.
        hparams: The hyperparameters of its latest finished trial.
        metrics: The last reported value of each metric in that trial.
        score: The objective's value there (NaN if it was not finite).
        step: Steps trained.
        checkpoint: Where its latest checkpoint is: a local directory (a
            :class:`~pathlib.Path`) under a local checkpoint root, the checkpoint's URL (a
            ``str``) under an object store (``s3://...``); None if it has none.
        trial_id: Its latest finished trial, or None if none finished.
    """

    member: int
    status: str
    hparams: dict[str, Any]
    metrics: dict[str, float]
    score: float
    step: int
    checkpoint: Path | str | None
    trial_id: int | None


class Result:
    """The outcome of an experiment. Built by :func:`pbtkit.run`, or :meth:`load` later."""

    def __init__(self, controller: ControllerAPI, name: str) -> None:
        self._controller = controller
        self.name = name
        snapshot = controller.snapshot(name)
        self.spec = ExperimentSpec.from_dict(snapshot.experiment.config)
        self.status = snapshot.experiment.status
        self.trials: list[TrialRecord] = snapshot.trials
        self.events: list[EventRecord] = snapshot.events
        members = snapshot.members
        checkpoints = open_checkpoints(self.spec.checkpoint_root, durable=False, create=False)
        by_id = {t.id: t for t in self.trials}
        self.members: list[MemberResult] = []
        for m in members:
            latest = by_id.get(m.latest_trial_id) if m.latest_trial_id is not None else None
            self.members.append(
                MemberResult(
                    member=m.member,
                    status=m.status,
                    hparams=dict(m.hparams),
                    metrics=dict(latest.metrics) if latest else {},
                    score=m.score,
                    step=m.step,
                    checkpoint=_where(checkpoints, m.checkpoint),
                    trial_id=m.latest_trial_id,
                )
            )

    @classmethod
    def load(cls, storage: str, name: str) -> Result:
        """Read the result of an experiment from its storage URL."""
        from pbtkit.controller import Controller

        return cls(Controller(open_store(storage)), name)

    @property
    def metric(self) -> str:
        """The objective metric."""
        return self.spec.metric

    @property
    def mode(self) -> str:
        """``"max"`` or ``"min"``."""
        return self.spec.policy.objective.mode

    @property
    def best(self) -> MemberResult:
        """The member with the best final score (NaN and failed members rank last); with
        several metrics, the best by the objective's own ranking (weights or Pareto)."""
        order = rank(
            self.spec.policy.objective,
            (
                Standing(m.member, m.score, m.metrics, m.trial_id is not None, m.status == "failed")
                for m in self.members
            ),
        )
        return self._member(order[0])

    def plot(self, out: str | Path, **options: Any) -> list[Path]:
        """Write the plots of this run into ``out`` (see :func:`pbtkit.viz.plot`; needs
        ``pbtkit[viz]``): curves, schedules, the family tree, and paths when asked."""
        from pbtkit.viz import plot

        return plot(self, out, **options)

    @property
    def exploits(self) -> list[EventRecord]:
        """Every exploit: which member copied which, and how its hyperparameters changed."""
        return [e for e in self.events if e.kind == "exploit"]

    @property
    def failures(self) -> list[EventRecord]:
        """Retries and members given up on, with the error's last line."""
        return [e for e in self.events if e.kind in ("retry", "failed")]

    def schedule(self, member: int | None = None, *, trial: int | None = None) -> Schedule:
        """The hyperparameter schedule that produced a member's final weights.

        It follows the member's latest trial back through every parent, across exploits
        into the donors' histories, to a first trial. Steps count the training the weights
        received along that lineage, so re-training from scratch along it (replay)
        reproduces the same hyperparameters at the same steps.

        Args:
            member: Which member; the best one by default.
            trial: Follow this finished trial's lineage instead of a member's latest.

        Raises:
            NotFound: No such member, or it has not finished a trial; no finished trial
                of that id in this experiment.
            ConfigError: Both ``member`` and ``trial`` were given.
        """
        nodes = {
            t.id: TrialNode(
                t.id, t.member, t.parent_id, t.start_step, t.end_step, t.hparams, t.inherit
            )
            for t in self.trials
            if t.status == "done"
        }
        if trial is not None:
            if member is not None:
                raise ConfigError("name a member or a trial, not both")
            if trial not in nodes:
                done = sorted(nodes)
                ids = f"{done[0]}..{done[-1]}" if done else "none yet"
                raise NotFound(
                    f"experiment {self.name!r} has no finished trial {trial} (its finished "
                    f"trials have ids {ids}); pick one of those"
                )
            final = trial
        else:
            target = self.best if member is None else self._member(member)
            if target.trial_id is None:
                raise NotFound(f"member {target.member} has not finished a trial yet")
            final = target.trial_id
        chain = ancestry(nodes, final)
        rebased: dict[int, TrialNode] = {}
        step = 0
        parent: int | None = None
        for node in chain:
            length = node.end_step - node.start_step
            rebased[node.trial_id] = TrialNode(
                node.trial_id, node.member, parent, step, step + length, node.hparams, node.inherit
            )
            step += length
            parent = node.trial_id
        plan = schedule(rebased, final)
        return dataclasses.replace(plan, experiment=self.name, metric=self.metric)

    def curves(self, metric: str | None = None) -> dict[int, list[tuple[int, float]]]:
        """Each member's reported values of a metric over its steps (the objective by default),
        in step order.

        A member that trained a step twice (it copied a donor behind it, whose checkpoint
        was at an earlier step) keeps the later value: the curve is the member's path as
        it stands, as the dashboard and the plots draw it.

        Raises:
            NotFound: No report ever named that metric.
        """
        metric = metric or self.metric
        reports = self._controller.reports(self.name)
        out: dict[int, dict[int, float]] = defaultdict(dict)
        seen: set[str] = set()
        for r in reports:
            seen.update(r.metrics)
            if metric in r.metrics:
                out[r.member][r.step] = r.metrics[metric]
        if metric not in seen:
            raise NotFound(
                f"no report has a metric named {metric!r}; "
                f"reported: {', '.join(sorted(seen)) or 'none'}"
            )
        return {member: sorted(points.items()) for member, points in out.items()}

    def _member(self, member: int) -> MemberResult:
        for m in self.members:
            if m.member == member:
                return m
        raise NotFound(f"no member {member}; the population has {len(self.members)}")

    def summary_text(self) -> str:
        """A few lines for a terminal: the best member and how the run went."""
        best = self.best
        hp = ", ".join(f"{k}={_fmt(v)}" for k, v in best.hparams.items())
        done = sum(m.status == "done" for m in self.members)
        failed = sum(m.status == "failed" for m in self.members)
        head = (
            f"experiment {self.name!r} ({self.status}): {done} members done, {failed} failed, "
            f"{len(self.exploits)} exploits, "
            f"{sum(t.status == 'done' for t in self.trials)} trials\n"
        )
        if not math.isfinite(best.score):
            return head + (
                f"no member has a finite {self.metric}: every one failed, diverged or "
                "reported NaN (see `pbtkit status`)"
            )
        return head + (
            f"best member {best.member}: {self.metric}={_fmt(best.score)} at step {best.step} "
            f"with {hp}\ncheckpoint: {best.checkpoint}"
        )

    def to_dataframe(self, table: str = "trials") -> Any:
        """The run as a pandas DataFrame (``pip install 'pbtkit[pandas]'``).

        Args:
            table: ``"trials"`` (default): one row per trial, with ``member``,
                ``generation``, ``start_step``, ``end_step``, ``status``, ``score``,
                ``parent_id``, ``parent_member``, ``exploit``, ``donor_member``, a
                ``hparams.<name>`` column per hyperparameter (missing where a trial has
                none) and a ``metrics.<name>`` column per metric; ``"reports"``: one row
                per report (``trial_id``, ``member``, ``step``, a column per metric);
                ``"events"``: every decision and incident. The same tables as
                ``pbtkit export --format csv|parquet``.

        Raises:
            ConfigError: An unknown table, or pandas is not installed.
        """
        from pbtkit.export import TABLES, dataframe, event_table, report_table, trial_table

        if table == "trials":
            columns, rows = trial_table(self.trials, self.events, list(self.spec.space))
        elif table == "reports":
            columns, rows = report_table(self._controller.reports(self.name))
        elif table == "events":
            columns, rows = event_table(self.events)
        else:
            raise ConfigError(f"table must be one of {', '.join(TABLES)}, got {table!r}")
        return dataframe(columns, rows)

    def _repr_html_(self) -> str:
        """The run in a notebook: the best member, the members, the best's schedule."""
        from pbtkit._notebook import result_html

        return result_html(self)

    def __repr__(self) -> str:
        return f"Result(name={self.name!r}, status={self.status!r}, best={self.best!r})"


def _where(checkpoints: CheckpointStore, name: str | None) -> Path | str | None:
    """A checkpoint's local directory, or its URL in an object store."""
    if not name:
        return None
    return checkpoints.location(name) if checkpoints.remote else checkpoints.resolve(name)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return repr(value)
