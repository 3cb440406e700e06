"""No code named by a client or a stored spec is ever imported unless the operator allowed it.

A spec can name code in many places: a custom explore function at the top of
``policy.explore``, the same nested as PB2's fallback, and (with plug-ins) a class path as
the type of any strategy, domain or setting. The server walks the whole spec, and reading a
stored spec to show it (status, export, best, plot, dashboard, TensorBoard, ``Result``)
imports nothing at all. Each test plants a file that would leave a marker if it ran.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import pbtkit as pk
from pbtkit._target import ImportPolicy
from pbtkit.controller import Controller, Lease
from pbtkit.core.custom_explore import CustomExplore
from pbtkit.service import PBTServer, RemoteController
from pbtkit.store import Measurement, open_store
from tests.service.helpers import KEY, auth, check_error, small_spec, sqlite_url

ROOT = Path(__file__).resolve().parents[2]
SPEC = small_spec(population=2).to_dict()


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A Python file that leaves a marker when it is imported; yields (file, marker)."""
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.py"
    evil.write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "import os\n"
        "def f(hparams, space, rng):\n    return dict(hparams)\n"
    )
    before = set(sys.modules)
    saved_path = list(sys.path)
    yield evil, marker
    for name in set(sys.modules) - before:
        if name.startswith("__pbtkit_target_"):
            del sys.modules[name]
    sys.path[:] = saved_path


def _at(spec: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(spec)
    node = out
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return out


def _positions(target: str) -> dict[str, dict[str, Any]]:
    """The spec with ``target`` in every position a spec can name code in."""
    custom = {"type": "custom", "target": target}
    return {
        "policy.explore": _at(SPEC, ("policy", "explore"), custom),
        "policy.explore.fallback": _at(
            SPEC, ("policy", "explore"), {"type": "pb2", "fallback": custom}
        ),
        "policy.explore.per_param.x": _at(
            SPEC, ("policy", "explore"), {"type": "perturb", "per_param": {"x": custom}}
        ),
        "policy.exploit": _at(SPEC, ("policy", "exploit"), {"type": target}),
        "policy.exploit.nested": _at(
            SPEC, ("policy", "exploit"), {"type": "truncation", "settings": custom}
        ),
        "policy.objective": _at(SPEC, ("policy", "objective"), {"type": target}),
        "policy.inherit": _at(SPEC, ("policy", "inherit"), {"type": target}),
        "space.x": _at(SPEC, ("space", "x"), {"type": target, "low": 0, "high": 1}),
        "a list": _at(SPEC, ("policy", "explore"), {"type": "pb2", "list": [custom]}),
    }


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PBTServer]:
    with PBTServer(
        0, KEY, storage=sqlite_url(tmp_path), checkpoint_root=tmp_path / "ckpt"
    ) as running:
        yield running


@pytest.mark.parametrize("position", list(_positions("x:y")))
@pytest.mark.parametrize("kind", ["file", "module"])
def test_code_named_anywhere_in_a_spec_is_refused_over_http(
    server: PBTServer, planted: tuple[Path, Path], position: str, kind: str
) -> None:
    evil, marker = planted
    target = f"{evil}:f" if kind == "file" else "os:system"
    spec = _positions(target)[position]
    with httpx.Client(base_url=server.url, headers=auth(), timeout=30) as http:
        response = http.post("/v1/experiments", json={"name": "rce", "spec": spec})
        body = check_error(response, 400, "ConfigError", "imports no code named by clients")
        assert target in body["message"]
        assert http.get("/v1/experiments").json() == []  # nothing was stored
    assert not marker.exists(), f"the server ran code named at {position}"


@pytest.mark.parametrize("position", list(_positions("x:y")))
def test_an_allowed_package_does_not_open_the_door_to_others(
    tmp_path: Path, planted: tuple[Path, Path], position: str
) -> None:
    evil, marker = planted
    with (
        PBTServer(
            0,
            KEY,
            storage=sqlite_url(tmp_path, "a.db"),
            checkpoint_root=tmp_path / "ck",
            allow_imports=("tests",),
        ) as allowing,
        httpx.Client(base_url=allowing.url, headers=auth(), timeout=30) as http,
    ):
        for target in (f"{evil}:f", "os:system", "testsuite.x:f", "tests/../evil.py:f"):
            spec = _positions(target)[position]
            response = http.post("/v1/experiments", json={"name": "rce", "spec": spec})
            check_error(response, 400, "ConfigError", "imports no code named by clients")
    assert not marker.exists()


def _planted_store(tmp_path: Path, evil: Path) -> str:
    """A database holding an experiment whose stored spec names ``evil`` as its explore
    function (as someone's own run could have written it), each member one trial on."""
    url = sqlite_url(tmp_path, "planted.db")
    spec = small_spec(
        population=2, exploit=pk.NoExploit(), explore=CustomExplore(target=f"{evil}:f")
    )
    with open_store(url) as store:
        # A controller that may import nothing: its decisions need the function and are
        # refused, which fails the members; the rows are there for the readers to show.
        controller = Controller(store, imports=ImportPolicy.only(()))
        controller.create("planted", spec)
        for _ in range(2):
            lease = controller.lease("planted", "w")
            assert isinstance(lease, Lease)
            trial = lease.trial
            report = Measurement(trial.end_step - 1, {"score": 1.0})
            controller.finish(trial.id, "w", [report], None)
        events = controller.snapshot("planted").events
    failed = [e for e in events if e.kind == "failed"]
    assert len(failed) == 2
    assert all("imports no code" in (e.detail or "") for e in failed)
    return url


def _pbtkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pbtkit", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_reading_a_stored_spec_imports_nothing(tmp_path: Path, planted: tuple[Path, Path]) -> None:
    evil, marker = planted
    url = _planted_store(tmp_path, evil)
    assert not marker.exists()
    storage = ["--storage", url, "--experiment", "planted"]
    for command in (
        ["status", *storage],
        ["status", "--storage", url],
        ["best", *storage],
        ["best", *storage, "--json"],
        ["export", *storage, "--format", "json"],
        ["export", *storage, "--format", "csv", "--out", str(tmp_path / "csv")],
        ["plot", *storage, "--out", str(tmp_path / "plots"), "--format", "png"],
        ["replay", *storage],
    ):
        out = _pbtkit(*command, cwd=tmp_path)
        assert "Traceback" not in out.stderr, (command, out.stderr)
        assert not marker.exists(), f"`pbtkit {' '.join(command)}` ran the stored code"
    # and in this process: the result, the dashboard's view and TensorBoard
    from pbtkit.loggers import Follower
    from pbtkit.loggers.tensorboard import TensorBoardLogger
    from pbtkit.viz import RunView

    with open_store(url, create=False) as store:
        controller = Controller(store)
        result = pk.Result(controller, "planted")
        assert result.spec.policy.explore == CustomExplore(target=f"{evil}:f")
        RunView.load(controller, "planted")
        follower = Follower(controller, "planted", [TensorBoardLogger(tmp_path / "tb")])
        follower.sync()
        follower.close()
        assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert not marker.exists()


def test_a_server_never_imports_code_a_stored_spec_names(
    tmp_path: Path, planted: tuple[Path, Path]
) -> None:
    evil, marker = planted
    url = sqlite_url(tmp_path)
    spec = small_spec(
        population=1, exploit=pk.NoExploit(), explore=CustomExplore(target=f"{evil}:f")
    )
    with open_store(url) as store:  # stored by someone's own run, not over HTTP
        Controller(store).create("planted", spec)
    with (
        PBTServer(0, KEY, storage=url, checkpoint_root=tmp_path / "ckpt") as server,
        RemoteController(server.url, KEY) as remote,
    ):
        lease = remote.lease("planted", "w")
        assert isinstance(lease, Lease)
        trial = lease.trial
        remote.finish(trial.id, "w", [Measurement(trial.end_step - 1, {"score": 1})])
        events = remote.snapshot("planted").events
        assert remote.summary("planted").members_failed == 1
    failed = [e for e in events if e.kind == "failed"]
    assert len(failed) == 1
    assert "imports no code named by clients or stored specs" in (failed[0].detail or "")
    assert not marker.exists()
