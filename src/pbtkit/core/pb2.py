"""PB2, Population Based Bandits (Parker-Holder et al. 2020, arXiv 2002.02518).

PBT explores by random perturbation; PB2 instead picks an exploiting member's new
hyperparameters with a time-varying Gaussian-process bandit. Every finished trial is a data
point: where it was in training (its step), the hyperparameters it trained with, and how much
it improved the objective over the trial (its ``gain``). A GP fitted to those points predicts
the improvement of any hyperparameters *now*; the new values maximise the upper confidence
bound ``mean + kappa * std`` of that prediction, so PB2 goes where improvement was high or
where it knows little.

As in Ray Tune's PB2: numbers are normalised to ``[0, 1]`` (log scale for
:class:`~pbtkit.core.LogUniform`), improvements are standardised, the GP is scikit-learn's
``GaussianProcessRegressor`` (an anisotropic RBF kernel over time and hyperparameters, whose
length scale in time lets old data count for less, plus white noise), and the UCB is
maximised over random candidates, refined around the best of them. Integers and ordinals are
treated as numbers and rounded; categorical values are resampled. Unlike Ray, the values other
members are training with right now are not used to spread a batch of suggestions apart.

Conditional hyperparameters (``when=...``) are modelled with an encoding that marks inactive
values, rather than one model per branch: each numeric hyperparameter is one input of the GP,
its unit value when active and :data:`INACTIVE` (-1, outside ``[0, 1]``) when not. Values the
branches share (a learning rate) then learn from every trial instead of a branch's share of an
already small data set; a numeric parent (``layers`` deciding ``width3``) needs no special
case; and the anisotropic kernel learns how much being on a branch matters. The categorical
values are drawn first (resampled, as always), then only candidates consistent with them are
scored: every candidate is decoded parents first and its inactive inputs set to the marker.

scikit-learn is imported only when PB2 fits a model: ``pip install 'pbtkit[pb2]'``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from pbtkit._exceptions import ConfigError, OutOfSpace
from pbtkit.core._specs import check_keys, finite_number
from pbtkit.core.decisions import MemberView
from pbtkit.core.explore import Explorer, Perturb
from pbtkit.core.space import Domain, IntUniform, LogUniform, Ordinal, SearchSpace, Uniform

if TYPE_CHECKING:
    from pbtkit.core.fitness import Fitness
    from pbtkit.core.population import Population

__all__ = ["INACTIVE", "PB2"]

#: The GP input of a numeric hyperparameter that is inactive (active ones lie in [0, 1]).
INACTIVE = -1.0

#: The keys of PB2's spec besides ``type``.
SPEC_KEYS = ("generations", "min_data", "candidates", "kappa", "fallback")


def _int_at_least(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low:
        raise ConfigError(f"PB2({name}={value!r}): {name} must be an integer >= {low}")
    return int(value)


@dataclass(frozen=True, slots=True)
class PB2(Explorer):
    """Choose new hyperparameters with a time-varying GP bandit (GP-UCB).

    An explorer (``PBT(explore=PB2())``) that learns from the population: it reads the
    finished trials of the last ``generations`` generations through
    ``Population.recent_trials``, each with its ``step``, ``hparams`` and ``gain`` (score
    change over the trial; NaN when unknown). With fewer than ``min_data`` trials of known
    gain, or a space without a numeric hyperparameter, it explores like ``fallback``.

    Args:
        generations: How many recent generations of trials to learn from.
        min_data: The fewest trials with a known gain to fit a model to (at least 2).
        candidates: How many random points the UCB is evaluated at (half as many again
            are spent refining around the best ones).
        kappa: The weight of the GP's uncertainty in the UCB; ``None`` for the schedule
            Ray Tune uses, ``sqrt(0.2 + max(0, log(0.4 * n)))`` for ``n`` data points.
        fallback: The explorer used when there is too little data (default ``Perturb()``).

    Raises:
        ConfigError: A count is too small, ``kappa`` is negative or not finite, or the
            fallback is not an explorer of its own (PB2 cannot fall back to PB2).
    """

    kind: ClassVar[str] = "pb2"

    generations: int = 4
    min_data: int = 4
    candidates: int = 512
    kappa: float | None = None
    fallback: Explorer = field(default_factory=Perturb)

    #: Tells the policy to pass ``population`` and ``objective`` (see ``call_explorer``).
    needs_population: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "generations", _int_at_least("generations", self.generations, 1))
        object.__setattr__(self, "min_data", _int_at_least("min_data", self.min_data, 2))
        object.__setattr__(self, "candidates", _int_at_least("candidates", self.candidates, 1))
        if self.kappa is not None:
            kappa = finite_number(self.kappa)
            if kappa is None or kappa < 0:
                raise ConfigError(
                    f"PB2(kappa={self.kappa!r}): kappa must be a finite number >= 0, or None for "
                    f"the default schedule"
                )
            object.__setattr__(self, "kappa", float(kappa))
        if not isinstance(self.fallback, Explorer) or getattr(
            self.fallback, "needs_population", False
        ):
            raise ConfigError(
                f"PB2(fallback={self.fallback!r}): pass an explorer that needs no population, "
                f"e.g. Perturb()"
            )

    def __call__(
        self,
        hparams: Mapping[str, Any],
        space: SearchSpace,
        rng: np.random.Generator,
        *,
        population: Population | None = None,
        objective: Fitness | None = None,
    ) -> dict[str, Any]:
        """New values for the hyperparameters of a member that copies a donor.

        Args:
            hparams: The donor's values (categorical ones are resampled from the prior,
                numeric ones replaced by the bandit's choice).
            space: The search space.
            rng: The source of randomness.
            population: The population, for its recent trials; without one PB2 falls back.
            objective: Says whether a gain is an improvement (``mode``).

        Returns:
            Values inside ``space``.

        Raises:
            ConfigError: scikit-learn is not installed.
            OutOfSpace: ``hparams`` do not lie in ``space``.
        """
        current = space.validate(hparams)
        if space.conditional:
            return self._conditional(current, space, rng, population, objective)
        numeric = _numeric(space)
        if population is None or objective is None or not numeric:
            return self.fallback(current, space, rng)
        data = _data(population.recent_trials(self.generations), numeric)
        if len(data[0]) < self.min_data:
            return self.fallback(current, space, rng)
        times, points, gains = data
        sign = 1.0 if objective.mode == "max" else -1.0
        busy = _points(population.pending_hparams(), numeric)
        unit = self._suggest(times, points, sign * gains, rng, busy)
        chosen = {
            name: _from_unit(domain, float(u))
            for (name, domain), u in zip(numeric, unit, strict=True)
        }
        explored = {
            name: chosen[name] if name in chosen else domain.perturb(current[name], 1.0, rng)
            for name, domain in space.items()
        }
        return space.validate(explored)

    def _conditional(
        self,
        current: dict[str, Any],
        space: SearchSpace,
        rng: np.random.Generator,
        population: Population | None,
        objective: Fitness | None,
    ) -> dict[str, Any]:
        """PB2 on a space with conditions (see the module docstring)."""
        numeric = _numeric(space)
        if population is None or objective is None or not numeric:
            return self.fallback(current, space, rng)
        encoder = _Encoder(space, numeric)
        data = encoder.data(population.recent_trials(self.generations))
        if len(data[0]) < self.min_data:
            return self.fallback(current, space, rng)
        # The categorical values first, one for every such hyperparameter whether active
        # or not: the branch the candidates are scored on.
        fixed = {
            name: domain.perturb(current[name], 1.0, rng) if name in current else domain.sample(rng)
            for name, domain in space.items()
            if name not in encoder.column
        }
        times, points, gains = data
        sign = 1.0 if objective.mode == "max" else -1.0
        busy = encoder.points(population.pending_hparams())
        unit = self._suggest(times, points, sign * gains, rng, busy, encoder.consistent(fixed))
        return space.validate(encoder.decode(unit, fixed))

    def _suggest(
        self,
        times: np.ndarray,
        points: np.ndarray,
        gains: np.ndarray,
        rng: np.random.Generator,
        busy: np.ndarray | None = None,
        consistent: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> np.ndarray:
        """The point of ``[0, 1]^d`` that maximises the UCB of the gain at the latest time.

        ``busy`` holds the unit points of trials training now. As in GP-BUCB (Desautels et
        al. 2014, the batch rule of PB2), each is added to the model as if it had been
        observed at the model's own prediction: the mean stays, the uncertainty there
        shrinks, so a batch of suggestions (a generation decided at once) spreads out
        instead of piling onto one maximum.

        ``consistent`` (conditional spaces) maps candidate points to ones that respect the
        conditions: inactive inputs set to :data:`INACTIVE`.
        """
        try:
            from sklearn.gaussian_process import GaussianProcessRegressor
            from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
        except ImportError:
            raise ConfigError(
                "PB2 fits a Gaussian process with scikit-learn, which is not installed; "
                "install it with pip install 'pbtkit[pb2]'"
            ) from None
        span = times.max() - times.min()
        t = (times - times.min()) / span if span > 0 else np.zeros_like(times)
        now = 1.0 if span > 0 else 0.0
        spread = gains.std()
        y = (gains - gains.mean()) / (spread if spread > 0 else 1.0)
        x = np.column_stack([t, points])
        dims = x.shape[1]
        kernel = ConstantKernel(1.0, (1e-2, 1e2)) * RBF(
            length_scale=np.full(dims, 0.5), length_scale_bounds=(1e-2, 1e2)
        ) + WhiteKernel(0.1, (1e-6, 1e1))
        model = GaussianProcessRegressor(kernel=kernel, normalize_y=False)
        with warnings.catch_warnings():
            # A kernel bound reached is no reason to stop: the fit is still usable.
            warnings.simplefilter("ignore")
            model.fit(x, y)
            if busy is not None and len(busy):
                # The fitted kernel, kept, with the trials in flight added at their
                # predicted gain: the mean stays, the uncertainty around them shrinks.
                at_now = np.column_stack([np.full(len(busy), now), busy])
                x = np.vstack([x, at_now])
                y = np.concatenate([y, model.predict(at_now)])
                model = GaussianProcessRegressor(kernel=model.kernel_, optimizer=None)
                model.fit(x, y)
        n = len(gains)
        kappa = self.kappa
        if kappa is None:
            kappa = math.sqrt(0.2 + max(0.0, math.log(0.4 * n)))

        def ucb(candidates: np.ndarray) -> np.ndarray:
            at_now = np.column_stack([np.full(len(candidates), now), candidates])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mean, std = model.predict(at_now, return_std=True)
            values: np.ndarray = mean + kappa * std
            return values

        d = points.shape[1]
        candidates = np.vstack([rng.random((self.candidates, d)), points])
        if consistent is not None:
            candidates = consistent(candidates)
        scores = ucb(candidates)
        # Refine: jitter the best few candidates and keep whatever is best overall.
        best = candidates[np.argsort(-scores, kind="stable")[:8]]
        jitter = best[rng.integers(len(best), size=max(self.candidates // 2, 1))]
        jitter = np.clip(jitter + 0.05 * rng.standard_normal(jitter.shape), 0.0, 1.0)
        if consistent is not None:
            jitter = consistent(jitter)
        candidates = np.vstack([candidates, jitter])
        scores = np.concatenate([scores, ucb(jitter)])
        chosen: np.ndarray = candidates[int(np.argmax(scores))]
        return chosen

    def to_dict(self) -> dict[str, Any]:
        """The spec ``{"type": "pb2", "generations", "min_data", "candidates", "kappa",
        "fallback"}`` (the fallback as its own explore spec)."""
        return {
            "type": "pb2",
            "generations": self.generations,
            "min_data": self.min_data,
            "candidates": self.candidates,
            "kappa": self.kappa,
            "fallback": self.fallback.to_dict(),
        }

    @classmethod
    def from_settings(cls, arguments: Mapping[str, Any]) -> PB2:
        """Build PB2 from its spec's settings (see :meth:`from_dict`)."""
        check_keys(
            f"explore spec {dict(arguments)!r} of type 'pb2'", arguments, (), ("type", *SPEC_KEYS)
        )
        return cls.from_dict(arguments)

    @classmethod
    def from_dict(cls, arguments: Mapping[str, Any]) -> PB2:
        """Build PB2 from the settings of its spec (``type`` removed); omitted ones take
        their defaults.

        Raises:
            ConfigError: A setting is invalid.
        """
        from pbtkit.core.explore import explorer_from_dict

        settings = dict(arguments)
        if "fallback" in settings:
            settings["fallback"] = explorer_from_dict(settings["fallback"])
        return cls(**settings)


def _numeric(space: SearchSpace) -> list[tuple[str, Domain]]:
    """The hyperparameters PB2 models as numbers (an ordinal of one value is a constant)."""
    return [
        (name, domain)
        for name, domain in space.items()
        if isinstance(domain, Uniform | LogUniform | IntUniform)
        or (isinstance(domain, Ordinal) and len(domain.values) > 1)
    ]


class _Encoder:
    """Values of a conditional space as GP inputs: one per numeric hyperparameter, its
    unit value when active and :data:`INACTIVE` when not."""

    def __init__(self, space: SearchSpace, numeric: Sequence[tuple[str, Domain]]) -> None:
        self.space = space
        self.numeric = list(numeric)
        self.column = {name: j for j, (name, _) in enumerate(self.numeric)}

    def encode(self, values: Mapping[str, Any]) -> list[float] | None:
        """A point for checked ``values``, or None when they do not fit the space (e.g.
        from before a change of the space)."""
        try:
            checked = self.space.validate(values)
            return [
                _to_unit(domain, name, checked[name]) if name in checked else INACTIVE
                for name, domain in self.numeric
            ]
        except OutOfSpace:
            return None

    def data(self, views: Sequence[MemberView]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Times, points and gains of the trials with a known gain that fit the space."""
        rows = [
            (view, point)
            for view in views
            if math.isfinite(view.gain) and (point := self.encode(view.hparams)) is not None
        ]
        d = len(self.numeric)
        return (
            np.array([float(view.step) for view, _ in rows], dtype=np.float64),
            np.array([point for _, point in rows], dtype=np.float64).reshape(len(rows), d),
            np.array([view.gain for view, _ in rows], dtype=np.float64),
        )

    def points(self, hparams: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The points of the given values (those that do not fit the space are skipped)."""
        points = [point for values in hparams if (point := self.encode(values)) is not None]
        return np.asarray(points, dtype=np.float64).reshape(len(points), len(self.numeric))

    def decode(self, unit: np.ndarray, fixed: Mapping[str, Any]) -> dict[str, Any]:
        """The member a point stands for, the categorical values taken from ``fixed``:
        walked parents first, inactive values left out (``unit`` may hold markers)."""
        values: dict[str, Any] = {}
        for name in self.space.order:
            if not self.space.is_active(name, values):
                continue
            j = self.column.get(name)
            if j is None:
                values[name] = fixed[name]
            else:
                u = float(unit[j])
                # A marker where the value is now active (a data point of another branch
                # offered as a candidate): the middle of the range, as neutral as any.
                values[name] = _from_unit(self.space[name], u if u >= 0.0 else 0.5)
        return {name: values[name] for name in self.space if name in values}

    def consistent(self, fixed: Mapping[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
        """A map of candidate points to the points of the members they decode to."""

        def apply(candidates: np.ndarray) -> np.ndarray:
            out = np.array(candidates, dtype=np.float64, copy=True)
            for row in out:
                member = self.decode(row, fixed)
                for name, j in self.column.items():
                    value = member.get(name)
                    row[j] = (
                        INACTIVE if name not in member else _to_unit(self.space[name], name, value)
                    )
            return out

        return apply


def _data(
    views: Sequence[MemberView], numeric: Sequence[tuple[str, Domain]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Times, unit points and gains of the trials whose gain is known and whose values lie
    in the space (others, e.g. from before a change of the space, are skipped)."""
    rows = [
        (view, point)
        for view in views
        if math.isfinite(view.gain) and (point := _unit(view.hparams, numeric)) is not None
    ]
    return (
        np.array([float(view.step) for view, _ in rows], dtype=np.float64),
        np.array([point for _, point in rows], dtype=np.float64).reshape(len(rows), len(numeric)),
        np.array([view.gain for view, _ in rows], dtype=np.float64),
    )


def _points(
    hparams: Sequence[Mapping[str, Any]], numeric: Sequence[tuple[str, Domain]]
) -> np.ndarray:
    """The unit points of the given values (those outside the space are skipped)."""
    points = [point for values in hparams if (point := _unit(values, numeric)) is not None]
    return np.asarray(points, dtype=np.float64).reshape(len(points), len(numeric))


def _unit(values: Mapping[str, Any], numeric: Sequence[tuple[str, Domain]]) -> list[float] | None:
    """``values`` as a point of ``[0, 1]^d``, or None when one lies outside the space."""
    try:
        return [_to_unit(domain, name, values[name]) for name, domain in numeric]
    except (KeyError, OutOfSpace):
        return None


def _to_unit(domain: Domain, name: str, value: Any) -> float:
    """``value`` mapped to ``[0, 1]`` (log scale for LogUniform, index for Ordinal)."""
    checked = domain.validate(name, value)
    if isinstance(domain, Uniform):
        # halves, so that a range near the float limit does not overflow
        return float((checked / 2 - domain.low / 2) / (domain.high / 2 - domain.low / 2))
    if isinstance(domain, LogUniform):
        low, high = math.log(domain.low), math.log(domain.high)
        return (math.log(checked) - low) / (high - low)
    if isinstance(domain, IntUniform):
        return float(checked - domain.low) / float(domain.high - domain.low)
    assert isinstance(domain, Ordinal)
    index = next(i for i, v in enumerate(domain.values) if v is checked)
    return index / (len(domain.values) - 1)


def _from_unit(domain: Domain, u: float) -> Any:
    """The value at ``u`` in ``[0, 1]``, inside the domain."""
    u = min(max(u, 0.0), 1.0)
    if isinstance(domain, Uniform):
        return min(max(domain.low * (1.0 - u) + domain.high * u, domain.low), domain.high)
    if isinstance(domain, LogUniform):
        low, high = math.log(domain.low), math.log(domain.high)
        return min(max(math.exp(low * (1.0 - u) + high * u), domain.low), domain.high)
    if isinstance(domain, IntUniform):
        moved = domain.low + round(u * float(domain.high - domain.low))
        return min(max(moved, domain.low), domain.high)
    assert isinstance(domain, Ordinal)
    return domain.values[round(u * (len(domain.values) - 1))]
