"""The controller's protocol: one suite, run in process and over HTTP, on every store.

Each test runs six ways: the in-process ``Controller`` and a ``RemoteController``
that talks to a real ``PBTServer`` on loopback, each over the in-memory store, a
SQLite file and a real PostgreSQL server. The tests move the controller's clock to expire leases
without sleeping.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pbtkit as pk
from pbtkit import ExperimentConflict, LeaseLost, MetricError
from pbtkit.controller import FINISHED, WAIT, Controller, ControllerAPI, Lease
from pbtkit.core.fitness import Objective
from pbtkit.core.policy import PBT
from pbtkit.service import PBTServer, RemoteController
from pbtkit.spec import ExperimentSpec
from pbtkit.store import Measurement, MemoryStore, Store, open_store


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _spec(
    population: int = 4, evolution: str = "async", max_attempts: int = 2, **kw: object
) -> ExperimentSpec:
    return ExperimentSpec(
        space=pk.SearchSpace({"x": pk.Uniform(0.0, 1.0)}),
        policy=PBT(
            objective=Objective("score", "max"),
            exploit=kw.pop("exploit", pk.Truncation(0.25)),  # type: ignore[arg-type]
            ready_every=10,
            total_steps=30,
        ),
        population=population,
        checkpoint_root="/tmp/pbtkit-test-unused",
        evolution=evolution,  # type: ignore[arg-type]
        max_attempts=max_attempts,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        with open_store(str(tmp_path_factory.mktemp("db") / "pbt.db")) as s:
            yield s
    else:
        with open_store(request.getfixturevalue("postgres_url")) as s:
            yield s


@pytest.fixture
def clock() -> Clock:
    return Clock()


Make = Callable[..., ControllerAPI]


@pytest.fixture(params=["local", "remote"])
def make(
    request: pytest.FixtureRequest, store: Store, clock: Clock, tmp_path: Path
) -> Iterator[Make]:
    """Builds the controller under test: in process, or behind a real server."""
    servers: list[PBTServer] = []
    remotes: list[RemoteController] = []

    def build(lease_seconds: float = 60.0) -> ControllerAPI:
        if request.param == "local":
            return Controller(store, clock=clock, lease_seconds=lease_seconds)
        server = PBTServer(
            0,
            "test-key",
            storage=store,
            checkpoint_root=tmp_path / "ckpt",
            lease_seconds=lease_seconds,
            clock=clock,
            allow_imports=("tests",),  # the suite's own explore functions
        )
        servers.append(server)
        remotes.append(RemoteController(server.url, "test-key"))
        return remotes[-1]

    yield build
    for remote in remotes:
        remote.close()
    for server in servers:
        server.shutdown()


def _lease(c: ControllerAPI, worker: str = "w") -> Lease:
    got = c.lease("e", worker)
    assert isinstance(got, Lease), got
    return got


def _score(trial_id: int, member: int, step: int, value: float) -> list[Measurement]:
    return [Measurement(step, {"score": value})]


def _finish(
    c: Controller, lease: Lease, value: float, worker: str = "w", ckpt: str | None = "c"
) -> list[str]:
    t = lease.trial
    return c.finish(
        t.id,
        worker,
        _score(t.id, t.member, t.end_step - 1, value),
        f"{ckpt}-{t.id}" if ckpt else None,
    )


def test_first_generation_is_sampled_inside_the_space(store: Store, make: Make) -> None:
    c = make()
    c.create("e", _spec(population=5))
    seen = [_lease(c, f"w{i}") for i in range(5)]
    assert len({s.trial.id for s in seen}) == 5
    assert {s.trial.member for s in seen} == set(range(5))
    for s in seen:
        assert 0.0 <= s.trial.hparams["x"] <= 1.0
        assert (s.trial.start_step, s.trial.end_step, s.trial.attempt) == (0, 10, 1)
        assert s.parent_checkpoint is None
    assert c.lease("e", "w9") == WAIT


def test_every_member_gets_its_budget_and_the_run_finishes(store: Store, make: Make) -> None:
    c = make()
    c.create("e", _spec(population=3))
    ends: dict[int, list[tuple[int, int]]] = {0: [], 1: [], 2: []}
    while (got := c.lease("e", "w")) != FINISHED:
        assert isinstance(got, Lease)
        ends[got.trial.member].append((got.trial.start_step, got.trial.end_step))
        _finish(c, got, float(got.trial.member + got.trial.end_step))
    for spans in ends.values():
        assert spans[0] == (0, 10)
        assert spans[-1] == (20, 30)
        assert all(end - start == 10 for start, end in spans)
    # Steps follow the weights: each trial starts where its parent's checkpoint ended
    # (a member that copies a donor behind it goes back to the donor's step).
    with store.read() as tx:
        experiment = tx.get_experiment("e")
        assert experiment is not None
        trials = {t.id: t for t in tx.trials(experiment.id)}
    for t in trials.values():
        parent = trials.get(t.parent_id) if t.parent_id is not None else None
        assert t.start_step == (0 if parent is None else parent.end_step)
    summary = c.summary("e")
    assert summary.status == "finished"
    assert summary.steps_done == summary.steps_total == 90


def test_exploit_starts_from_the_donor_checkpoint_and_is_recorded(store: Store, make: Make) -> None:
    c = make()
    c.create("e", _spec(population=4, evolution="generational"))
    first = [_lease(c) for _ in range(4)]
    for lease in first:
        _finish(c, lease, float(lease.trial.member))  # member 3 best, member 0 worst
    nxt = {lease.trial.member: lease for lease in (_lease(c) for _ in range(4))}
    worst = nxt[0]
    assert worst.donor == 3
    assert (
        worst.parent_checkpoint == f"c-{first[[f.trial.member for f in first].index(3)].trial.id}"
    )
    assert worst.trial.start_step == 10
    assert nxt[3].donor is None
    with store.read() as tx:
        exp = tx.get_experiment("e")
        assert exp is not None
        exploits = tx.events(exp.id, kind="exploit")
    assert len(exploits) == 1
    assert exploits[0].member == 0
    assert exploits[0].donor_member == 3
    assert exploits[0].new_hparams == dict(worst.trial.hparams)
    assert exploits[0].old_hparams == dict(
        first[[f.trial.member for f in first].index(0)].trial.hparams
    )


def test_generational_barrier(store: Store, make: Make) -> None:
    c = make()
    c.create("e", _spec(population=3, evolution="generational"))
    a, b, d = _lease(c), _lease(c), _lease(c)
    _finish(c, a, 1.0)
    _finish(c, b, 2.0)
    assert c.lease("e", "w") == WAIT  # d still runs: nobody moves on
    _finish(c, d, 3.0)
    assert _lease(c).trial.generation == 1


def test_expired_lease_goes_back_and_late_report_is_refused(
    store: Store, clock: Clock, make: Make
) -> None:
    c = make(lease_seconds=30)
    c.create("e", _spec(population=1))
    old = _lease(c, "slow")
    clock.now += 10
    c.heartbeat(old.trial.id, "slow")
    clock.now += 35  # past the extended lease
    again = _lease(c, "fast")
    assert again.trial.id == old.trial.id
    assert again.trial.attempt == 2
    with pytest.raises(LeaseLost, match="held by fast"):
        _finish(c, old, 99.0, worker="slow")
    with pytest.raises(LeaseLost):
        c.heartbeat(old.trial.id, "slow")
    _finish(c, again, 1.0, worker="fast")
    with store.read() as tx:
        trial = tx.get_trial(old.trial.id)
    assert trial.status == "done"
    assert trial.score == 1.0


def test_work_after_the_lease_expired_is_refused_though_nobody_took_the_trial(
    store: Store, clock: Clock, make: Make
) -> None:
    c = make(lease_seconds=30)
    c.create("e", _spec(population=1))
    late = _lease(c, "late")
    clock.now += 31  # silent past its lease; no other worker has asked for work yet
    with pytest.raises(LeaseLost, match="expired"):
        c.heartbeat(late.trial.id, "late", _score(late.trial.id, 0, 0, 5.0))
    with pytest.raises(LeaseLost, match="expired"):
        _finish(c, late, 99.0, worker="late")
    with pytest.raises(LeaseLost, match="expired"):
        c.fail(late.trial.id, "late", "boom")
    with store.read() as tx:
        trial = tx.get_trial(late.trial.id)
        experiment = tx.get_experiment("e")
        assert experiment is not None
        reports = tx.reports(experiment.id)
    assert (trial.status, trial.score, trial.attempt) == ("running", trial.score, 1)
    assert reports == []
    again = _lease(c, "next")
    assert (again.trial.id, again.trial.attempt) == (late.trial.id, 2)


def test_every_lease_gives_back_expired_trials_first(
    store: Store, clock: Clock, make: Make
) -> None:
    c = make(lease_seconds=30)
    c.create("e", _spec(population=2))
    dead = _lease(c, "dead")
    alive = _lease(c, "alive")
    clock.now += 20
    c.heartbeat(alive.trial.id, "alive")
    clock.now += 15  # dead's lease is over; alive's is not
    _finish(c, alive, 1.0, worker="alive")
    # alive's own next trial is pending, but the dead worker's trial goes first: it
    # waited one lease period, not until the pending work ran out
    got = _lease(c, "alive")
    assert (got.trial.id, got.trial.attempt) == (dead.trial.id, 2)


def test_a_request_sent_again_after_its_answer_was_lost_changes_nothing(
    store: Store, make: Make
) -> None:
    # What a worker riding out a server outage does: it cannot tell whether its request
    # was carried out before the connection broke, so it sends it again.
    c = make()
    c.create("e", _spec(population=3))
    first = _lease(c, "w")
    again = c.lease("e", "w", again=True)
    assert isinstance(again, Lease)
    assert again.trial.id == first.trial.id  # the trial it holds, not a second one
    other = _lease(c, "w")  # a new request is a new trial
    assert other.trial.id != first.trial.id
    assert _finish(c, first, 1.0) == _finish(c, first, 1.0) == []  # recorded once
    with store.read() as tx:
        experiment = tx.get_experiment("e")
        assert experiment is not None
        assert len(tx.reports(experiment.id, trial_id=first.trial.id)) == 1
        assert tx.get_trial(first.trial.id).status == "done"
    with pytest.raises(LeaseLost):  # another attempt's checkpoint is not a resend
        _finish(c, first, 1.0, ckpt="other")


def test_failure_is_retried_then_member_failed_and_the_rest_go_on(
    store: Store, clock: Clock, make: Make
) -> None:
    c = make()
    c.create("e", _spec(population=2, max_attempts=2))
    bad = _lease(c)
    good = _lease(c)
    c.fail(bad.trial.id, "w", "Traceback...\nRuntimeError: boom")
    assert c.lease("e", "w") == WAIT  # the retry backs off before it is leased again
    clock.now += 0.5
    retry = _lease(c)
    assert retry.trial.id == bad.trial.id
    assert retry.trial.attempt == 2
    c.fail(retry.trial.id, "w", "Traceback...\nRuntimeError: boom again")
    _finish(c, good, 1.0)
    while (got := c.lease("e", "w")) != FINISHED:
        assert isinstance(got, Lease)
        assert got.trial.member == good.trial.member
        _finish(c, got, 2.0)
    with store.read() as tx:
        exp = tx.get_experiment("e")
        assert exp is not None
        members = tx.members(exp.id)
        failed = tx.events(exp.id, kind="failed")
    assert members[bad.trial.member].status == "failed"
    assert members[good.trial.member].status == "done"
    assert "boom again" in (failed[0].detail or "")


def test_generational_barrier_opens_when_a_member_fails(store: Store, make: Make) -> None:
    c = make()
    c.create("e", _spec(population=2, evolution="generational", max_attempts=1))
    a, b = _lease(c), _lease(c)
    _finish(c, a, 1.0)
    c.fail(b.trial.id, "w", "boom")
    nxt = _lease(c)
    assert nxt.trial.member == a.trial.member
    assert nxt.trial.generation == 1


def test_missing_objective_writes_nothing(store: Store, make: Make) -> None:
    c = make()
    c.create("e", _spec(population=1))
    lease = _lease(c)
    reports = [Measurement(5, {"loss": 0.1})]
    with pytest.raises(MetricError, match="'score' was never reported"):
        c.finish(lease.trial.id, "w", reports, "ck")
    with store.read() as tx:
        trial = tx.get_trial(lease.trial.id)
        assert trial.status == "running"
        assert tx.reports(trial.experiment_id) == []


def test_nan_score_is_stored_and_ranks_last(store: Store, make: Make) -> None:
    c = make()
    c.create("e", _spec(population=4, evolution="generational"))
    for lease in [_lease(c) for _ in range(4)]:
        _finish(c, lease, math.nan if lease.trial.member == 2 else float(lease.trial.member))
    nxt = {lease.trial.member: lease for lease in (_lease(c) for _ in range(4))}
    assert nxt[2].donor == 3  # the NaN member is the one that copies the best
    assert all(n.donor != 2 for n in nxt.values())
    summary = c.summary("e")
    assert summary.best_member == 3


def test_worker_release_requeues_at_once(store: Store, make: Make) -> None:
    c = make()
    c.create("e", _spec(population=2))
    held = _lease(c, "doomed")
    _lease(c, "alive")
    assert c.release_worker("e", "doomed", "worker process died") == [held.trial.id]
    again = _lease(c, "alive2")
    assert again.trial.id == held.trial.id


def test_resume_checks_the_settings(store: Store, make: Make) -> None:
    c = make()
    first = c.create("e", _spec(population=2))
    assert c.create("e", _spec(population=2)).id == first.id
    with pytest.raises(ExperimentConflict, match="population: stored 2, given 3"):
        c.create("e", _spec(population=3))
    with pytest.raises(
        ExperimentConflict, match=r"policy\.exploit\.fraction: stored 0\.25, given 0\.5"
    ):
        c.create("e", _spec(population=2, exploit=pk.Truncation(0.5)))
    with pytest.raises(ExperimentConflict, match="resume=True"):
        c.create("e", _spec(population=2), resume=False)


def test_decisions_are_reproducible(clock: Clock) -> None:
    def history() -> list[tuple[int, int, float]]:
        c = Controller(MemoryStore(), clock=Clock())
        c.create("e", _spec(population=4, seed=7))
        seen = []
        while (got := c.lease("e", "w")) != FINISHED:
            assert isinstance(got, Lease)
            seen.append((got.trial.member, got.trial.parent_id or 0, got.trial.hparams["x"]))
            _finish(c, got, got.trial.hparams["x"] * got.trial.end_step)
        return seen

    assert history() == history()


def test_checkpoints_nothing_needs_are_released(store: Store, make: Make) -> None:
    c = make()
    c.create("e", _spec(population=1))
    released: list[str] = []
    names = []
    while (got := c.lease("e", "w")) != FINISHED:
        assert isinstance(got, Lease)
        names.append(f"c-{got.trial.id}")
        released += _finish(c, got, 1.0)
    assert released == names[:-1]  # all but the member's latest


def test_a_decision_that_cannot_be_made_fails_only_that_member(store: Store, make: Make) -> None:
    from pbtkit.core.custom_explore import CustomExplore
    from tests import trainers

    spec = _spec(population=2, evolution="generational")
    broken = ExperimentSpec(
        space=spec.space,
        policy=PBT(
            objective=spec.policy.objective,
            exploit=pk.Truncation(0.5),
            explore=CustomExplore(
                trainers.explore_out_of_space, "tests.trainers:explore_out_of_space"
            ),
            ready_every=10,
            total_steps=30,
        ),
        population=2,
        checkpoint_root=spec.checkpoint_root,
        evolution="generational",
    )
    c = make()
    c.create("e", broken)
    worse, better = _lease(c), _lease(c)
    _finish(c, worse, 1.0)
    _finish(c, better, 2.0)  # the barrier: the worse member's exploit is refused
    with store.read() as tx:
        exp = tx.get_experiment("e")
        assert exp is not None
        members = {m.member: m for m in tx.members(exp.id)}
        failed = tx.events(exp.id, kind="failed")
        assert tx.get_trial(worse.trial.id).status == "done"
    assert members[worse.trial.member].status == "failed"
    assert members[better.trial.member].status == "active"
    assert "explore function" in (failed[0].detail or "")
    nxt = _lease(c)
    assert nxt.trial.member == better.trial.member


def test_a_member_that_always_finishes_first_is_still_ranked_fairly(
    store: Store, make: Make
) -> None:
    """Member 0 is the worst but always ends its round first, while the others are a
    step behind: compared with their older scores it would look average and never
    exploit. Compared at the steps both reached, it is the worst, and it exploits."""
    c = make()
    c.create("e", _spec(population=4))
    leases = {lease.trial.member: lease for lease in (_lease(c) for _ in range(4))}
    for member in (0, 1, 2, 3):  # round 0: scores 10, 20, 30, 40
        _finish(c, leases[member], float((member + 1) * 10))
    leases = {lease.trial.member: lease for lease in (_lease(c) for _ in range(4))}
    # round 1: member 0 ends first; it gained 10 (10 -> 20), the others are still at step 10
    _finish(c, leases[0], 20.0)
    with store.read() as tx:
        exp = tx.get_experiment("e")
        assert exp is not None
        exploits = tx.events(exp.id, kind="exploit")
    assert [e.member for e in exploits] == [0]
    assert exploits[0].donor_member == 3


def test_a_zombie_or_a_reused_pid_does_not_hold_a_lease() -> None:
    import socket
    import subprocess
    import sys
    import time

    from pbtkit.controller._liveness import dead_local_owner as _dead_local_owner

    host = socket.gethostname()
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            break
        time.sleep(0.01)
    try:
        assert _dead_local_owner(f"{host}:{child.pid}:w", host)  # exited, not reaped
    finally:
        child.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        owner = f"{host}:{alive.pid}:w"
        assert not _dead_local_owner(owner, host, since=time.time() + 60)  # older than lease
        assert _dead_local_owner(owner, host, since=0.0)  # started after the lease: reused
        assert not _dead_local_owner(f"elsewhere:{alive.pid}:w", host)  # other hosts wait
    finally:
        alive.kill()
        alive.wait()
