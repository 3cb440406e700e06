"""A server that dies and comes back: the workers ride it out and no trial is trained twice.

`pbtkit serve` is killed with SIGKILL while three `pbtkit worker --server` processes train,
and started again on the same port 5 s later. Workers in the middle of a trial keep
training, wait for the server, and finish; the others wait to lease. Each says once that
the server went away and once that it came back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import pbtkit as pk
from pbtkit.service import RemoteController
from pbtkit.spec import ExperimentSpec
from pbtkit.store import open_store
from tests.helpers import free_port as _free_port
from tests.helpers import wait_until_serving
from tests.service.helpers import KEY

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PBTKIT_AUTH_KEY"}
    env.update(PYTHONPATH=str(ROOT), PBTKIT_AUTH_KEY=KEY, **extra)
    return env


def _serve(directory: Path, port: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "pbtkit", "serve", "--storage", f"sqlite:///{directory / 's.db'}",
        "--checkpoint-root", str(directory / "ckpt"), "--port", str(port),
        "--lease-seconds", "30",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=_env())
    wait_until_serving(f"http://127.0.0.1:{port}", process, "pbtkit serve")
    return process


def test_workers_ride_out_a_server_killed_and_restarted(tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _serve(tmp_path, port)
    population, ready_every, total_steps = 6, 5, 30
    with RemoteController(url, KEY) as remote:
        remote.create(
            "outage",
            ExperimentSpec(
                space=pk.SearchSpace({"x": pk.Uniform(0.1, 1.0)}),
                policy=pk.PBT(
                    pk.Objective("score"), ready_every=ready_every, total_steps=total_steps
                ),
                population=population,
                checkpoint_root="unused",
            ),
        )
    log = tmp_path / "trained.log"
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pbtkit",
                "worker",
                "tests.trainers:climb",
                "--server",
                url,
                "--experiment",
                "outage",
                "--label",
                f"w{i}",
            ],
            env=_env(PBTKIT_TEST_LOG=str(log), PBTKIT_TEST_STEP_DELAY="0.15"),
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    try:
        # Kill it once some trials are done and others are being trained.
        deadline = time.monotonic() + 60
        while not log.exists() or len(log.read_text().splitlines()) < 4:
            assert time.monotonic() < deadline, "the workers trained nothing"
            time.sleep(0.05)
        server.send_signal(signal.SIGKILL)
        server.wait()
        time.sleep(5)
        assert [w.poll() for w in workers] == [None] * 3, "a worker gave up during the outage"
        server = _serve(tmp_path, port)
        codes = [w.wait(timeout=180) for w in workers]
        errors = [w.stderr.read() if w.stderr else "" for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        server.kill()
        server.wait()
    assert codes == [0, 0, 0], errors
    for text in errors:
        assert text.count("is unreachable") == 1, text
        assert text.count("answers again") == 1, text
        assert "Traceback" not in text, text
    trained = Counter(int(line.split()[0]) for line in log.read_text().splitlines())
    twice = sorted(t for t, n in trained.items() if n > 1)
    assert not twice, f"trials trained more than once: {twice}"
    with open_store(f"sqlite:///{tmp_path / 's.db'}", create=False) as store, store.read() as tx:
        experiment = tx.get_experiment("outage")
        assert experiment is not None
        assert experiment.status == "finished"
        trials = tx.trials(experiment.id)
        members = tx.members(experiment.id)
    # Every member's weights got their budget: the chain of parents behind its last trial
    # covers steps 0 to the end without a gap. (Steps follow the weights, so a member that
    # copied a donor behind or ahead of it trained some steps again or skipped them: the
    # number of trials is not population x 6.)
    assert all(m.status == "done" and m.step == total_steps for m in members)
    by_id = {t.id: t for t in trials}
    for member in {t.member for t in trials}:
        last = max((t for t in trials if t.member == member), key=lambda t: t.id)
        assert last.end_step == total_steps
        trial = last
        while trial.parent_id is not None:
            parent = by_id[trial.parent_id]
            assert trial.start_step == parent.end_step, (trial, parent)
            trial = parent
        assert trial.start_step == 0
    assert all(t.status == "done" and t.attempt == 1 for t in trials)
    assert set(trained) == {t.id for t in trials}
    # every checkpoint a member ended with is still there: none was deleted unacknowledged
    for t in trials:
        if t.end_step == total_steps:
            assert t.checkpoint is not None
            assert (tmp_path / "ckpt" / t.checkpoint / "MANIFEST.json").is_file()
