"""The W&B logger in offline mode: the files it wrote, read back (see wandb_files)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import pbtkit as pk
from tests import trainers
from tests.loggers.conftest import KINDS, POPULATION, TrackedRun, settings
from tests.loggers.wandb_files import OfflineRun, read_runs

STEP = "member_step"


def _runs(tracked: TrackedRun) -> dict[str, OfflineRun]:
    runs = read_runs(tracked.wandb_dir)
    expected = {"tracked/experiment", *(f"tracked/member-{m:03d}" for m in range(POPULATION))}
    assert set(runs) == expected
    return runs


def _curve(run: OfflineRun, key: str) -> list[tuple[int, float]]:
    return [(row[STEP], row[key]) for row in run.history if key in row]


def test_a_run_per_member_grouped_by_experiment(tracked: TrackedRun) -> None:
    runs = _runs(tracked)
    for name, run in runs.items():
        assert run.group == "tracked"
        assert run.project == "pbt"
        assert run.exit_code == 0
        assert run.job_type == ("experiment" if name.endswith("experiment") else "member")
    for m in range(POPULATION):
        assert runs[f"tracked/member-{m:03d}"].config["member"] == m
    experiment = runs["tracked/experiment"]
    assert experiment.config["pbtkit"]["population"] == POPULATION
    assert experiment.config["pbtkit"]["space"]["kind"]["values"] == KINDS
    best = tracked.result.best
    assert experiment.summary["pbtkit.best_member"] == best.member
    assert experiment.summary["pbtkit.best_score"] == pytest.approx(best.score)
    curve = [v for _, v in sorted(_curve(experiment, "pbt/best_score"))]
    assert curve == sorted(curve)
    assert curve[-1] == pytest.approx(best.score)


def test_every_member_has_its_metrics_by_step(tracked: TrackedRun) -> None:
    runs = _runs(tracked)
    for m in range(POPULATION):
        run = runs[f"tracked/member-{m:03d}"]
        for metric in ("score", "loaded_value"):
            expected = [
                (r.step, r.metrics[metric])
                for r in tracked.reports
                if r.member == m and metric in r.metrics
            ]
            got = _curve(run, metric)
            assert len(got) == len(expected)
            assert dict(got) == pytest.approx(dict(expected))
        trials = [t for t in tracked.result.trials if t.member == m and t.status == "done"]
        assert dict(_curve(run, "pbt/score")) == pytest.approx(
            {t.end_step - 1: t.score for t in trials}
        )


def test_every_member_has_its_schedule_as_curves(tracked: TrackedRun) -> None:
    runs = _runs(tracked)
    for m in range(POPULATION):
        run = runs[f"tracked/member-{m:03d}"]
        x = dict(_curve(run, "hparams/x"))
        kind = dict(_curve(run, "hparams/kind"))
        trials = [t for t in tracked.result.trials if t.member == m and t.status == "done"]
        for t in trials:
            for step in (t.start_step, t.end_step - 1):
                assert x[step] == pytest.approx(t.hparams["x"])
                assert kind[step] == KINDS.index(t.hparams["kind"])
        assert run.summary["hparams.kind"] == trials[-1].hparams["kind"]


def test_every_exploit_is_in_the_tables(tracked: TrackedRun) -> None:
    runs = _runs(tracked)
    steps = {t.id: t.start_step for t in tracked.result.trials}
    every = sorted(
        (steps[e.trial_id], e.member, e.donor_member, e.donor_trial, e.trial_id)
        for e in tracked.result.exploits
        if e.trial_id is not None
    )
    columns, rows = runs["tracked/experiment"].table("exploits")
    assert columns == ["step", "member", "donor_member", "donor_trial", "trial", "changes"]
    assert sorted(tuple(r[:5]) for r in rows) == every
    for m in range(POPULATION):
        run = runs[f"tracked/member-{m:03d}"]
        _, mine = run.table("exploits")
        assert sorted(tuple(r[:5]) for r in mine) == [row for row in every if row[1] == m]
        for row in mine:
            assert "->" in row[5] or row[5] == "same hyperparameters"
        donors = sorted(_curve(run, "pbt/exploit_donor"))
        assert donors == [(row[0], row[2]) for row in every if row[1] == m]


def test_without_wandb_the_message_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(pk.ConfigError, match=r"pip install 'pbtkit\[wandb\]'"):
        pk.run(trainers.climb, loggers=["wandb"], **settings(tmp_path))  # type: ignore[arg-type]


def test_a_bad_mode_is_refused() -> None:
    with pytest.raises(pk.ConfigError, match="W&B mode"):
        pk.loggers.logger_from({"type": "wandb", "mode": "sometimes"})


def test_online_without_a_login_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))  # no stored login
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens here
    logger = pk.loggers.logger_from({"type": "wandb", "mode": "online", "dir": str(tmp_path)})
    with pytest.raises(pk.ConfigError, match="wandb login"):
        pk.run(trainers.climb, loggers=[logger], **settings(tmp_path))  # type: ignore[arg-type]
