"""Work sent after a lease expired is refused and changes nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import pbtkit as pk
from pbtkit.service import PBTServer, RemoteController
from tests.service.security import (
    KEY,
    Clock,
    _auth,
    _leased,
    _report,
    _spec,
    _storage,
    _wire_report,
    check_error,
)


def test_a_late_report_after_the_lease_expired_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    clock = Clock()
    with (
        PBTServer(
            0,
            KEY,
            storage=_storage(tmp_path),
            checkpoint_root=tmp_path / "ckpt",
            lease_seconds=30,
            clock=clock,
        ) as srv,
        RemoteController(srv.url, KEY, max_outage=0) as remote,
        httpx.Client(base_url=srv.url, headers=_auth(), timeout=30) as http,
    ):
        remote.create("x", _spec(population=1))
        slow = _leased(remote, "slow").trial
        clock.now += 31
        fast = _leased(remote, "fast").trial
        assert (fast.id, fast.attempt, slow.attempt) == (slow.id, 2, 1)

        late = {"worker_id": "slow", "reports": [_wire_report(9, 99.0)], "checkpoint": "x/slow"}
        check_error(http.post(f"/v1/trials/{slow.id}/finish", json=late), 409, "LeaseLost", "fast")
        with pytest.raises(pk.LeaseLost):
            remote.finish(slow.id, "slow", [_report(slow, 9, 99.0)], "x/slow")
        beat = {"worker_id": "slow", "reports": [_wire_report(5, 99.0)]}
        check_error(http.post(f"/v1/trials/{slow.id}/heartbeat", json=beat), 409, "LeaseLost")
        with pytest.raises(pk.LeaseLost):
            remote.heartbeat(slow.id, "slow", [_report(slow, 5, 99.0)])

        held = http.get(f"/v1/trials/{slow.id}").json()
        assert (held["status"], held["lease_owner"], held["attempt"]) == ("running", "fast", 2)
        assert held["checkpoint"] is None
        assert held["metrics"] == {}
        assert http.get("/v1/experiments/x/reports").json() == []

        remote.heartbeat(fast.id, "fast", [_report(fast, 4, 1.0)])
        remote.finish(fast.id, "fast", [_report(fast, 9, 2.0)], "x/fast")
        done = http.get(f"/v1/trials/{fast.id}").json()
        assert (done["status"], done["checkpoint"]) == ("done", "x/fast")
        reports = http.get("/v1/experiments/x/reports").json()
        assert [(r["step"], r["metrics"]) for r in reports] == [
            (4, {"score": 1.0}),
            (9, {"score": 2.0}),
        ]
