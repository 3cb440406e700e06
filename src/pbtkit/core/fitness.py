"""Fitness: how a trial's reported metrics become a score, and how scores rank.

Every fitness is a :class:`Fitness`: :class:`Objective` for one metric, and
:class:`MultiObjective` for several (combined by a weighted sum, or ranked by Pareto
dominance with an NSGA-II crowding tie-break). Exploit strategies see a fitness only through
:meth:`Fitness.keys` (one sort key per member of a population, higher is better) and the
controller only through :meth:`Fitness.score` (the scalar the store keeps for a trial), so
every strategy works with every fitness.
"""

from __future__ import annotations

import abc
import difflib
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from pbtkit._exceptions import ConfigError, MetricError
from pbtkit.core._registry import Plugin
from pbtkit.core._specs import check_keys, finite_number

if TYPE_CHECKING:
    from pbtkit.core.population import Population

__all__ = [
    "Fitness",
    "MultiObjective",
    "Objective",
    "metric_value",
    "objective_from_dict",
    "require_metric",
]

_MODES = ("max", "min")
_COMBINE = ("weighted", "pareto")


class Fitness(Plugin, abc.ABC, family="fitness"):
    """How a trial's metrics become a score, and how members rank.

    Your own: subclass it; it registers itself when defined, under its ``kind`` or its
    import path, like an :class:`~pbtkit.core.exploit.Exploiter`.

    Contract, relied on by the controller and every exploit strategy:

    - :meth:`score` turns a trial's metrics into the one float the store keeps (raw: not
      sign-adjusted; non-finite values are allowed and rank last);
    - :meth:`key` and :meth:`better` compare two such stored scores, in the direction
      :attr:`mode` says;
    - :meth:`keys` gives one sort key per row of a population, higher is better, ``-inf``
      for a row that cannot be ranked; exploiters compare members only through it;
    - instances are immutable and hashable (a population memoises keys per fitness).

    Attributes:
        metric: The primary metric: the one :meth:`score` is named after in summaries.
        mode: ``"max"`` if a higher stored score is better, ``"min"`` if a lower one is.
    """

    __slots__ = ()

    metric: str
    mode: Literal["max", "min"]

    @property
    @abc.abstractmethod
    def metric_names(self) -> tuple[str, ...]:
        """Every metric a trial must report for :meth:`score` to succeed."""

    @property
    def label(self) -> str:
        """What the stored score is, for people: the metric's name, or a formula."""
        return self.metric

    @abc.abstractmethod
    def score(self, metrics: Mapping[str, Any]) -> float:
        """The scalar the store keeps for a trial with these metrics.

        Args:
            metrics: The metrics a trial reported, by name.

        Returns:
            The score as a float (raw: compare scores with :meth:`key`).

        Raises:
            MetricError: A metric of :attr:`metric_names` was not reported or is not a
                number.
        """

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able spec that :func:`objective_from_dict` turns back into this:
        ``{"type": kind, **settings}`` by default (the built-in objectives write their
        older form, without a type)."""
        return Plugin.to_dict(self)

    def key(self, score: float) -> float:
        """A sort key where higher is better; a non-finite score always ranks last.

        Args:
            score: A raw score as returned by :meth:`score`.

        Returns:
            ``score`` for ``"max"``, ``-score`` for ``"min"``, ``-inf`` for NaN and ±inf.
        """
        if not math.isfinite(score):
            return -math.inf
        return score if self.mode == "max" else -score

    def keys(self, population: Population) -> np.ndarray:
        """One sort key per row of ``population`` (higher is better, ``-inf`` for rows
        that cannot be ranked); by default :meth:`key` of each row's score, vectorised."""
        scores = population.scores
        keys = scores.copy() if self.mode == "max" else -scores
        keys[~np.isfinite(scores)] = -np.inf
        return keys

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` is finite and strictly better than score ``b``."""
        return math.isfinite(a) and self.key(a) > self.key(b)


@dataclass(frozen=True, slots=True)
class Objective(Fitness):
    """The metric PBT optimises and its direction.

    Args:
        metric: The name of a metric the training function reports.
        mode: ``"max"`` if higher is better (accuracy), ``"min"`` if lower is (loss).

    Raises:
        ConfigError: ``metric`` is not a non-empty string or ``mode`` is neither
            ``"max"`` nor ``"min"``.
    """

    kind: ClassVar[str] = "objective"

    metric: str
    mode: Literal["max", "min"] = "max"

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric.strip():
            raise ConfigError(
                f"Objective(metric={self.metric!r}): metric must be the non-empty name of a "
                f"metric you report, e.g. 'accuracy'"
            )
        if self.mode not in _MODES:
            raise ConfigError(
                f"Objective(mode={self.mode!r}): mode must be 'max' (higher is better) or "
                f"'min' (lower is better)"
            )

    @property
    def metric_names(self) -> tuple[str, ...]:
        """``(metric,)``."""
        return (self.metric,)

    def score(self, metrics: Mapping[str, Any]) -> float:
        """The objective metric's raw value (not sign-adjusted).

        Args:
            metrics: The metrics a trial reported, by name.

        Returns:
            The value as a float; NaN and infinities are returned as they are.

        Raises:
            MetricError: The metric was not reported, or is not a number.
        """
        require_metric(self.metric, metrics)
        value = metrics[self.metric]
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise MetricError(
                f"the objective metric {self.metric!r} is {type(value).__name__} {value!r}; "
                f"report a number"
            )
        return float(value)

    def to_dict(self) -> dict[str, Any]:
        """The spec ``{"metric": name, "mode": "max" | "min"}``."""
        return {"metric": self.metric, "mode": self.mode}


@dataclass(frozen=True, slots=True, init=False, repr=False)
class MultiObjective(Fitness):
    """An objective over several metrics, each with its own direction.

    Two ways to combine them:

    - ``combine="weighted"`` (the default): the score is the weighted sum of the
      sign-adjusted values, ``sum(w * v for max metrics) - sum(w * v for min metrics)``,
      so a higher score is better (``mode == "max"``). It is stored like any score and
      ranks like one. Scale the weights so the metrics' ranges are comparable.
    - ``combine="pareto"``: members rank by non-dominated sorting of all the metrics
      (front 0 first), and within a front by NSGA-II's crowding distance (the extremes
      of the front and members in sparse parts of it first), which keeps the front spread
      out. A Pareto rank needs the whole population, so :meth:`score` stores the *first*
      metric's raw value (for summaries and "best member"), and ranking is done by
      :meth:`keys` from the population's metrics (``Population.metric_matrix``).

    A non-finite value of any metric makes a member rank last.

    Args:
        metrics: The metrics and their modes, in order (the first is the primary one):
            ``{"accuracy": "max", "latency": "min"}``, or a sequence of :class:`Objective`.
        weights: For ``"weighted"``: a positive, finite weight per metric, by name
            (``{"acc": 1, "ms": 0.01}``) or in the metrics' order (``[1, 0.01]``); default 1
            each. Not allowed with ``"pareto"``.
        combine: ``"weighted"`` or ``"pareto"``.

    Raises:
        ConfigError: No metric or a repeated one, an invalid mode, ``combine`` is unknown,
            or the weights do not give every metric a positive finite number (or are given
            for ``"pareto"``).
    """

    kind: ClassVar[str] = "multi_objective"

    objectives: tuple[Objective, ...]
    weights: tuple[float, ...] | None
    combine: Literal["weighted", "pareto"]
    metric: str = field(compare=False)
    mode: Literal["max", "min"] = field(compare=False)

    def __init__(
        self,
        metrics: Mapping[str, str] | Sequence[Objective],
        *,
        weights: Mapping[str, float] | Sequence[float] | None = None,
        combine: str = "weighted",
    ) -> None:
        objectives = _objectives(metrics)
        if combine not in _COMBINE:
            raise ConfigError(
                f"MultiObjective(combine={combine!r}): combine must be 'weighted' (a weighted "
                f"sum) or 'pareto' (non-dominated sorting)"
            )
        names = [objective.metric for objective in objectives]
        normalised: tuple[float, ...] | None = None
        if combine == "pareto":
            if weights is not None:
                raise ConfigError(
                    "MultiObjective(combine='pareto'): weights are only for combine="
                    "'weighted'; Pareto ranking does not weigh the metrics"
                )
        else:
            normalised = _weights(names, weights)
        object.__setattr__(self, "objectives", objectives)
        object.__setattr__(self, "weights", normalised)
        object.__setattr__(self, "combine", combine)
        object.__setattr__(self, "metric", names[0])
        object.__setattr__(self, "mode", "max" if combine == "weighted" else objectives[0].mode)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> MultiObjective:
        """Build from a typed spec's settings (the same keys as the untyped form)."""
        return _multi_from_dict(settings)

    def __repr__(self) -> str:
        metrics = {objective.metric: objective.mode for objective in self.objectives}
        if self.weights is None:
            return f"MultiObjective({metrics!r}, combine={self.combine!r})"
        weights = dict(zip(metrics, self.weights, strict=True))
        return f"MultiObjective({metrics!r}, weights={weights!r})"

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics, in order."""
        return tuple(objective.metric for objective in self.objectives)

    @property
    def label(self) -> str:
        """``"weighted(acc, -latency)"`` or the first metric's name for ``"pareto"``."""
        if self.weights is None:
            return self.metric
        terms = [
            f"{'' if o.mode == 'max' else '-'}{'' if w == 1 else f'{w:g}*'}{o.metric}"
            for o, w in zip(self.objectives, self.weights, strict=True)
        ]
        return f"weighted({', '.join(terms)})"

    def score(self, metrics: Mapping[str, Any]) -> float:
        """The weighted sum (``"weighted"``) or the first metric's raw value (``"pareto"``).

        Every metric must be reported either way, so a trial that forgot one fails at once
        rather than ranking last without a word.

        Returns:
            The score; NaN when a weighted metric is not finite.

        Raises:
            MetricError: A metric was not reported, or is not a number.
        """
        values = [objective.score(metrics) for objective in self.objectives]
        if self.weights is None:
            return values[0]
        if not all(math.isfinite(value) for value in values):
            return math.nan
        return math.fsum(
            weight * (value if objective.mode == "max" else -value)
            for objective, weight, value in zip(self.objectives, self.weights, values, strict=True)
        )

    def keys(self, population: Population) -> np.ndarray:
        """Sort keys per row, higher is better.

        ``"weighted"``: the stored scores (already weighted sums). ``"pareto"``: ``-front``
        plus a crowding bonus in ``[0, 0.5]`` (so any member of front ``r`` ranks above
        every member of front ``r + 1``; members with the same metrics tie); ``-inf`` for
        rows with a missing or non-finite metric.

        Raises:
            MetricError: ``"pareto"`` over a population that carries no metrics.
        """
        if self.weights is not None:
            return Fitness.keys(self, population)
        try:
            matrix = population.metric_matrix(self.metric_names)
        except ValueError:
            raise MetricError(
                f"a Pareto objective ranks members by {', '.join(self.metric_names)}, but the "
                f"population carries no metrics; build it with each member's metrics"
            ) from None
        signs = np.array([1.0 if o.mode == "max" else -1.0 for o in self.objectives])
        return pareto_keys(matrix * signs)

    def to_dict(self) -> dict[str, Any]:
        """The spec ``{"metrics": [{"metric", "mode", "weight"?}, ...], "combine": ...}``.

        The metrics are a list, not a mapping: their order matters and some databases
        (PostgreSQL's ``jsonb``) do not keep the order of an object's keys.
        """
        entries: list[dict[str, Any]] = []
        for index, objective in enumerate(self.objectives):
            entry: dict[str, Any] = objective.to_dict()
            if self.weights is not None:
                entry["weight"] = self.weights[index]
            entries.append(entry)
        return {"metrics": entries, "combine": self.combine}


def _objectives(metrics: Any) -> tuple[Objective, ...]:
    if isinstance(metrics, Mapping):
        objectives = tuple(Objective(name, mode) for name, mode in metrics.items())
    elif isinstance(metrics, Sequence) and not isinstance(metrics, str | bytes):
        objectives = tuple(metrics)
        for objective in objectives:
            if not isinstance(objective, Objective):
                raise ConfigError(
                    f"MultiObjective({metrics!r}): {objective!r} is not an Objective; pass "
                    f"{{'accuracy': 'max', 'latency': 'min'}} or a list of Objective"
                )
    else:
        raise ConfigError(
            f"MultiObjective({metrics!r}): pass the metrics and their modes, e.g. "
            f"{{'accuracy': 'max', 'latency': 'min'}}"
        )
    if not objectives:
        raise ConfigError("MultiObjective({}): give at least one metric")
    names = [objective.metric for objective in objectives]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(
            f"MultiObjective: the metric {', '.join(repeated)} appears more than once; "
            f"name each metric once"
        )
    return objectives


def _weights(names: Sequence[str], weights: Any) -> tuple[float, ...]:
    if weights is None:
        return tuple(1.0 for _ in names)
    if isinstance(weights, Sequence) and not isinstance(weights, str | bytes):
        # a list in the order the metrics were given: {"acc": "max", "ms": "min"}, [1, 0.01]
        if len(weights) != len(names):
            raise ConfigError(
                f"MultiObjective(weights={list(weights)!r}): give one weight per metric, in "
                f"their order ({', '.join(names)}), or a dict by name"
            )
        weights = dict(zip(names, weights, strict=True))
    if not isinstance(weights, Mapping):
        raise ConfigError(
            f"MultiObjective(weights={weights!r}): weights must map each metric to a "
            f"number, e.g. {{{', '.join(f'{name!r}: 1.0' for name in names)}}}, or list one "
            "number per metric in their order"
        )
    # a weight for each metric, and for nothing else
    check_keys(f"MultiObjective(weights={dict(weights)!r})", weights, names, names)
    out = []
    for name in names:
        value = weights[name]
        number = finite_number(value)
        if number is None or number <= 0:
            raise ConfigError(
                f"MultiObjective: the weight of {name!r} is {value!r}; weights must be finite "
                f"numbers above 0 (the mode, not the weight's sign, says the direction)"
            )
        out.append(float(value))
    return tuple(out)


# --- Pareto ranking ---------------------------------------------------------------------


def pareto_keys(values: np.ndarray) -> np.ndarray:
    """Sort keys from non-dominated sorting with a crowding-distance tie-break.

    Args:
        values: An ``n x m`` array, higher is better in every column; a row with a NaN or
            an infinity cannot be ranked.

    Returns:
        ``n`` keys: ``-front + bonus`` where ``front`` is the row's non-dominated front
        (0 is the Pareto front) and ``bonus`` in ``[0, 0.5]`` grows with its NSGA-II
        crowding distance within the front (boundary points get the most); equal rows get
        equal keys; ``-inf`` for rows that cannot be ranked. Costs ``O(n^2 m)``.
    """
    values = np.asarray(values, dtype=np.float64)
    keys = np.full(len(values), -np.inf)
    valid = np.flatnonzero(np.all(np.isfinite(values), axis=1))
    if not len(valid):
        return keys
    points = values[valid]
    fronts = _fronts(points)
    for front in range(int(fronts.max()) + 1):
        rows = np.flatnonzero(fronts == front)
        crowding = _crowding(points[rows])
        distinct = np.unique(crowding)  # ascending, inf last
        position = np.searchsorted(distinct, crowding)
        keys[valid[rows]] = -front + 0.5 * position / max(len(distinct) - 1, 1)
    return keys


def _fronts(points: np.ndarray) -> np.ndarray:
    """Each row's non-dominated front (0 = not dominated by any row)."""
    n = len(points)
    at_least = np.ones((n, n), dtype=bool)
    above = np.zeros((n, n), dtype=bool)
    for column in points.T:
        at_least &= column[:, None] >= column[None, :]
        above |= column[:, None] > column[None, :]
    dominates = at_least & above  # dominates[i, j]: row i dominates row j
    dominated_by = dominates.sum(axis=0)
    fronts = np.full(n, -1, dtype=np.int64)
    current = np.flatnonzero(dominated_by == 0)
    front = 0
    while len(current):
        fronts[current] = front
        dominated_by = dominated_by - dominates[current].sum(axis=0)
        current = np.flatnonzero((dominated_by == 0) & (fronts < 0))
        front += 1
    return fronts


def _crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row of one front; equal rows share theirs."""
    unique, inverse = np.unique(points, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    distance = np.zeros(len(unique))
    if len(unique) <= 2:
        distance[:] = np.inf
        return distance[inverse]
    for column in unique.T:
        order = np.argsort(column, kind="stable")
        # halves, so that the span of values near the float limit stays finite
        half = column[order] / 2
        span = half[-1] - half[0]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (half[2:] - half[:-2]) / span
    return distance[inverse]


# --- specs ------------------------------------------------------------------------------


def objective_from_dict(spec: Mapping[str, Any]) -> Fitness:
    """Build a fitness from its spec, as written by its ``to_dict``.

    Args:
        spec: ``{"metric": name, "mode": "max" | "min"}`` for an :class:`Objective`, or
            ``{"metrics": [{"metric": name, "mode": ..., "weight": w}, ...],
            "combine": "weighted" | "pareto"}`` for a :class:`MultiObjective` (``mode``
            defaults to ``"max"``, ``weight`` to 1, ``combine`` to ``"weighted"``).

    Raises:
        ConfigError: A key is missing or unknown, or a value is invalid.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"an objective spec must be a mapping, got {type(spec).__name__}")
    if "type" in spec:  # a fitness of its own class: {"type": "mypkg.module:Class", ...}
        built: Fitness = Fitness.registry.build(spec)
        return built
    if "metrics" in spec:
        return _multi_from_dict(spec)
    unknown = sorted(str(key) for key in spec if key not in ("metric", "mode"))
    if "metric" not in spec or unknown:
        problem = f"unknown {', '.join(unknown)}" if unknown else "missing metric"
        raise ConfigError(
            f"objective spec {dict(spec)!r}: {problem}; it takes the keys metric, mode "
            f"(or metrics, combine for several metrics)"
        )
    return Objective(spec["metric"], spec.get("mode", "max"))


def _multi_from_dict(spec: Mapping[str, Any]) -> MultiObjective:
    unknown = sorted(str(key) for key in spec if key not in ("metrics", "combine"))
    if unknown:
        raise ConfigError(
            f"objective spec {dict(spec)!r}: unknown {', '.join(unknown)}; an objective over "
            f"several metrics takes the keys metrics, combine"
        )
    entries = spec["metrics"]
    if isinstance(entries, str | bytes | Mapping) or not isinstance(entries, Sequence):
        raise ConfigError(
            f"objective spec {dict(spec)!r}: metrics must be a list such as "
            f"[{{'metric': 'accuracy', 'mode': 'max'}}, {{'metric': 'latency', 'mode': 'min'}}]"
        )
    combine = spec.get("combine", "weighted")
    objectives: list[Objective] = []
    weights: dict[str, float] = {}
    for entry in entries:
        if not isinstance(entry, Mapping) or "metric" not in entry:
            raise ConfigError(
                f"objective spec {dict(spec)!r}: each of metrics must be a mapping with a "
                f"metric, e.g. {{'metric': 'accuracy', 'mode': 'max'}}; got {entry!r}"
            )
        extra = sorted(str(key) for key in entry if key not in ("metric", "mode", "weight"))
        if extra:
            raise ConfigError(
                f"objective spec {dict(spec)!r}: unknown {', '.join(extra)} in {dict(entry)!r}; "
                f"each metric takes the keys metric, mode, weight"
            )
        objectives.append(Objective(entry["metric"], entry.get("mode", "max")))
        if "weight" in entry:
            weights[entry["metric"]] = entry["weight"]
    if combine == "weighted":
        full = {o.metric: weights.get(o.metric, 1.0) for o in objectives}
        return MultiObjective(objectives, weights=full, combine=combine)
    return MultiObjective(objectives, weights=weights or None, combine=combine)


def require_metric(metric: str, reported: Iterable[str]) -> None:
    """Raise if ``metric`` is not among the names reported, suggesting a close one.

    Raises:
        MetricError: It was never reported.
    """
    names = sorted(str(name) for name in reported)
    if metric in names:
        return
    close = difflib.get_close_matches(metric, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise MetricError(
        f"the objective metric {metric!r} was never reported; reported: "
        f"{', '.join(names) or 'nothing'}{hint} — report it with trial.report(step, "
        f"{metric}=...) or set metric= to one you report"
    )


def metric_value(name: str, value: Any) -> float:
    """A reported value as a float: numbers, numpy and torch scalars, 0-d arrays; NaN allowed.

    Raises:
        MetricError: The value is a bool or cannot be read as a real number.
    """
    if not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise MetricError(
        f"metric {name!r} must be a real number, got {type(value).__name__} {value!r}; "
        "report a float such as loss.item()"
    )
