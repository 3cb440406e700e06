"""A whole run through `pbtkit serve`: separate server and worker processes on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import pbtkit as pk
from pbtkit.service import RemoteController
from tests import trainers
from tests.helpers import free_port as _free_port
from tests.helpers import wait_until_serving

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KEY = "e2e-secret"


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    directory: Path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PBTKIT_AUTH_KEY"}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = _free_port()
    command = [
        sys.executable, "-m", "pbtkit", "serve", "--storage", f"sqlite:///{tmp_path / 's.db'}",
        "--checkpoint-root", str(tmp_path / "ckpt"), "--port", str(port), "--lease-seconds", "3",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=_env(PBTKIT_AUTH_KEY=KEY))
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(url, process, "pbtkit serve")
    yield Server(url, process, tmp_path)
    process.terminate()
    process.wait(10)


def _workers(server: Server, count: int, **env: str) -> list[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "pbtkit", "worker", "tests.trainers:climb"]
    return [
        subprocess.Popen(
            [*command, "--server", server.url, "--label", f"remote{i}"],
            env=_env(PBTKIT_AUTH_KEY=KEY, **env),
            cwd=server.directory,
        )
        for i in range(count)
    ]


def _settings(**kw: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "space": {"x": pk.Uniform(0.1, 1.0)},
        "metric": "score",
        "population": 8,
        "ready_every": 5,
        "total_steps": 20,
        "exploit": pk.Truncation(0.25),
        "progress": False,
        "name": "remote",
    }
    settings.update(kw)
    return settings


def test_three_worker_processes_against_a_server_match_an_in_process_run(
    server: Server, tmp_path: Path
) -> None:
    workers = _workers(server, 3)
    try:
        remote = pk.run(trainers.climb, server=server.url, auth_key=KEY, workers=0, **_settings())
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(10)
    local = pk.run(
        trainers.climb,
        storage=f"sqlite:///{tmp_path / 'local.db'}",
        checkpoint_dir=tmp_path / "local-ckpt",
        workers=2,
        **_settings(),
    )
    for result in (remote, local):
        assert len(result.members) == 8
        assert all(m.status == "done" and m.step == 20 for m in result.members)
        assert result.exploits
        assert result.best.checkpoint is not None
        assert (result.best.checkpoint / "state.json").exists()
    # the same kind of result: the best member climbs about as far either way
    assert remote.best.score == pytest.approx(local.best.score, rel=0.35)
    # nothing had to be run again, and the checkpoints live in the server's root
    assert not remote.failures
    assert remote.best.checkpoint.is_relative_to(server.directory / "ckpt")


def test_pk_run_starts_its_own_workers_against_a_server(server: Server) -> None:
    result = pk.run(trainers.climb, server=server.url, auth_key=KEY, workers=2, **_settings())
    assert all(m.step == 20 for m in result.members)


def test_a_remote_worker_killed_mid_trial_loses_its_lease_and_the_trial_runs_again(
    server: Server,
) -> None:
    remote = RemoteController(server.url, KEY)
    slow = _workers(server, 1, PBTKIT_TEST_STEP_DELAY="0.2")[0]
    fast: list[subprocess.Popen[bytes]] = []
    try:
        settings = _settings(population=2, total_steps=10)
        outcome: dict[str, pk.Result] = {}

        def wait_for_the_run() -> None:
            outcome["r"] = pk.run(
                trainers.climb, server=server.url, auth_key=KEY, workers=0, **settings
            )

        runner = threading.Thread(target=wait_for_the_run)
        runner.start()
        deadline = time.monotonic() + 30
        held = None
        while held is None and time.monotonic() < deadline:
            try:
                snap = remote.snapshot("remote")
                held = next((t for t in snap.trials if t.status == "running"), None)
            except pk.NotFound:
                pass
            time.sleep(0.05)
        assert held is not None, "the slow worker never took a trial"
        os.kill(slow.pid, signal.SIGKILL)
        slow.wait(10)
        fast = _workers(server, 1)
        runner.join(60)
        assert "r" in outcome
        result = outcome["r"]
    finally:
        for w in [slow, *fast]:
            if w.poll() is None:
                w.terminate()
                w.wait(10)
        remote.close()
    assert all(m.status == "done" and m.step == 10 for m in result.members)
    retried = [e for e in result.failures if e.kind == "retry"]
    assert [e.trial_id for e in retried] == [held.id]
    assert "lease expired" in (retried[0].detail or "")
