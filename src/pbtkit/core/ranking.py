"""One ranking of the members, for everything that names a best member or orders members.

``Result.best``, ``pbtkit status``, the dashboard, TensorBoard, the exports and replay's
default member all call :func:`rank`, so they agree, Pareto objectives included: a
single-metric or weighted objective ranks by score; a Pareto one by non-dominated sorting
of every member's metrics with the crowding-distance tie-break (see
:class:`~pbtkit.core.fitness.MultiObjective`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pbtkit.core.decisions import MemberView
from pbtkit.core.fitness import Fitness
from pbtkit.core.population import Population

__all__ = ["Standing", "best", "rank"]


@dataclass(frozen=True, slots=True)
class Standing:
    """What the ranking needs to know of one member.

    Attributes:
        member: The member's index.
        score: Its objective's value after its latest finished trial (NaN if none).
        metrics: The metrics of that trial (a Pareto objective ranks by them).
        finished: Whether it has finished a trial at all.
        failed: Whether it was given up on.
    """

    member: int
    score: float
    metrics: Mapping[str, float] = field(default_factory=dict)
    finished: bool = True
    failed: bool = False


def rank(objective: Fitness, standings: Iterable[Standing]) -> list[int]:
    """The members, best first.

    Members that finished a trial come before those that did not, members still in the
    race before failed ones, then the objective's order (a score that is not finite ranks
    last); equal members in index order.
    """
    rows: Sequence[Standing] = list(standings)
    if not rows:
        return []
    population = Population.from_views(
        MemberView(
            member=s.member,
            trial_id=0,
            step=0,
            score=s.score if s.finished else math.nan,
            metrics=s.metrics if s.finished else {},
        )
        for s in rows
    )
    keys = dict(zip(population.members.tolist(), objective.keys(population).tolist(), strict=True))
    ordered = sorted(rows, key=lambda s: (not s.finished, s.failed, -keys[s.member], s.member))
    return [s.member for s in ordered]


def best(objective: Fitness, standings: Iterable[Standing]) -> int | None:
    """The best member (see :func:`rank`), or None while no member has a finite score."""
    rows = list(standings)
    scored = [s for s in rows if s.finished and _rankable(objective, s)]
    ranked = rank(objective, scored)
    return ranked[0] if ranked else None


def _rankable(objective: Fitness, standing: Standing) -> bool:
    names = getattr(objective, "metric_names", None)
    if getattr(objective, "combine", None) == "pareto" and names:
        return all(math.isfinite(standing.metrics.get(n, math.nan)) for n in names)
    return math.isfinite(standing.score)
