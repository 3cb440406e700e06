"""One ranking: Result, status, the dashboard's view, `pbtkit best` and replay name the same
best member, for weighted and Pareto objectives alike."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import pbtkit as pk
from pbtkit.controller import Controller
from pbtkit.core.fitness import MultiObjective, Objective
from pbtkit.core.ranking import Standing, best, rank
from pbtkit.store import open_store
from pbtkit.viz import RunView

ROOT = Path(__file__).resolve().parent.parent
# acc up is better, ms down is better: all three are on the Pareto front
MEMBERS = [{"acc": 0.5, "ms": 1.0}, {"acc": 0.9, "ms": 9.0}, {"acc": 0.7, "ms": 5.0}]


def test_rank_orders_finished_then_living_then_by_the_objective() -> None:
    standings = [
        Standing(0, 0.5),
        Standing(1, math.nan),
        Standing(2, 0.9, failed=True),
        Standing(3, 0.0, finished=False),
        Standing(4, 0.7),
    ]
    assert rank(Objective("acc"), standings) == [4, 0, 1, 2, 3]
    assert rank(Objective("acc", "min"), standings) == [0, 4, 1, 2, 3]
    assert best(Objective("acc"), standings) == 4
    assert best(Objective("acc"), [Standing(0, math.nan)]) is None


@pytest.mark.parametrize(
    ("objective", "expected"),
    [
        (MultiObjective({"acc": "max", "ms": "min"}, weights=[1, 0.01]), 1),
        (MultiObjective({"acc": "max", "ms": "min"}, combine="pareto"), 0),
    ],
)
def test_every_view_names_the_same_best_member(
    tmp_path: Path, objective: MultiObjective, expected: int
) -> None:
    storage = f"sqlite:///{tmp_path / 'pbt.db'}"
    result = pk.run(
        "tests.trainers:echo_metrics",
        space={"acc": pk.Uniform(0.0, 1.0), "ms": pk.Uniform(0.0, 10.0)},
        metric=objective,
        population=3,
        workers=1,
        ready_every=1,
        total_steps=1,
        initial=MEMBERS,
        exploit=pk.NoExploit(explore=False),
        storage=storage,
        name="rank",
        executor="thread",
        progress=False,
    )
    assert result.best.member == expected
    with open_store(storage, create=False) as store:
        controller = Controller(store)
        assert controller.summary("rank").best_member == expected
        assert RunView.load(controller, "rank").best_member == expected
    assert pk.replay_schedule(storage, "rank").trials[-1].member == expected
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    cli = [sys.executable, "-m", "pbtkit"]
    out = subprocess.run(
        [*cli, "best", "--storage", storage, "--json"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert json.loads(out.stdout)["member"] == expected
    out = subprocess.run(
        [*cli, "status", "--storage", storage, "--experiment", "rank"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    rows = [line for line in out.stdout.splitlines() if "best" in line and "│" in line]
    assert len(rows) == 1
    assert rows[0].split("│")[1].strip() == str(expected)
