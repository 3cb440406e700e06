"""A whole run with a conditional optimizer choice: the digits example with SGD (momentum)
or Adam (beta1, beta2), on a real SQLite file with real worker processes.

Members switch branches by exploit (copying a donor on the other optimizer) and by explore
(the optimizer resampled after an exploit); the events, the stored trials, the schedules,
the dashboard's data, the plots, TensorBoard, the export, ``pbtkit status`` and replay must
all show each member's active hyperparameters and nothing of the branch it left.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import pbtkit as pk
from pbtkit.core import SearchSpace
from pbtkit.examples import digits
from pbtkit.loggers.tensorboard import member_dir
from pbtkit.service import PBTServer
from tests.strategies import member_violations

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
KEY = "conditional-secret"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
SPACE = SearchSpace.coerce(digits.OPTIMIZER_SPACE)
SGD_ONLY, ADAM_ONLY = {"momentum"}, {"beta1", "beta2"}
POPULATION = 8
TOTAL = 12


@dataclass(frozen=True)
class Run:
    directory: Path
    storage: str
    result: pk.Result


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    directory = tmp_path_factory.mktemp("optimizers")
    result = digits.main(
        directory,
        optimizers=True,
        progress=False,
        population=POPULATION,
        workers=2,
        executor="process",
        ready_every=2,
        total_steps=TOTAL,
        evolution="generational",  # decisions at a barrier: the same run every time
        exploit=pk.Truncation(0.5),  # many exploits: members leave a branch and come back
        # after every exploit the optimizer is drawn again: half of them switch branch
        explore=pk.Perturb(per_param={"optimizer": {"resample_probability": 1.0}}),
        initial=[{"optimizer": "sgd"}] * 4 + [{"optimizer": "adam"}] * 4,
        seed=3,
        tensorboard=True,
    )
    return Run(directory, f"sqlite:///{directory / 'pbt.db'}", result)


def _on_off_on(present: list[bool]) -> bool:
    """Whether a value was there, then not, then there again: a gap in its line."""
    starts = sum(now and not before for before, now in itertools.pairwise([False, *present]))
    return starts > 1


def _branch(hparams: Any) -> str:
    return str(hparams["optimizer"])


def test_every_trial_and_member_holds_exactly_its_active_hyperparameters(run: Run) -> None:
    result = run.result
    assert all(m.status == "done" and m.step == TOTAL for m in result.members)
    assert {_branch(t.hparams) for t in result.trials} == {"sgd", "adam"}
    for trial in result.trials:
        assert member_violations(SPACE, trial.hparams) == [], trial
    for member in result.members:
        assert member_violations(SPACE, member.hparams) == []
    assert result.spec.space == SPACE
    assert result.spec.to_dict()["space"]["momentum"]["when"] == {"optimizer": "sgd"}


def test_members_switch_branches_by_exploit_and_by_explore(run: Run) -> None:
    by_id = {t.id: t for t in run.result.trials}
    by_exploit = by_explore = 0
    for event in run.result.exploits:
        assert event.old_hparams is not None
        assert event.new_hparams is not None
        assert event.donor_trial is not None
        old, new = dict(event.old_hparams), dict(event.new_hparams)
        donor = by_id[event.donor_trial].hparams
        assert by_id[event.trial_id or 0].hparams == new  # the event is what the trial got
        assert member_violations(SPACE, old) == []
        assert member_violations(SPACE, new) == []
        by_exploit += _branch(old) != _branch(donor)
        by_explore += _branch(donor) != _branch(new)
        detail = event.detail or ""
        if _branch(old) != _branch(new):
            # the change names what came in and what went, never a stale value or None
            gone, came = (SGD_ONLY, ADAM_ONLY) if _branch(old) == "sgd" else (ADAM_ONLY, SGD_ONLY)
            for name in gone:
                assert f"{name}: {old[name]!r} -> inactive" in detail
            for name in came:
                assert f"{name}: inactive -> {new[name]!r}" in detail
            assert "None" not in detail
    assert by_exploit, "no member copied a donor on the other optimizer"
    assert by_explore, "no explore switched the optimizer"


def test_the_schedules_show_the_branch_changes(run: Run) -> None:
    switched = 0
    for member in run.result.members:
        schedule = run.result.schedule(member.member)
        branches = [_branch(s.hparams) for s in schedule.segments]
        for segment in schedule.segments:
            assert member_violations(SPACE, segment.hparams) == []
        switched += len(set(branches)) > 1
        for step, values in schedule.changes():
            assert ("momentum" in values) == (_branch(values) == "sgd"), (step, values)
    assert switched, "no schedule changes optimizer"


def test_the_dashboard_data_shows_inactive_values_as_absent(run: Run) -> None:
    with (
        PBTServer(
            0, KEY, storage=run.storage, checkpoint_root=run.directory / "checkpoints"
        ) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        view = client.get(
            "/dashboard/api/experiment",
            params={"name": "digits-optimizers"},
            headers={"Authorization": f"Bearer {KEY}"},
        ).json()
    assert view["hparams"] == list(SPACE)
    assert view["space"]["beta1"]["when"] == {"optimizer": "adam"}
    members = {m.member: m for m in run.result.members}
    for row in view["members"]:
        assert row["hparams"] == members[row["member"]].hparams
        assert None not in row["hparams"].values()
    gaps = 0
    for member, stretches in view["schedules"].items():
        for _, _, hparams in stretches:
            assert member_violations(SPACE, hparams) == [], (member, hparams)
        for name in ("momentum", "beta1"):
            present = [name in hparams for _, _, hparams in stretches]
            gaps += _on_off_on(present)
    assert gaps, "no member left a branch and came back"


def test_the_schedule_plot_breaks_where_a_value_was_inactive(run: Run) -> None:
    from pbtkit.viz.plots import schedules_figure

    figure = schedules_figure(run.result)
    axes = {ax.get_ylabel(): ax for ax in figure.axes}
    assert set(axes) == set(SPACE)
    broken = 0
    for name in ("momentum", "beta1"):
        for line in axes[name].get_lines():
            ys = [float(y) for y in line.get_ydata()]
            if len(ys) > 1:  # a member's line (a triangle marks an exploit)
                broken += _on_off_on([not math.isnan(y) for y in ys])
    assert broken, "no member's line breaks where its value was inactive"


def test_tensorboard_writes_no_value_while_it_is_inactive(run: Run) -> None:
    from tensorboard.backend.event_processing import event_accumulator

    folder = run.directory / "tensorboard" / "digits-optimizers"
    checked = 0
    for member in range(POPULATION):
        reader = event_accumulator.EventAccumulator(
            str(member_dir(folder, member)), size_guidance={event_accumulator.SCALARS: 0}
        )
        reader.Reload()
        tags = set(reader.Tags()["scalars"])
        momentum = (
            {e.step for e in reader.Scalars("hparams/momentum")}
            if "hparams/momentum" in tags
            else set()
        )
        for trial in run.result.trials:
            if trial.member != member or trial.status != "done":
                continue
            steps = {trial.start_step, trial.end_step - 1}
            if "momentum" in trial.hparams:
                assert steps <= momentum
            else:
                assert not steps & momentum, (member, trial.start_step)
            checked += 1
    assert checked == len([t for t in run.result.trials if t.status == "done"])


def test_the_export_leaves_inactive_values_out(run: Run, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    subprocess.run(
        [sys.executable, "-m", "pbtkit", "export", "--storage", run.storage,
         "--experiment", "digits-optimizers", "--format", "json", "--out", str(out)],
        check=True, env=ENV, capture_output=True,
    )  # fmt: skip
    exported = json.loads(out.read_text())
    for trial in exported["trials"]:
        assert member_violations(SPACE, trial["hparams"]) == []
    subprocess.run(
        [sys.executable, "-m", "pbtkit", "export", "--storage", run.storage,
         "--experiment", "digits-optimizers", "--format", "csv", "--out", str(tmp_path / "csv")],
        check=True, env=ENV, capture_output=True,
    )  # fmt: skip
    with (tmp_path / "csv" / "trials.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert rows
    for row in rows:
        assert (row["hparams.momentum"] == "") == (row["hparams.optimizer"] == "adam")
        assert (row["hparams.beta1"] == "") == (row["hparams.optimizer"] == "sgd")


def test_pbtkit_status_shows_only_active_hyperparameters(run: Run) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "pbtkit", "status", "--storage", run.storage,
         "--experiment", "digits-optimizers"],
        check=True, capture_output=True, text=True,
        env={**ENV, "COLUMNS": "400"},
    ).stdout  # fmt: skip
    rows = [line for line in shown.splitlines() if "optimizer=" in line]
    assert len(rows) == POPULATION
    for line in rows:
        adam = "optimizer=adam" in line
        assert ("momentum=" in line) != adam, line
        assert ("beta1=" in line) == adam, line
        assert "None" not in line


def test_replay_trains_the_best_schedule_with_only_its_active_values(
    run: Run, tmp_path: Path
) -> None:
    schedule = pk.replay_schedule(run.storage, "digits-optimizers")
    seen: list[dict[str, Any]] = []

    def recording(trial: pk.Trial) -> None:
        seen.append(dict(trial.hparams))
        digits.train(trial)

    replayed = pk.replay(recording, schedule, checkpoint_dir=tmp_path)
    assert seen
    for values in seen:
        assert member_violations(SPACE, values) == []
    # the same steps with the same values and the same optimizer state: the same model
    assert replayed.metrics["accuracy"] == run.result.best.metrics["accuracy"]
