"""The batch lease: one call hands a worker many trials, one call finishes them.

Each test runs twice, on a real SQLite file: the in-process ``Controller`` and a
``RemoteController`` that talks to a real ``PBTServer`` on 127.0.0.1. The clock is moved
by hand to expire leases without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest

import pbtkit as pk
from pbtkit.controller import (
    FINISHED,
    WAIT,
    BatchFinish,
    Controller,
    ControllerAPI,
    Lease,
    TrialResult,
)
from pbtkit.controller._batch import MAX_BATCH
from pbtkit.core.fitness import Objective
from pbtkit.core.policy import PBT
from pbtkit.service import PBTServer, RemoteController
from pbtkit.spec import ExperimentSpec
from pbtkit.store import Measurement, Store, open_store
from tests.service.helpers import check_error

KEY = "batch-key"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _spec(population: int = 4, evolution: str = "async") -> ExperimentSpec:
    return ExperimentSpec(
        space=pk.SearchSpace({"x": pk.Uniform(0.0, 1.0)}),
        policy=PBT(
            objective=Objective("score", "max"),
            exploit=pk.Truncation(0.25),
            ready_every=10,
            total_steps=30,
        ),
        population=population,
        checkpoint_root="/tmp/pbtkit-test-unused",
        evolution=evolution,  # type: ignore[arg-type]
        max_attempts=2,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(str(tmp_path / "pbt.db")) as opened:
        yield opened


@pytest.fixture
def clock() -> Clock:
    return Clock()


Make = Callable[..., ControllerAPI]


@pytest.fixture
def servers() -> Iterator[list[PBTServer]]:
    started: list[PBTServer] = []
    yield started
    for server in started:
        server.shutdown()


@pytest.fixture(params=["local", "remote"])
def make(
    request: pytest.FixtureRequest,
    store: Store,
    clock: Clock,
    tmp_path: Path,
    servers: list[PBTServer],
) -> Iterator[Make]:
    """Builds the controller under test: in process, or behind a real server."""
    remotes: list[RemoteController] = []

    def build(lease_seconds: float = 60.0) -> ControllerAPI:
        if request.param == "local":
            return Controller(store, clock=clock, lease_seconds=lease_seconds)
        server = PBTServer(
            0,
            KEY,
            storage=store,
            checkpoint_root=tmp_path / "ckpt",
            lease_seconds=lease_seconds,
            clock=clock,
        )
        servers.append(server)
        remotes.append(RemoteController(server.url, KEY, max_outage=0))
        return remotes[-1]

    yield build
    for remote in remotes:
        remote.close()


def _leases(got: list[Lease] | str) -> list[Lease]:
    assert isinstance(got, list), got
    return got


def _results(leases: Sequence[Lease], scores: Sequence[float]) -> list[TrialResult]:
    """Each trial reports its score at its last step and names a checkpoint of its own."""
    return [
        TrialResult(
            lease.trial.id,
            (Measurement(lease.trial.end_step - 1, {"score": score}),),
            f"c-{lease.trial.id}",
        )
        for lease, score in zip(leases, scores, strict=True)
    ]


def test_one_call_leases_every_pending_trial_once(make: Make) -> None:
    c = make()
    c.create("e", _spec())
    first = _leases(c.lease_batch("e", "w", max_trials=3))
    assert [lease.trial.member for lease in first] == sorted(lease.trial.member for lease in first)
    rest = _leases(c.lease_batch("e", "w", max_trials=10))
    assert len(first) == 3
    assert len(rest) == 1
    ids = {lease.trial.id for lease in first + rest}
    assert len(ids) == 4
    assert {lease.trial.member for lease in first + rest} == {0, 1, 2, 3}
    assert all(lease.trial.lease_owner == "w" for lease in first + rest)
    assert c.lease_batch("e", "w", max_trials=10) == WAIT
    # A request repeated after its answer was lost hands back what the worker holds.
    again = _leases(c.lease_batch("e", "w", max_trials=10, again=True))
    assert {lease.trial.id for lease in again} == ids
    assert c.lease_batch("e", "other", max_trials=10) == WAIT


@pytest.mark.parametrize("evolution", ["async", "generational"])
def test_a_finished_batch_is_decided_together(make: Make, evolution: str) -> None:
    c = make()
    c.create("e", _spec(evolution=evolution))
    leases = sorted(_leases(c.lease_batch("e", "w", max_trials=4)), key=lambda x: x.trial.member)
    scores = [0.1, 0.9, 0.5, 0.7]  # member 0 is the worst, member 1 the best
    done = c.finish_batch("e", "w", _results(leases, scores))
    assert isinstance(done, BatchFinish)
    assert not done.lost
    nxt = sorted(_leases(c.lease_batch("e", "w", max_trials=4)), key=lambda x: x.trial.member)
    assert [lease.trial.member for lease in nxt] == [0, 1, 2, 3]
    assert all(lease.trial.start_step == 10 and lease.trial.generation == 1 for lease in nxt)
    # The worst copies the best of this same ready point (not an older checkpoint).
    assert nxt[0].donor == 1
    assert nxt[0].trial.parent_id == leases[1].trial.id
    assert nxt[0].parent_checkpoint is not None
    assert nxt[0].parent_checkpoint.endswith(f"c-{leases[1].trial.id}")
    for lease, before in zip(nxt[1:], leases[1:], strict=True):
        assert lease.donor is None
        assert lease.trial.parent_id == before.trial.id
    reports = c.reports("e")
    assert sorted(r.metrics["score"] for r in reports) == sorted(scores)


def test_a_population_runs_to_the_end_on_batches_alone(make: Make) -> None:
    c = make()
    c.create("e", _spec(population=5))
    rounds = 0
    while True:
        got = c.lease_batch("e", "w", max_trials=MAX_BATCH)
        if got == FINISHED:
            break
        leases = _leases(got)
        assert len(leases) == 5
        c.finish_batch("e", "w", _results(leases, [0.1 * m for m in range(5)]))
        rounds += 1
    assert rounds == 3
    summary = c.summary("e")
    assert summary.status == "finished"
    assert {m.step for m in c.snapshot("e").members} == {30}


def test_a_lease_lost_mid_batch_is_refused_and_the_rest_recorded(make: Make, clock: Clock) -> None:
    c = make(lease_seconds=60.0)
    c.create("e", _spec())
    leases = sorted(_leases(c.lease_batch("e", "w", max_trials=4)), key=lambda x: x.trial.member)
    clock.now += 40
    for lease in leases[:3]:  # the worker kept three alive; the fourth went silent
        c.heartbeat(lease.trial.id, "w")
    clock.now += 40
    done = c.finish_batch("e", "w", _results(leases, [0.1, 0.2, 0.3, 0.4]))
    lost = leases[3].trial.id
    assert set(done.lost) == {lost}
    assert "expired" in done.lost[lost]
    assert c.trial(lost).status == "running"  # nothing of the late work was written
    assert c.trial(lost).checkpoint is None
    assert [r.trial_id for r in c.reports("e") if r.trial_id == lost] == []
    assert all(c.trial(lease.trial.id).status == "done" for lease in leases[:3])
    # The lost trial goes back to the queue and another worker gets it.
    again = _leases(c.lease_batch("e", "w2", max_trials=10))
    assert lost in {lease.trial.id for lease in again}


def test_a_batch_finished_twice_changes_nothing_the_second_time(make: Make) -> None:
    c = make()
    c.create("e", _spec())
    leases = _leases(c.lease_batch("e", "w", max_trials=4))
    results = _results(leases, [0.1, 0.2, 0.3, 0.4])
    c.finish_batch("e", "w", results)
    before = c.snapshot("e")
    second = c.finish_batch("e", "w", results)
    assert second.released == ()
    assert dict(second.lost) == {}
    after = c.snapshot("e")
    assert len(after.trials) == len(before.trials)
    assert len(c.reports("e")) == 4


def test_bad_batches_are_refused_with_a_reason(make: Make) -> None:
    c = make()
    c.create("e", _spec())
    c.create("f", _spec())
    mine = _leases(c.lease_batch("e", "w", max_trials=4))
    theirs = _leases(c.lease_batch("f", "w", max_trials=1))
    for bad in (0, -1, MAX_BATCH + 1, 10**30, True, 2.0):
        with pytest.raises(pk.ConfigError, match="max_trials must be an integer"):
            c.lease_batch("e", "w", max_trials=bad)  # type: ignore[arg-type]
    with pytest.raises(pk.ConfigError, match="at least one"):
        c.finish_batch("e", "w", [])
    twice = _results([mine[0], mine[0]], [0.1, 0.2])
    with pytest.raises(pk.ConfigError, match="more than once"):
        c.finish_batch("e", "w", twice)
    with pytest.raises(pk.ConfigError, match="not a trial of experiment"):
        c.finish_batch("e", "w", _results([mine[0], theirs[0]], [0.1, 0.2]))
    with pytest.raises(pk.NotFound):
        c.lease_batch("nope", "w", max_trials=1)
    # Nothing was written by any of the refusals.
    assert all(c.trial(lease.trial.id).status == "running" for lease in mine)
    missing = c.finish_batch("e", "w", [TrialResult(10**6, (), None)])
    assert set(missing.lost) == {10**6}
    other_worker = c.finish_batch("e", "intruder", _results(mine[:1], [0.9]))
    assert set(other_worker.lost) == {mine[0].trial.id}
    assert c.trial(mine[0].trial.id).status == "running"


# over HTTP only: the key, the limits of a body -------------------------------------


@pytest.fixture
def server(store: Store, tmp_path: Path, servers: list[PBTServer]) -> PBTServer:
    started = PBTServer(0, KEY, storage=store, checkpoint_root=tmp_path / "ckpt")
    servers.append(started)
    with RemoteController(started.url, KEY, max_outage=0) as remote:
        remote.create("e", _spec())
    return started


@pytest.mark.parametrize("route", ["lease-batch", "finish-batch"])
@pytest.mark.parametrize("key", [None, "wrong-key", KEY + "x"])
def test_the_batch_routes_need_the_key(server: PBTServer, route: str, key: str | None) -> None:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    body = {"worker_id": "w", "max_trials": 4, "trials": [{"trial_id": 1}]}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        response = http.post(f"/v1/experiments/e/{route}", json=body)
    check_error(response, 401, "Unauthorized")
    with RemoteController(server.url, KEY, max_outage=0) as remote:
        assert all(t.status == "pending" for t in remote.snapshot("e").trials)


@pytest.mark.parametrize(
    "body",
    [
        {"worker_id": "w", "max_trials": 10**40},
        {"worker_id": "w", "max_trials": MAX_BATCH + 1},
        {"worker_id": "w", "max_trials": 0},
        {"worker_id": "w", "max_trials": "4"},
        {"worker_id": "w", "max_trials": True},
        {"worker_id": "w", "max_trials": 4.5},
        {"worker_id": "", "max_trials": 4},
        {"worker_id": "w", "max_trials": 4, "extra": 1},
        {"max_trials": 4},
    ],
)
def test_a_hostile_lease_batch_is_refused(server: PBTServer, body: dict[str, object]) -> None:
    with httpx.Client(base_url=server.url, headers=_auth(), timeout=30) as http:
        response = http.post("/v1/experiments/e/lease-batch", json=body)
        check_error(response, 422, "InvalidRequest")
        pending = http.get("/v1/experiments/e/snapshot").json()["trials"]
    assert all(t["status"] == "pending" for t in pending)


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def test_a_hostile_finish_batch_is_refused(server: PBTServer, tmp_path: Path) -> None:
    with httpx.Client(base_url=server.url, headers=_auth(), timeout=30) as http:
        leased = http.post(
            "/v1/experiments/e/lease-batch", json={"worker_id": "w", "max_trials": 4}
        )
        ids = [lease["trial"]["id"] for lease in leased.json()["leases"]]
        report = {"step": 9, "metrics": {"score": 0.5}}
        bodies: list[tuple[dict[str, object], int, str]] = [
            ({"worker_id": "w", "trials": []}, 422, "InvalidRequest"),
            (
                {"worker_id": "w", "trials": [{"trial_id": i} for i in range(1, MAX_BATCH + 2)]},
                422,
                "InvalidRequest",
            ),
            (
                {"worker_id": "w", "trials": [{"trial_id": ids[0]}, {"trial_id": ids[0]}]},
                422,
                "InvalidRequest",
            ),
            ({"worker_id": "w", "trials": [{"trial_id": 2**70}]}, 422, "InvalidRequest"),
            (
                {"worker_id": "w", "trials": [{"trial_id": ids[0], "reports": "x" * 10}]},
                422,
                "InvalidRequest",
            ),
            (
                {
                    "worker_id": "w",
                    "trials": [
                        {"trial_id": ids[0], "reports": [report], "checkpoint": "/etc/passwd"}
                    ],
                },
                400,
                "CheckpointError",
            ),
            (
                {
                    "worker_id": "w",
                    "trials": [{"trial_id": i, "reports": [report] * 10_000} for i in ids]
                    + [{"trial_id": 10**6 + j, "reports": [report] * 10_000} for j in range(17)],
                },
                422,
                "InvalidRequest",
            ),
        ]
        for body, status, error in bodies:
            check_error(http.post("/v1/experiments/e/finish-batch", json=body), status, error)
        huge = b'{"worker_id": "w", "trials": [{"trial_id": 1, "checkpoint": "' + b"x" * 9_000_000
        for route in ("finish-batch", "lease-batch"):
            response = http.post(f"/v1/experiments/e/{route}", content=huge + b'"}]}')
            assert response.status_code == 413, response.text
        trials = http.get("/v1/experiments/e/snapshot").json()["trials"]
    assert sorted(t["id"] for t in trials if t["status"] == "running") == sorted(ids)
    assert all(t["checkpoint"] is None for t in trials)
