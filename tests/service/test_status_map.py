"""One map from exceptions to HTTP statuses, and errors that cross the wire intact."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import pbtkit as pk
from pbtkit.service import PBTServer, RemoteController
from pbtkit.service._http import STATUS, _status_of
from tests.service.security import KEY, OUTSIDE, SPEC, _leased, _report, _spec, check_error


def test_status_map_covers_every_error_the_service_names() -> None:
    expected = {
        pk.NotFound: 404,
        pk.ExperimentConflict: 409,
        pk.LeaseLost: 409,
        pk.CheckpointError: 400,
        pk.ConfigError: 400,
        pk.StorageError: 503,
    }
    assert {cls: STATUS.get(cls) for cls in expected} == expected
    # Subclasses take their parent's status; anything else is a bug.
    assert _status_of(pk.OutOfSpace("x")) == 400
    assert _status_of(pk.SchemaMismatch("x")) == 503
    assert _status_of(pk.MetricError("x")) == 400
    assert _status_of(RuntimeError("x")) == 500


def test_errors_cross_the_wire_with_their_status_name_and_type(
    remote: RemoteController, http: httpx.Client
) -> None:
    check_error(http.get("/v1/experiments/nope"), 404, "NotFound", "nope")
    with pytest.raises(pk.NotFound, match="nope"):
        remote.experiment("nope")
    check_error(http.get("/v1/trials/424242"), 404, "NotFound", "424242")
    with pytest.raises(pk.NotFound):
        remote.trial(424242)

    remote.create("x", _spec(population=1))
    other = _spec(population=3).to_dict()
    check_error(
        http.post("/v1/experiments", json={"name": "x", "spec": other}),
        409,
        "ExperimentConflict",
        "population",
    )
    with pytest.raises(pk.ExperimentConflict, match="population"):
        remote.create("x", _spec(population=3))
    check_error(
        http.post(
            "/v1/experiments", json={"name": "x", "spec": SPEC | {"population": 1}, "resume": False}
        ),
        409,
        "ExperimentConflict",
        "resume",
    )

    trial = _leased(remote, "w").trial
    check_error(
        http.post(f"/v1/trials/{trial.id}/heartbeat", json={"worker_id": "intruder"}),
        409,
        "LeaseLost",
        "intruder",
    )
    with pytest.raises(pk.LeaseLost):
        remote.heartbeat(trial.id, "intruder")
    with pytest.raises(pk.CheckpointError, match=OUTSIDE):
        remote.finish(trial.id, "w", [_report(trial, 9, 1.0)], "../outside")


def test_allowed_packages_may_be_named_and_nothing_else(tmp_path: Path) -> None:
    explore = {"type": "custom", "target": "tests.trainers:explore_to_top"}
    spec = {**SPEC, "policy": {**SPEC["policy"], "explore": explore}}
    with PBTServer(
        0, KEY, storage=f"sqlite:///{tmp_path / 'a.db'}", checkpoint_root=tmp_path / "ck",
        allow_imports=("tests",),
    ) as allowing, httpx.Client(
        base_url=allowing.url, headers={"Authorization": f"Bearer {KEY}"}
    ) as client:  # fmt: skip
        assert client.post("/v1/experiments", json={"name": "ok", "spec": spec}).status_code == 200
        for target in ("testsuite.x:f", "/abs/tests.py:f", "tests/../evil.py:f", "os:system"):
            other = {**spec, "policy": {**spec["policy"], "explore": {**explore, "target": target}}}
            response = client.post("/v1/experiments", json={"name": target, "spec": other})
            assert response.status_code == 400, target
            assert "imports no code named by clients" in response.json()["message"]
