"""trial_timeout: a training function that hangs is stopped, retried, and the run ends.

The lease cannot catch a hung function (the heartbeat thread keeps renewing it); the
timeout does: the trial is given back as a failed attempt that says why, and the worker is
replaced (a process restarts itself; a thread is abandoned for a new one).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import pbtkit as pk
from pbtkit.controller import Controller
from pbtkit.spec import ExperimentSpec
from pbtkit.store import open_store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def _run(tmp_path: Path, executor: str, timeout: float) -> pk.Result:
    return pk.run(
        "tests.trainers:hangs_once",
        space={"x": pk.Uniform(0.1, 1.0)},
        metric="score",
        population=3,
        workers=2,
        ready_every=2,
        total_steps=4,
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        name="hang",
        executor=executor,  # type: ignore[arg-type]
        trial_timeout=timeout,
        progress=False,
    )


def _log(path: Path) -> list[tuple[int, int, int, str]]:
    rows = [line.split() for line in path.read_text().splitlines()]
    return [(int(t), int(a), int(p), token) for t, a, p, token in rows]


def test_a_hung_trial_is_stopped_its_process_replaced_and_the_run_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("PBTKIT_TEST_LOG", str(log))
    result = _run(tmp_path, "process", timeout=3.0)
    assert all(m.status == "done" and m.step == 4 for m in result.members)
    hung = next(t for t in result.trials if t.member == 0 and t.generation == 0)
    assert hung.status == "done"
    assert hung.attempt == 2
    retries = [e for e in result.events if e.kind == "retry" and e.trial_id == hung.id]
    assert len(retries) == 1
    assert "ran longer than trial_timeout=3 s" in (retries[0].detail or "")
    calls = [row for row in _log(log) if row[0] == hung.id]
    assert [attempt for _, attempt, _, _ in calls] == [1, 2]
    first, second = calls
    assert first[3] != second[3], "the retry ran in the process that hung"


def test_a_hung_trial_in_a_thread_is_abandoned_and_the_run_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PBTKIT_TEST_HANG", "20")  # the abandoned thread ends on its own
    result = _run(tmp_path, "thread", timeout=1.0)
    assert all(m.status == "done" and m.step == 4 for m in result.members)
    hung = next(t for t in result.trials if t.member == 0 and t.generation == 0)
    assert hung.attempt == 2
    reasons = [e.detail or "" for e in result.events if e.kind == "retry"]
    assert any("trial_timeout=1 s" in r for r in reasons)


def test_pbtkit_worker_takes_a_trial_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pbt.db'}"
    with open_store(url) as store:
        spec = ExperimentSpec(
            space=pk.SearchSpace({"x": pk.Uniform(0.1, 1.0)}),
            policy=pk.PBT(pk.Objective("score"), ready_every=2, total_steps=2),
            population=1,
            checkpoint_root=str(tmp_path / "ckpt"),
        )
        Controller(store).create("hang", spec)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pbtkit",
            "worker",
            "tests.trainers:hangs_once",
            "--storage",
            url,
            "--experiment",
            "hang",
            "--trial-timeout",
            "2",
        ],
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    with open_store(url, create=False) as store, store.read() as tx:
        experiment = tx.get_experiment("hang")
        assert experiment is not None
        (trial,) = tx.trials(experiment.id)
    assert (trial.status, trial.attempt) == ("done", 2)
