"""Over HTTP a finish hands back the worker's next lease too, in one request; a lost
answer, a lost lease and hostile bodies are handled as for the other routes, and reports
sent with a finish are never stored twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from pbtkit._exceptions import LeaseLost, StorageError
from pbtkit.controller import Lease
from pbtkit.service import PBTServer, RemoteController
from pbtkit.store._base import Measurement
from pbtkit.worker import Trial, run_worker
from tests.service.security import KEY, Clock, _auth, _spec, _storage, check_error


class _Transport(httpx.HTTPTransport):
    """Counts the requests by the path's last part; loses the answer of the request
    number ``after + 1`` whose path ends with ``lose`` (after the server answered it)."""

    def __init__(self, lose: str | None = None, after: int = 0) -> None:
        super().__init__()
        self.lose = lose
        self.after = after
        self.lost = 0
        self.calls: dict[str, int] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        action = request.url.path.rsplit("/", 1)[-1]
        self.calls[action] = self.calls.get(action, 0) + 1
        response = super().handle_request(request)
        if action == self.lose and self.calls[action] == self.after + 1:
            response.read()
            self.lost += 1
            raise httpx.ReadError("connection reset after the server answered", request=request)
        return response


def _server(tmp_path: Path, clock: Clock | None = None) -> PBTServer:
    return PBTServer(
        0, KEY, storage=_storage(tmp_path), checkpoint_root=tmp_path / "c", clock=clock
    )


def _checkpoint(tmp_path: Path, name: str) -> str:
    path = tmp_path / "c" / name
    path.mkdir(parents=True)
    return str(path)


def _steps(remote: RemoteController) -> list[tuple[int, int]]:
    return sorted((r.trial_id, r.step) for r in remote.reports("x"))


def _running(remote: RemoteController, worker: str) -> list[int]:
    trials = remote.snapshot("x").trials
    return [t.id for t in trials if t.status == "running" and t.lease_owner == worker]


def test_a_remote_worker_gets_its_next_lease_with_each_finish(tmp_path: Path) -> None:
    transport = _Transport()

    def train(trial: Trial) -> None:
        for step in trial.steps():
            trial.report(step, score=trial.hparams["x"])

    with (
        _server(tmp_path) as srv,
        RemoteController(srv.url, KEY, max_outage=0, transport=transport) as remote,
    ):
        remote.create("x", _spec(population=2))
        done = run_worker(remote, "x", train, "w")
        summary = remote.summary("x")
    assert summary.status == "finished"
    assert done == 6  # 2 members x 3 trials (30 steps, ready every 10)
    assert transport.calls.get("finish-and-lease") == done
    assert "finish" not in transport.calls
    # Only the first trial, and those a generation barrier held back, needed a lease.
    assert transport.calls["lease"] < done


def test_the_next_lease_is_the_workers_and_the_finish_is_recorded(tmp_path: Path) -> None:
    with _server(tmp_path) as srv, RemoteController(srv.url, KEY, max_outage=0) as remote:
        remote.create("x", _spec(population=2))
        first = remote.lease("x", "w")
        assert isinstance(first, Lease)
        reports = [Measurement(s, {"score": 0.5}) for s in range(10)]
        checkpoint = _checkpoint(tmp_path, "t1")
        released, ahead = remote.finish_and_lease(first.trial.id, "w", reports, checkpoint)
        assert released == []
        assert ahead is not None
        assert ahead.trial.id != first.trial.id
        assert ahead.experiment == "x"
        done = remote.trial(first.trial.id)
        assert done.status == "done"
        assert done.checkpoint == "t1"
        assert _running(remote, "w") == [ahead.trial.id]
        assert _steps(remote) == [(first.trial.id, s) for s in range(10)]


def test_no_lease_to_hand_out_gives_none_and_the_finish_still_counts(tmp_path: Path) -> None:
    with _server(tmp_path) as srv, RemoteController(srv.url, KEY, max_outage=0) as remote:
        remote.create("x", _spec(population=1))
        leased = remote.lease("x", "w")
        assert isinstance(leased, Lease)
        for _ in range(3):  # three trials of 10 steps; after the last, nothing is left
            reports = [Measurement(leased.trial.start_step, {"score": 1.0})]
            name = _checkpoint(tmp_path, f"t{leased.trial.id}")
            _, ahead = remote.finish_and_lease(leased.trial.id, "w", reports, name)
            if ahead is None:
                break
            leased = ahead
        assert ahead is None
        assert remote.summary("x").status == "finished"


def test_a_lost_lease_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    clock = Clock()
    with _server(tmp_path, clock) as srv, RemoteController(srv.url, KEY, max_outage=0) as remote:
        remote.create("x", _spec(population=2))
        leased = remote.lease("x", "w")
        assert isinstance(leased, Lease)
        clock.now += remote.lease_seconds + 1  # no heartbeat: the lease is over
        reports = [Measurement(0, {"score": 1.0})]
        with pytest.raises(LeaseLost, match="expired"):
            remote.finish_and_lease(leased.trial.id, "w", reports, _checkpoint(tmp_path, "a"))
        assert remote.trial(leased.trial.id).status == "running"
        assert _steps(remote) == []
        # Another worker's trial is refused the same way.
        other = remote.lease("x", "v")
        assert isinstance(other, Lease)
        with pytest.raises(LeaseLost, match="held by v"):
            remote.finish_and_lease(other.trial.id, "w", reports, _checkpoint(tmp_path, "b"))
        assert remote.trial(other.trial.id).status == "running"


def test_a_lost_answer_hands_back_the_same_next_trial(tmp_path: Path) -> None:
    transport = _Transport(lose="finish-and-lease")
    with (
        _server(tmp_path) as srv,
        RemoteController(srv.url, KEY, max_outage=30, transport=transport) as remote,
    ):
        remote.create("x", _spec(population=2))
        leased = remote.lease("x", "w")
        assert isinstance(leased, Lease)
        reports = [Measurement(s, {"score": 1.0}) for s in range(3)]
        name = _checkpoint(tmp_path, "t")
        released, ahead = remote.finish_and_lease(leased.trial.id, "w", reports, name)
        assert transport.lost == 1
        assert transport.calls["finish-and-lease"] == 2
        assert released == []
        assert ahead is not None
        # The trial the lost answer carried, not a second one.
        assert _running(remote, "w") == [ahead.trial.id]
        assert _steps(remote) == [(leased.trial.id, s) for s in range(3)]


@pytest.mark.parametrize("route", ["finish", "finish-and-lease"])
def test_reports_of_a_heartbeat_that_lost_its_answer_are_stored_once(
    tmp_path: Path, route: str
) -> None:
    transport = _Transport(lose="heartbeat", after=1)
    with (
        _server(tmp_path) as srv,
        RemoteController(srv.url, KEY, max_outage=0, transport=transport) as remote,
    ):
        remote.create("x", _spec(population=2))
        leased = remote.lease("x", "w")
        assert isinstance(leased, Lease)
        trial = leased.trial.id
        remote.heartbeat(trial, "w", [Measurement(0, {"score": 0.0})])
        batch = [Measurement(s, {"score": float(s)}) for s in (1, 2)]
        with pytest.raises(StorageError):  # stored, but the worker cannot know it
            remote.heartbeat(trial, "w", batch)
        # The worker puts the batch back and sends it with the finish, with what came after.
        last = [*batch, Measurement(3, {"score": 3.0})]
        name = _checkpoint(tmp_path, "t")
        if route == "finish":
            remote.finish(trial, "w", last, name)
        else:
            remote.finish_and_lease(trial, "w", last, name)
        assert _steps(remote) == [(trial, s) for s in range(4)]
        assert remote.trial(trial).status == "done"


HOSTILE: dict[str, tuple[Any, int]] = {
    "an unknown field": ({"worker_id": "w", "reports": [], "colour": "red"}, 422),
    "a negative seq": ({"worker_id": "w", "reports": [], "seq": -1}, 422),
    "again that is not a boolean": ({"worker_id": "w", "reports": [], "again": 1}, 422),
    "no worker": ({"reports": []}, 422),
    "a checkpoint outside the root": ({"worker_id": "w", "checkpoint": "../up"}, 400),
    "an absolute checkpoint elsewhere": ({"worker_id": "w", "checkpoint": "/etc"}, 400),
    "a step beyond int64": (
        {"worker_id": "w", "reports": [{"step": 2**64, "metrics": {"score": 1}}]},
        422,
    ),
    "another worker's trial": ({"worker_id": "v", "reports": []}, 409),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_bodies_are_refused_and_change_nothing(tmp_path: Path, case: str) -> None:
    body, status = HOSTILE[case]
    with _server(tmp_path) as srv, RemoteController(srv.url, KEY, max_outage=0) as remote:
        remote.create("x", _spec(population=2))
        leased = remote.lease("x", "w")
        assert isinstance(leased, Lease)
        path = f"/v1/trials/{leased.trial.id}/finish-and-lease"
        with httpx.Client(base_url=srv.url, timeout=30) as http:
            assert http.post(path, json=body).status_code == 401  # no key
            response = http.post(path, json=body, headers=_auth())
        expected = {400: "CheckpointError", 409: "LeaseLost", 422: "RequestValidationError"}
        got = response.json()
        assert response.status_code == status, got
        if status != 422:
            check_error(response, status, expected[status])
        assert remote.trial(leased.trial.id).status == "running"
        assert _running(remote, "w") == [leased.trial.id]
