"""The population as a decision sees it: one column per field, one row per member.

The controller builds a :class:`Population` from its cache of the store's member rows,
with every score already made comparable to the deciding member's (see
``pbtkit.controller._population.comparable``). Strategies read the columns with numpy,
so a decision costs a few vectorised passes over the population instead of a Python loop
over thousands of members, and the ranking is computed once per population and shared
by every member decided against it (a whole generation at a generational barrier).

Strategies that need more than the latest trial of each member ask for it through two
lazy hooks the controller fills in from the store:

- :meth:`Population.history`: a member's last ``k`` values of the objective metric
  (t-test selection);
- :meth:`Population.recent_trials`: the finished trials of the last few generations
  (initiator-based evolution, PB2);
- :meth:`Population.pending_hparams`: the hyperparameters of the trials waiting or
  training now (PB2 spreads a batch of suggestions away from them).

Tests and custom strategies can build one from :class:`MemberView` values with
:meth:`Population.from_views`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pbtkit.core.decisions import MemberView

if TYPE_CHECKING:
    from pbtkit.core.fitness import Fitness

__all__ = ["Population"]

History = Callable[[int, int], Sequence[float]]
Recent = Callable[[int], Sequence[MemberView]]
Pending = Callable[[], Sequence[Mapping[str, Any]]]


class Population:
    """Each member's latest finished trial, as columns.

    Args:
        members: Member slots, one per row (unique).
        trial_ids: Each row's latest finished trial.
        steps: The step each row's latest trial ended at.
        scores: Each row's objective score as compared by this decision (raw, not
            sign-adjusted; NaN when not finite or not reported).
        has_checkpoint: Whether each row's latest trial left a checkpoint.
        hparams: Each row's hyperparameters.
        metrics: Each row's latest metrics (for objectives over several metrics), or
            ``None`` when only the objective's score is known.
        history: ``history(member, k)``: that member's last ``k`` objective values,
            oldest first.
        recent: ``recent(generations)``: the finished trials of the last ``generations``
            generations, as views (``trial_id`` names the trial, which may be older than
            its member's latest).
        pending: ``pending()``: the hyperparameters of the trials not finished yet
            (pending or running), read anew on each call.

    Raises:
        ValueError: The columns differ in length or a member appears twice.
    """

    __slots__ = (
        "_history",
        "_memo",
        "_pending",
        "_recent",
        "has_checkpoint",
        "hparams",
        "members",
        "metrics",
        "scores",
        "steps",
        "trial_ids",
    )

    def __init__(
        self,
        *,
        members: np.ndarray,
        trial_ids: np.ndarray,
        steps: np.ndarray,
        scores: np.ndarray,
        has_checkpoint: np.ndarray,
        hparams: Sequence[Mapping[str, Any]],
        metrics: Sequence[Mapping[str, float]] | None = None,
        history: History | None = None,
        recent: Recent | None = None,
        pending: Pending | None = None,
    ) -> None:
        self.members = np.asarray(members, dtype=np.int64)
        self.trial_ids = np.asarray(trial_ids, dtype=np.int64)
        self.steps = np.asarray(steps, dtype=np.int64)
        self.scores = np.asarray(scores, dtype=np.float64)
        self.has_checkpoint = np.asarray(has_checkpoint, dtype=bool)
        self.hparams = hparams
        self.metrics = metrics
        n = len(self.members)
        lengths = {
            len(self.trial_ids),
            len(self.steps),
            len(self.scores),
            len(self.has_checkpoint),
            len(hparams),
        }
        if metrics is not None:
            lengths.add(len(metrics))
        if lengths != {n}:
            raise ValueError(f"Population columns differ in length: {sorted(lengths)} vs {n}")
        self._history = history
        self._recent = recent
        self._pending = pending
        self._memo: dict[Any, Any] = {}

    @classmethod
    def from_views(
        cls,
        views: Iterable[MemberView],
        *,
        history: History | None = None,
        recent: Recent | None = None,
        pending: Pending | None = None,
    ) -> Population:
        """A population of the given views (each member once; the last view of a member
        wins)."""
        by_member = {view.member: view for view in views}
        rows = list(by_member.values())
        return cls(
            members=np.array([v.member for v in rows], dtype=np.int64),
            trial_ids=np.array([v.trial_id for v in rows], dtype=np.int64),
            steps=np.array([v.step for v in rows], dtype=np.int64),
            scores=np.array([v.score for v in rows], dtype=np.float64),
            has_checkpoint=np.array([v.has_checkpoint for v in rows], dtype=bool),
            hparams=[v.hparams for v in rows],
            metrics=[v.metrics for v in rows] if any(v.metrics for v in rows) else None,
            history=history,
            recent=recent,
            pending=pending,
        )

    @classmethod
    def of(cls, population: Population | Iterable[MemberView], member: MemberView) -> Population:
        """``population`` as a :class:`Population` whose row for ``member.member`` is
        ``member`` (added when absent)."""
        if isinstance(population, Population):
            return population.with_member(member)
        return cls.from_views([*population, member])

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[MemberView]:
        return (self.view(i) for i in range(len(self)))

    def view(self, index: int) -> MemberView:
        """Row ``index`` as a :class:`MemberView`."""
        return MemberView(
            member=int(self.members[index]),
            trial_id=int(self.trial_ids[index]),
            step=int(self.steps[index]),
            score=float(self.scores[index]),
            hparams=self.hparams[index],
            has_checkpoint=bool(self.has_checkpoint[index]),
            metrics={} if self.metrics is None else self.metrics[index],
        )

    def index(self, member: int) -> int:
        """The row of ``member``.

        Raises:
            KeyError: ``member`` is not in the population.
        """
        found = np.flatnonzero(self.members == member)
        if not len(found):
            raise KeyError(f"member {member} is not in the population")
        return int(found[0])

    def with_member(self, member: MemberView) -> Population:
        """This population with ``member``'s row replaced by (or extended with) ``member``.

        Returns ``self`` when the row already says the same, so memoised rankings are
        shared.
        """
        try:
            i = self.index(member.member)
        except KeyError:
            i = -1
        if i >= 0 and self.view(i) == member:
            return self
        views = [v for v in self if v.member != member.member] + [member]
        return Population.from_views(
            views, history=self._history, recent=self._recent, pending=self._pending
        )

    def keys(self, objective: Fitness) -> np.ndarray:
        """Sort keys where higher is better (non-finite scores ``-inf``), memoised."""
        memo_key = ("keys", objective)
        keys = self._memo.get(memo_key)
        if keys is None:
            keys = objective.keys(self)
            self._memo[memo_key] = keys
        return keys

    def order(self, objective: Fitness) -> np.ndarray:
        """Row indices best first; ties go to the lower member slot. Memoised."""
        memo_key = ("order", objective)
        order = self._memo.get(memo_key)
        if order is None:
            order = np.lexsort((self.members, -self.keys(objective)))
            self._memo[memo_key] = order
        return order

    def rank(self, index: int, objective: Fitness) -> int:
        """Row ``index``'s place in :meth:`order` (0 is the best), without sorting."""
        keys = self.keys(objective)
        mine = keys[index]
        ahead = keys > mine
        ties = (keys == mine) & (self.members < self.members[index])
        return int(np.count_nonzero(ahead) + np.count_nonzero(ties))

    def metric_matrix(self, names: Sequence[str]) -> np.ndarray:
        """A ``len(self) x len(names)`` array of the rows' latest metrics (NaN where not
        reported or not finite). Falls back to the score column for a single metric when
        the rows carry no metrics."""
        if self.metrics is None:
            if len(names) == 1:
                return self.scores.reshape(-1, 1).copy()
            raise ValueError(
                f"the population carries no metrics, so {list(names)} cannot be compared"
            )
        out = np.full((len(self), len(names)), np.nan)
        for row, metrics in enumerate(self.metrics):
            for col, name in enumerate(names):
                value = metrics.get(name)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out[row, col] = float(value)
        out[~np.isfinite(out)] = np.nan
        return out

    def history(self, member: int, k: int) -> np.ndarray:
        """``member``'s last ``k`` objective values, oldest first (fewer if it has fewer).

        Raises:
            LookupError: This population was built without a history source.
        """
        if self._history is None:
            raise LookupError("this population has no history source")
        memo_key = ("history", member, k)
        values = self._memo.get(memo_key)
        if values is None:
            values = np.asarray(self._history(member, k), dtype=np.float64)
            self._memo[memo_key] = values
        return values

    def recent_trials(self, generations: int) -> Sequence[MemberView]:
        """The finished trials of the last ``generations`` generations (falls back to each
        member's latest when the population has no trial source)."""
        memo_key = ("recent", generations)
        trials = self._memo.get(memo_key)
        if trials is None:
            trials = list(self) if self._recent is None else list(self._recent(generations))
            self._memo[memo_key] = trials
        return trials

    def pending_hparams(self) -> Sequence[Mapping[str, Any]]:
        """The hyperparameters of the trials waiting or training now (none when the
        population has no such source). Not memoised: at a generational barrier each
        decision adds a pending trial the next one should see."""
        return [] if self._pending is None else list(self._pending())
