"""The reading half of the controller: experiments, settings, snapshots, summaries, and
the per-process caches every call shares (the parsed specs, the populations)."""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator

from pbtkit._exceptions import NotFound
from pbtkit._target import ImportPolicy
from pbtkit.controller._population import PopulationCache
from pbtkit.controller._protocol import Snapshot, Summary
from pbtkit.core.ranking import Standing, best
from pbtkit.spec import ExperimentSpec
from pbtkit.store._base import ExperimentRecord, ReportRecord, Store, Transaction, TrialRecord

__all__ = ["Reader"]


class Reader:
    """Reads an experiment's state; :class:`~pbtkit.controller.Controller` adds the
    transactions that change it.

    Args:
        store: Where everything is kept.
        clock: Seconds since the epoch; by default the database's clock (so that workers
            whose clocks disagree still agree on leases). Tests pass one they move.
        lease_seconds: How long a leased trial stays with a worker without a heartbeat.
        retry_backoff: Seconds a failed trial waits before its first retry; each further
            retry waits twice as long (at most a minute).
        imports: Which code named in a stored spec (a custom explore function) this
            controller may import when a decision needs it. The default trusts the store
            (a run's own processes); ``pbtkit serve`` passes the packages its operator
            allowed.
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] | None = None,
        lease_seconds: float = 60.0,
        retry_backoff: float = 0.5,
        imports: ImportPolicy | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.retry_backoff = retry_backoff
        self.imports = imports if imports is not None else ImportPolicy()
        self._specs: dict[str, tuple[int, ExperimentSpec]] = {}
        self._caches: dict[int, PopulationCache] = {}
        self._caches_lock = threading.Lock()

    def experiment(self, name: str) -> ExperimentRecord:
        """The stored experiment. Raises NotFound."""
        with self.store.read() as tx:
            return self._get_experiment(tx, name)

    def experiments(self) -> list[ExperimentRecord]:
        """Every experiment in the store, oldest first."""
        with self.store.read() as tx:
            return tx.list_experiments()

    def spec(self, name: str) -> ExperimentSpec:
        """The experiment's settings (cached: they never change)."""
        return self._spec_of(self.experiment(name))

    def snapshot(self, name: str) -> Snapshot:
        """Members, trials and events of the experiment, read in one transaction."""
        with self.store.read() as tx:
            experiment = self._get_experiment(tx, name)
            return Snapshot(
                experiment,
                tx.members(experiment.id),
                tx.trials(experiment.id),
                tx.events(experiment.id),
            )

    def trial(self, trial_id: int) -> TrialRecord:
        """One trial. Raises NotFound."""
        with self.store.read() as tx:
            return tx.get_trial(trial_id)

    def reports(self, name: str, *, member: int | None = None) -> list[ReportRecord]:
        """Reports of the experiment in the order they were made."""
        with self.store.read() as tx:
            experiment = self._get_experiment(tx, name)
            return tx.reports(experiment.id, member=member)

    # reading -----------------------------------------------------------------------

    def summary(self, name: str) -> Summary:
        """Where the experiment stands now (one cheap read)."""
        with self.store.read() as tx:
            experiment = self._get_experiment(tx, name)
            spec = self._spec_of(experiment)
            members = tx.members(experiment.id)
            exploits = tx.count_events(experiment.id, "exploit")
            running = tx.count_trials(experiment.id, ("running",))
            done = tx.count_trials(experiment.id, ("done",))
        leader = best(
            spec.policy.objective,
            (
                Standing(
                    m.member,
                    m.score,
                    m.metrics,
                    m.latest_trial_id is not None,
                    m.status == "failed",
                )
                for m in members
            ),
        )
        top = None if leader is None else next(m for m in members if m.member == leader)
        total = spec.policy.total_steps
        return Summary(
            name=name,
            status=experiment.status,
            population=spec.population,
            steps_done=sum(total if m.status == "failed" else min(m.step, total) for m in members),
            steps_total=spec.population * total,
            best_score=math.nan if top is None else top.score,
            best_member=None if top is None else top.member,
            exploits=exploits,
            members_done=sum(m.status == "done" for m in members),
            members_failed=sum(m.status == "failed" for m in members),
            trials_running=running,
            trials_done=done,
        )

    # internals ---------------------------------------------------------------------

    def _get_experiment(self, tx: Transaction, name: str) -> ExperimentRecord:
        experiment = tx.get_experiment(name)
        if experiment is None:
            known = ", ".join(e.name for e in tx.list_experiments()) or "none"
            raise NotFound(
                f"no experiment named {name!r} in {self.store.display_url} (known: {known})"
            )
        return experiment

    def _spec_of(self, experiment: ExperimentRecord) -> ExperimentSpec:
        cached = self._specs.get(experiment.name)
        if cached is None or cached[0] != experiment.id:
            cached = (experiment.id, ExperimentSpec.from_dict(experiment.config))
            self._specs[experiment.name] = cached
        return cached[1]

    def _spec_by_id(self, tx: Transaction, experiment_id: int) -> ExperimentSpec:
        for eid, spec in self._specs.values():
            if eid == experiment_id:
                return spec
        for experiment in tx.list_experiments():
            if experiment.id == experiment_id:
                return self._spec_of(experiment)
        raise NotFound(f"no experiment with id {experiment_id}")

    def _now(self, tx: Transaction) -> float:
        return self.clock() if self.clock is not None else tx.now()

    # population cache ----------------------------------------------------------------

    def _population(
        self, tx: Transaction, experiment_id: int, spec: ExperimentSpec
    ) -> PopulationCache:
        """The experiment's members, current as of this transaction (which holds the
        experiment's lock)."""
        with self._caches_lock:
            cache = self._caches.get(experiment_id)
            if cache is None:
                cache = PopulationCache(experiment_id, spec.population)
                self._caches[experiment_id] = cache
        cache.refresh(tx)
        return cache

    @contextlib.contextmanager
    def _forgetting_on_error(self) -> Iterator[None]:
        """Drop every cached population when a transaction fails: it may have cached rows
        the database rolled back."""
        try:
            yield
        except BaseException:
            with self._caches_lock:
                self._caches.clear()
            raise
