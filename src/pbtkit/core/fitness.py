"""Fitness: which reported metric decides, and whether higher or lower is better."""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pbtkit._exceptions import ConfigError, MetricError

__all__ = ["Objective", "metric_value", "objective_from_dict", "require_metric"]

_MODES = ("max", "min")


@dataclass(frozen=True, slots=True)
class Objective:
    """The metric PBT optimises and its direction.

    Args:
        metric: The name of a metric the training function reports.
        mode: ``"max"`` if higher is better (accuracy), ``"min"`` if lower is (loss).

    Raises:
        ConfigError: ``metric`` is not a non-empty string or ``mode`` is neither
            ``"max"`` nor ``"min"``.
    """

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

    def better(self, a: float, b: float) -> bool:
        """Whether score ``a`` is finite and strictly better than score ``b``."""
        return math.isfinite(a) and self.key(a) > self.key(b)

    def to_dict(self) -> dict[str, Any]:
        """The spec ``{"metric": name, "mode": "max" | "min"}``."""
        return {"metric": self.metric, "mode": self.mode}


def objective_from_dict(spec: Mapping[str, Any]) -> Objective:
    """Build an objective from ``{"metric": name, "mode": "max" | "min"}``.

    Raises:
        ConfigError: ``metric`` is missing, a key is unknown or a value is invalid.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"an objective spec must be a mapping, got {type(spec).__name__}")
    unknown = sorted(str(key) for key in spec if key not in ("metric", "mode"))
    if "metric" not in spec or unknown:
        problem = f"unknown {', '.join(unknown)}" if unknown else "missing metric"
        raise ConfigError(
            f"objective spec {dict(spec)!r}: {problem}; it takes the keys metric, mode"
        )
    return Objective(spec["metric"], spec.get("mode", "max"))


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
