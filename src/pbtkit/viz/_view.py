"""What every view of a run is drawn from: one read of the store, shaped for looking at.

:class:`RunView` holds an experiment's members, its trials as a family tree, its exploits
and its reports, read through any :class:`~pbtkit.controller.ControllerAPI` (a local
controller, a remote one) or taken from a :class:`~pbtkit.Result`. The plots, the
TensorBoard writer, the dashboard and the exports all read it, so they agree. It reads the
stored settings as plain JSON and never rebuilds the policy, so looking at a run never
imports code that its settings name (a custom explore function).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pbtkit._exceptions import NotFound, PBTError
from pbtkit.loggers._base import INACTIVE, changed_hparams
from pbtkit.store import ReportRecord, Store, TrialRecord

if TYPE_CHECKING:
    from pbtkit.controller import ControllerAPI, Snapshot
    from pbtkit.result import Result

__all__ = ["Jump", "MemberRow", "RunView", "TreeNode", "open_existing"]


@dataclass(frozen=True, slots=True)
class MemberRow:
    """One row of the population table.

    Attributes:
        member: Its slot.
        status: ``active``, ``done`` or ``failed``.
        step: Steps trained.
        score: The objective's value after its latest finished trial (NaN if none).
        hparams: The hyperparameters of its latest finished trial, or of its first trial
            while none has finished.
        training: The steps ``(start, end)`` of the trial it is training now, or None.
    """

    member: int
    status: str
    step: int
    score: float
    hparams: Mapping[str, Any]
    training: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class Jump:
    """One exploit: ``member`` took ``donor_member``'s checkpoint at its step ``step``."""

    member: int
    step: int
    donor_member: int
    donor_trial: int
    trial_id: int
    old_hparams: Mapping[str, Any]
    new_hparams: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TreeNode:
    """One trial in the family tree; ``parent_id`` is the trial it started from."""

    trial_id: int
    member: int
    generation: int
    parent_id: int | None
    parent_member: int | None
    start_step: int
    end_step: int
    status: str
    score: float
    hparams: Mapping[str, Any]

    @property
    def is_exploit(self) -> bool:
        """Whether it started from another member's checkpoint."""
        return self.parent_member is not None and self.parent_member != self.member


@dataclass(frozen=True, slots=True)
class RunView:
    """An experiment as people look at it, read at one moment.

    Attributes:
        name: The experiment's name.
        status: ``running`` or ``finished``.
        metric: The objective metric.
        mode: ``max`` or ``min``.
        population: Members in the population.
        total_steps: Steps each member trains in all.
        space: Hyperparameter name -> its domain as stored (``{"type": "loguniform", ...}``).
        members: The population table, by member.
        nodes: Every trial that has started or finished, by id (pending trials are left out).
        jumps: Every exploit, in the order they happened.
        reports: Every report, in the order they were made.
        best_member: The member with the best score, None while no trial has finished.
        best_lineage: The trials whose checkpoints led to the best member's weights.
        details: The text of each ``stop``, ``retry`` and ``failed`` event, as
            ``(member, kind, text)``.
    """

    name: str
    status: str
    metric: str
    mode: str
    population: int
    total_steps: int
    space: Mapping[str, Mapping[str, Any]]
    members: tuple[MemberRow, ...]
    nodes: tuple[TreeNode, ...]
    jumps: tuple[Jump, ...]
    reports: tuple[ReportRecord, ...]
    best_member: int | None
    best_lineage: frozenset[int]
    details: tuple[tuple[int, str, str], ...] = ()

    # building ----------------------------------------------------------------------
    @classmethod
    def load(cls, controller: ControllerAPI, name: str) -> RunView:
        """Read an experiment through a controller (two reads: the snapshot, the reports).

        Raises:
            NotFound: No experiment of that name (the message names those that exist).
        """
        snapshot = controller.snapshot(name)
        return cls.build(snapshot, controller.reports(name))

    @classmethod
    def of(cls, result: Result) -> RunView:
        """The view of a :class:`~pbtkit.Result` (its reports are read once more)."""
        return cls.load(result._controller, result.name)

    @classmethod
    def build(cls, snapshot: Snapshot, reports: Sequence[ReportRecord]) -> RunView:
        """Shape a snapshot and the experiment's reports into a view (no I/O)."""
        config = snapshot.experiment.config
        policy = _mapping(config.get("policy"))
        objective = _mapping(policy.get("objective"))
        metric = str(objective.get("metric", ""))
        mode = "min" if objective.get("mode") == "min" else "max"
        space = {str(k): _mapping(v) for k, v in _mapping(config.get("space")).items()}
        by_id = {t.id: t for t in snapshot.trials}
        running = {t.member: t for t in snapshot.trials if t.status == "running"}
        first: dict[int, TrialRecord] = {}
        for t in snapshot.trials:
            first.setdefault(t.member, t)
        rows = []
        for m in snapshot.members:
            hparams = m.hparams or (first[m.member].hparams if m.member in first else {})
            now = running.get(m.member)
            rows.append(
                MemberRow(
                    member=m.member,
                    status=m.status,
                    step=m.step,
                    score=m.score,
                    hparams=dict(hparams),
                    training=(now.start_step, now.end_step) if now else None,
                )
            )
        nodes = tuple(
            TreeNode(
                trial_id=t.id,
                member=t.member,
                generation=t.generation,
                parent_id=t.parent_id,
                parent_member=by_id[t.parent_id].member if t.parent_id in by_id else None,
                start_step=t.start_step,
                end_step=t.end_step,
                status=t.status,
                score=t.score,
                hparams=dict(t.hparams),
            )
            for t in snapshot.trials
            if t.status != "pending"
        )
        jumps = []
        details = []
        for e in snapshot.events:
            if e.kind == "exploit" and e.trial_id in by_id and e.donor_member is not None:
                jumps.append(
                    Jump(
                        member=e.member,
                        step=by_id[e.trial_id].start_step,
                        donor_member=e.donor_member,
                        donor_trial=e.donor_trial if e.donor_trial is not None else 0,
                        trial_id=e.trial_id,
                        old_hparams=dict(e.old_hparams or {}),
                        new_hparams=dict(e.new_hparams or {}),
                    )
                )
            elif e.kind in ("stop", "retry", "failed"):
                details.append((e.member, e.kind, e.detail or ""))
        best = _best(snapshot, objective)
        lineage: frozenset[int] = frozenset()
        if best is not None:
            latest = next(m.latest_trial_id for m in snapshot.members if m.member == best)
            lineage = frozenset(_ancestry(by_id, latest))
        population = config.get("population")
        total = policy.get("total_steps")
        return cls(
            name=snapshot.experiment.name,
            status=snapshot.experiment.status,
            metric=metric,
            mode=mode,
            population=population if isinstance(population, int) else len(rows),
            total_steps=total if isinstance(total, int) else 0,
            space=space,
            members=tuple(rows),
            nodes=nodes,
            jumps=tuple(jumps),
            reports=tuple(reports),
            best_member=best,
            best_lineage=lineage,
            details=tuple(details),
        )

    # reading -----------------------------------------------------------------------
    @property
    def hparam_names(self) -> list[str]:
        """The hyperparameters, in the order of the search space."""
        names = list(self.space)
        for row in self.members:
            names += [k for k in row.hparams if k not in names]
        return names

    @property
    def metrics(self) -> list[str]:
        """Every metric any report named, the objective first."""
        seen = dict.fromkeys([self.metric] if self.metric else [])
        for r in self.reports:
            seen.update(dict.fromkeys(r.metrics))
        return list(seen)

    @property
    def steps_done(self) -> int:
        """Steps trained by all members together."""
        return sum(row.step for row in self.members)

    def curves(self, metric: str | None = None) -> dict[int, list[tuple[int, float]]]:
        """Each member's reported values of a metric over its steps (the objective by default).

        A member that reported the metric twice at one step keeps the later value.

        Raises:
            NotFound: No report named that metric (the message names those reported).
        """
        metric = metric or self.metric
        out: dict[int, dict[int, float]] = defaultdict(dict)
        for r in self.reports:
            if metric in r.metrics:
                out[r.member][r.step] = r.metrics[metric]
        if not out and self.reports:
            reported = ", ".join(dict.fromkeys(k for r in self.reports for k in r.metrics))
            raise NotFound(f"no report has a metric named {metric!r}; reported: {reported}")
        return {m: sorted(points.items()) for m, points in sorted(out.items())}

    def schedules(self) -> dict[int, list[tuple[int, int, dict[str, Any]]]]:
        """The hyperparameters each member trained with, as ``(start, end, hparams)``
        stretches of its own steps (from the trials that started, oldest first)."""
        out: dict[int, list[tuple[int, int, dict[str, Any]]]] = defaultdict(list)
        for node in sorted(self.nodes, key=lambda n: (n.member, n.start_step, n.trial_id)):
            if node.status == "failed" or node.end_step == node.start_step:
                continue
            stretches = out[node.member]
            if stretches and stretches[-1][1] > node.start_step:
                stretches.pop()  # an older attempt at the same steps
            stretches.append((node.start_step, node.end_step, dict(node.hparams)))
        return dict(sorted(out.items()))

    def lineage_schedule(self) -> list[tuple[int, int, int, int, dict[str, Any]]]:
        """The hyperparameters the best member's weights were trained with, across the
        members it copied: ``(start, end, member, trial_id, hparams)`` per trial of its
        lineage, oldest first. Steps count the training the weights received along the
        lineage (as :meth:`pbtkit.Result.schedule` does), so they follow each other."""
        by_id = {n.trial_id: n for n in self.nodes}
        chain = sorted(
            (by_id[t] for t in self.best_lineage if t in by_id),
            key=lambda n: (n.generation, n.start_step, n.trial_id),
        )
        # parent before child: walk from the newest back to the first
        ordered: list[TreeNode] = []
        newest = max(chain, key=lambda n: (n.end_step, n.generation), default=None)
        node = newest
        while node is not None and node not in ordered:
            ordered.append(node)
            node = by_id.get(node.parent_id) if node.parent_id is not None else None
        out = []
        step = 0
        for n in reversed(ordered):
            length = n.end_step - n.start_step
            out.append((step, step + length, n.member, n.trial_id, dict(n.hparams)))
            step += length
        return out

    def best_so_far(self) -> list[tuple[int, float]]:
        """The best score any finished trial had reached by each step where one ended."""
        sign = 1.0 if self.mode == "max" else -1.0
        best: float | None = None
        out: dict[int, float] = {}
        done = [n for n in self.nodes if n.status == "done" and math.isfinite(n.score)]
        for n in sorted(done, key=lambda n: (n.end_step, n.trial_id)):
            if best is None or sign * n.score > sign * best:
                best = n.score
            out[n.end_step] = best
        return sorted(out.items())

    def member_jumps(self, member: int) -> list[Jump]:
        """The exploits of one member."""
        return [j for j in self.jumps if j.member == member]

    def to_json(self, metric: str | None = None, *, max_points: int = 1000) -> dict[str, Any]:
        """The view as strict JSON (non-finite numbers become null), for the dashboard.

        Args:
            metric: The metric whose curves to include (the objective by default).
            max_points: At most this many points per member's curve (evenly thinned,
                the last kept).
        """
        metric = metric or self.metric
        try:
            curves = self.curves(metric)
        except NotFound:
            curves = {}
        return {
            "name": self.name,
            "status": self.status,
            "metric": self.metric,
            "mode": self.mode,
            "population": self.population,
            "total_steps": self.total_steps,
            "steps_done": self.steps_done,
            "hparams": self.hparam_names,
            "space": {k: dict(v) for k, v in self.space.items()},
            "metrics": self.metrics,
            "shown_metric": metric,
            "best_member": self.best_member,
            "members": [
                {
                    "member": r.member,
                    "status": r.status,
                    "step": r.step,
                    "score": _finite(r.score),
                    "hparams": _json_values(r.hparams),
                    "training": list(r.training) if r.training else None,
                }
                for r in self.members
            ],
            "curves": {
                str(m): [[s, _finite(v)] for s, v in _thin(points, max_points)]
                for m, points in curves.items()
            },
            "schedules": {
                str(m): [[a, b, _json_values(hp)] for a, b, hp in stretches]
                for m, stretches in self.schedules().items()
            },
            "jumps": [
                {
                    "member": j.member,
                    "step": j.step,
                    "donor_member": j.donor_member,
                    "donor_trial": j.donor_trial,
                    "trial_id": j.trial_id,
                    # [name, old, new, whether old and new are active]: a conditional
                    # hyperparameter may be inactive on one side (its value null there)
                    "changes": [
                        [
                            k,
                            None if a is INACTIVE else _json_value(a),
                            None if b is INACTIVE else _json_value(b),
                            a is not INACTIVE,
                            b is not INACTIVE,
                        ]
                        for k, a, b in changed_hparams(j.old_hparams, j.new_hparams)
                    ],
                }
                for j in self.jumps
            ],
            "lineage": [
                [a, b, m, t, _json_values(hp)] for a, b, m, t, hp in self.lineage_schedule()
            ],
            "best_so_far": [[s, v] for s, v in self.best_so_far()],
            "tree": [
                {
                    "id": n.trial_id,
                    "member": n.member,
                    "generation": n.generation,
                    "parent": n.parent_id,
                    "parent_member": n.parent_member,
                    "start": n.start_step,
                    "end": n.end_step,
                    "status": n.status,
                    "score": _finite(n.score),
                    "best": n.trial_id in self.best_lineage,
                    "hparams": _json_values(n.hparams),
                }
                for n in self.nodes
            ],
        }


def open_existing(storage: str) -> Store:
    """Open a store that must already hold a pbtkit database, creating nothing
    (``open_store(storage, create=False)``)."""
    from pbtkit.store import open_store

    return open_store(storage, create=False)


def _best(snapshot: Snapshot, objective: Mapping[str, Any]) -> int | None:
    """The best member by the one ranking every view shares (Pareto included)."""
    from pbtkit.core.fitness import objective_from_dict
    from pbtkit.core.ranking import Standing, best

    try:
        fitness = objective_from_dict(objective)
    except PBTError:  # settings this pbtkit cannot read: no member is named best
        return None
    return best(
        fitness,
        (
            Standing(
                m.member,
                m.score,
                m.metrics,
                finished=m.latest_trial_id is not None,
                failed=m.status == "failed",
            )
            for m in snapshot.members
        ),
    )


def _ancestry(by_id: Mapping[int, TrialRecord], trial_id: int | None) -> list[int]:
    chain: list[int] = []
    while trial_id is not None and trial_id in by_id and trial_id not in chain:
        chain.append(trial_id)
        trial_id = by_id[trial_id].parent_id
    return chain


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _json_values(hparams: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _json_value(v) for k, v in hparams.items()}


def _json_value(value: Any) -> Any:
    return _finite(value) if isinstance(value, float) else value


def _thin(points: list[tuple[int, float]], limit: int) -> list[tuple[int, float]]:
    if len(points) <= limit:
        return points
    stride = math.ceil(len(points) / limit)
    kept = points[::stride]
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return kept
