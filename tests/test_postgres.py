"""PostgreSQL under real concurrency: many worker processes, one database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import pbtkit as pk
from pbtkit.controller import Controller
from pbtkit.core.fitness import Objective
from pbtkit.core.policy import PBT
from pbtkit.spec import ExperimentSpec
from pbtkit.store import open_store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 32


def test_32_worker_processes_run_every_trial_once_and_lose_no_report(
    postgres_url: str, tmp_path: Path
) -> None:
    population, ready_every, total_steps = 32, 5, 20
    with open_store(postgres_url) as store:
        Controller(store).create(
            "crowd",
            ExperimentSpec(
                space=pk.SearchSpace({"x": pk.Uniform(0.1, 1.0)}),
                policy=PBT(
                    objective=Objective("score"),
                    exploit=pk.Truncation(0.25),
                    ready_every=ready_every,
                    total_steps=total_steps,
                ),
                population=population,
                checkpoint_root=str(tmp_path / "ckpt"),
            ),
        )
    log = tmp_path / "executed.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PBTKIT_TEST_LOG": str(log)}
    command = [sys.executable, "-m", "pbtkit", "worker", "tests.trainers:climb"]
    workers = [
        subprocess.Popen(
            [*command, "--storage", postgres_url, "--experiment", "crowd", "--label", f"w{i}"],
            env=env,
        )
        for i in range(WORKERS)
    ]
    try:
        codes = [w.wait(timeout=240) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    assert codes == [0] * WORKERS
    lines = [line.split() for line in log.read_text().splitlines()]
    executed = Counter(int(trial) for trial, _ in lines)
    twice = sorted(t for t, n in executed.items() if n > 1)
    assert not twice, f"trials run more than once: {twice}"
    trials_per_member = total_steps // ready_every
    with open_store(postgres_url) as store, store.read() as tx:
        experiment = tx.get_experiment("crowd")
        assert experiment is not None
        assert experiment.status == "finished"
        trials = tx.trials(experiment.id)
        reports = tx.reports(experiment.id)
        members = tx.members(experiment.id)
    assert len(trials) == population * trials_per_member
    assert all(t.status == "done" and t.attempt == 1 for t in trials)
    assert set(executed) == {t.id for t in trials}
    # each trial reports what it loaded once, then its score at every step
    assert len(reports) == len(trials) * (1 + ready_every)
    per_trial = Counter(r.trial_id for r in reports)
    assert set(per_trial.values()) == {1 + ready_every}
    assert all(m.status == "done" and m.step == total_steps for m in members)
    # the work was shared: many of the worker processes ran trials
    assert len({pid for _, pid in lines}) >= WORKERS // 2
