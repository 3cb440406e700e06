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

ROOT = Path(__file__).resolve().parents[2]
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
    # about population x 4 trials: a member that copied a donor ahead of it (steps follow
    # the weights) trains fewer, one that copied a donor behind it more
    assert abs(len(trials) - population * trials_per_member) <= population
    assert all(t.status == "done" and t.attempt == 1 for t in trials)
    assert set(executed) == {t.id for t in trials}
    # each trial reports what it loaded once, then its score at every step
    assert len(reports) == len(trials) * (1 + ready_every)
    per_trial = Counter(r.trial_id for r in reports)
    assert set(per_trial.values()) == {1 + ready_every}
    assert all(m.status == "done" and m.step == total_steps for m in members)
    # the work was shared: many of the worker processes ran trials
    assert len({pid for _, pid in lines}) >= WORKERS // 2


PASSWORD = "S3cr3t-pw-4f9"


def test_no_command_ever_shows_the_database_password(postgres_url: str, tmp_path: Path) -> None:
    # The test server trusts loopback, so any password is accepted: it only has to travel.
    url = postgres_url.replace("://pbtkit@", f"://pbtkit:{PASSWORD}@")
    assert PASSWORD in url
    (tmp_path / "pbt.toml").write_text(
        "metric = 'score'\npopulation = 3\nworkers = 2\nready_every = 2\ntotal_steps = 4\n"
        "checkpoint_dir = 'ckpt'\n[space]\nx = { type = 'uniform', low = 0.1, high = 1.0 }\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    seen: list[str] = []

    def pbtkit(*args: str, code: int | None = 0) -> None:
        out = subprocess.run(
            [sys.executable, "-m", "pbtkit", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if code is not None:
            assert out.returncode == code, (args, out.stderr)
        seen.append(f"$ pbtkit {' '.join(a.replace(PASSWORD, '<pw>') for a in args)}")
        seen.extend([out.stdout, out.stderr])

    # the worker processes of a run: their command lines are readable by every user
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pbtkit",
            "run",
            "tests.trainers:climb",
            "--config",
            "pbt.toml",
            "--storage",
            url,
            "--name",
            "pw",
            "--no-progress",
        ],
        cwd=tmp_path,
        env={**env, "PBTKIT_TEST_STEP_DELAY": "0.05"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    command_lines: list[str] = []
    while run.poll() is None:
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    command_lines.append((proc / "cmdline").read_bytes().decode(errors="replace"))
                except OSError:
                    continue
    stdout, stderr = run.communicate()
    assert run.returncode == 0, stderr
    seen += [stdout, stderr]
    workers = [c for c in command_lines if "worker" in c and "tests.trainers:climb" in c]
    assert workers, "no worker process was seen"
    # this run's own processes: they name its database (another run of this suite on the
    # machine names its own, and runs `pbtkit status` with the password on purpose below)
    database = url.rsplit("/", 1)[1]
    ours = [c for c in command_lines if database in c or "tests.trainers:climb" in c]
    assert not [c for c in ours if PASSWORD in c and "pbtkit\x00run" not in c]
    for args in (
        ("status", "--storage", url),
        ("status", "--storage", url, "--experiment", "pw"),
        ("best", "--storage", url, "--experiment", "pw"),
        ("best", "--storage", url, "--experiment", "pw", "--json"),
        ("export", "--storage", url, "--experiment", "pw"),
        ("replay", "--storage", url, "--experiment", "pw"),
        ("db", "version", "--storage", url),
        ("db", "upgrade", "--storage", url),
    ):
        pbtkit(*args)
    # and the failures, whose messages name the storage
    pbtkit("status", "--storage", url, "--experiment", "ghost", code=2)
    pbtkit("best", "--storage", url, code=None)
    pbtkit("run", "tests.trainers:always_crash", "--config", "pbt.toml", "--storage", url,
           "--name", "broken", "--no-progress", code=None)  # fmt: skip
    pbtkit("status", "--storage", url.replace("127.0.0.1", "127.0.0.9"), code=2)
    text = "\n".join(seen)
    assert "pbtkit:***@" in text  # the URL is shown, masked ...
    assert PASSWORD not in text  # ... and the password never
