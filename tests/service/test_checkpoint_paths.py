"""Checkpoint paths sent by clients stay inside the checkpoint root."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import pbtkit as pk
from pbtkit.service import RemoteController
from tests.service.security import OUTSIDE, _leased, _report, _spec, _wire_report, check_error

ESCAPES: dict[str, Callable[[Path, Path], str]] = {
    "parent": lambda root, tmp: "../outside",
    "etc-passwd": lambda root, tmp: "/etc/passwd",
    "nested-parent": lambda root, tmp: "a/../../x",
    "absolute-outside": lambda root, tmp: str(tmp / "elsewhere" / "trial-1"),
    "the-root-itself": lambda root, tmp: str(root),
    "symlink-out": lambda root, tmp: "escape/trial-1",
    "absolute-through-symlink": lambda root, tmp: str(root / "escape" / "trial-1"),
}


@pytest.mark.parametrize("make_path", ESCAPES.values(), ids=ESCAPES)
def test_a_checkpoint_outside_the_root_is_refused_and_nothing_is_written(
    remote: RemoteController,
    http: httpx.Client,
    tmp_path: Path,
    make_path: Callable[[Path, Path], str],
) -> None:
    remote.create("x", _spec(population=1))
    root = Path(remote.info["checkpoint_root"])
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "escape")
    lease = _leased(remote, "w")
    trial = lease.trial
    checkpoint = make_path(root, tmp_path)

    response = http.post(
        f"/v1/trials/{trial.id}/finish",
        json={"worker_id": "w", "reports": [_wire_report(9, 1.0)], "checkpoint": checkpoint},
    )
    check_error(response, 400, "CheckpointError", OUTSIDE)
    with pytest.raises(pk.CheckpointError, match=OUTSIDE):
        remote.finish(trial.id, "w", [_report(trial, 9, 1.0)], checkpoint)

    stored = http.get(f"/v1/trials/{trial.id}").json()
    assert stored["status"] == "running"
    assert stored["lease_owner"] == "w"
    assert stored["checkpoint"] is None
    assert http.get("/v1/experiments/x/reports").json() == []
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_checkpoints_inside_the_root_are_stored_relative_to_it(
    remote: RemoteController, http: httpx.Client
) -> None:
    remote.create("x", _spec(population=3))
    root = Path(remote.info["checkpoint_root"])
    sent = {
        "absolute": (str(root / "x" / "trial-a"), "x/trial-a"),
        "relative": ("x/trial-b", "x/trial-b"),
        "roundabout": ("./x/../x/trial-c", "x/trial-c"),
    }
    stored = {}
    for label, (path, _) in sent.items():
        trial = _leased(remote, "w").trial
        remote.finish(trial.id, "w", [_report(trial, 9, 0.5)], path)
        stored[label] = http.get(f"/v1/trials/{trial.id}").json()["checkpoint"]
    assert stored == {label: expected for label, (_, expected) in sent.items()}
