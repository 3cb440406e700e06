"""`pbtkit export` and `pbtkit best`, run as a user runs them, on a finished run."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest

import pbtkit as pk
from tests.helpers import Run
from tests.helpers import pbtkit_cli as _pbtkit


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_has_every_trial_report_and_event(toy_run: Run, tmp_path: Path) -> None:
    out = _pbtkit(
        "export", "-s", toy_run.storage, "-e", "toy", "--format", "csv", "--out", "x",
        cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = toy_run.result
    trials = _rows(tmp_path / "x" / "trials.csv")
    assert [int(r["trial_id"]) for r in trials] == [t.id for t in result.trials]
    for row, t in zip(trials, result.trials, strict=True):
        assert float(row["hparams.h0"]) == t.hparams["h0"]
        assert row["status"] == t.status
        assert row["parent_id"] == ("" if t.parent_id is None else str(t.parent_id))
        if math.isfinite(t.score):
            assert float(row["score"]) == t.score
    reports = _rows(tmp_path / "x" / "reports.csv")
    stored = result._controller.reports("toy")
    assert len(reports) == len(stored)  # every report, steps trained twice included
    assert [(int(r["member"]), int(r["step"])) for r in reports] == [
        (r.member, r.step) for r in stored
    ]
    assert set(reports[0]) == {"trial_id", "member", "step", "score", "theta0", "theta1"}
    events = _rows(tmp_path / "x" / "events.csv")
    exploits = [e for e in events if e["kind"] == "exploit"]
    assert len(exploits) == len(result.exploits)
    first = result.exploits[0]
    assert json.loads(exploits[0]["new_hparams"]) == dict(first.new_hparams or {})
    assert int(exploits[0]["donor_member"]) == first.donor_member


def test_json_holds_the_same(toy_run: Run, tmp_path: Path) -> None:
    out = _pbtkit("export", "-s", toy_run.storage, "--format", "json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["experiment"]["name"] == "toy"
    assert len(data["trials"]) == len(toy_run.result.trials)
    assert len(data["events"]) == len(toy_run.result.events)
    assert {r["step"] for r in data["reports"]} == set(range(30))
    out = _pbtkit("export", "-s", toy_run.storage, "--out", "run.json", cwd=tmp_path)
    assert json.loads((tmp_path / "run.json").read_text()) == data


def test_csv_needs_a_folder(toy_run: Run, tmp_path: Path) -> None:
    out = _pbtkit("export", "-s", toy_run.storage, "--format", "csv", cwd=tmp_path)
    assert out.returncode == 2
    assert "give --out FOLDER" in out.stderr


def test_best_names_the_member_its_checkpoint_and_schedule(toy_run: Run, tmp_path: Path) -> None:
    result = toy_run.result
    out = _pbtkit("best", "-s", toy_run.storage, "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["member"] == result.best.member
    assert data["hparams"] == dict(result.best.hparams)
    assert data["score"] == result.best.score
    assert data["checkpoint"] == str(result.best.checkpoint)
    assert data["schedule"] == result.schedule().to_dict()
    assert Path(data["checkpoint"]).is_dir()
    text = _pbtkit("best", "-s", toy_run.storage, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert f"member {result.best.member}" in text.stdout
    assert str(result.best.checkpoint) in text.stdout
    assert "schedule" in text.stdout


def test_an_empty_store_names_no_experiment(tmp_path: Path) -> None:
    from pbtkit.store import open_store

    open_store(f"sqlite:///{tmp_path / 'empty.db'}").close()
    out = _pbtkit("best", "-s", "empty.db", cwd=tmp_path)
    assert out.returncode == 2
    assert "name the experiment with --experiment" in out.stderr
    assert "holds none" in out.stderr


def test_trials_csv_says_who_each_trial_came_from(toy_run: Run, tmp_path: Path) -> None:
    out = _pbtkit("export", "-s", toy_run.storage, "-f", "csv", "-o", "x", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = toy_run.result
    by_id = {t.id: t for t in result.trials}
    exploited = {e.trial_id: e.donor_member for e in result.exploits}
    for row in _rows(tmp_path / "x" / "trials.csv"):
        t = by_id[int(row["trial_id"])]
        parent = by_id.get(t.parent_id) if t.parent_id is not None else None
        assert row["parent_member"] == ("" if parent is None else str(parent.member))
        assert row["exploit"] == str(t.id in exploited)
        assert row["donor_member"] == str(exploited.get(t.id, ""))


def test_parquet_holds_the_same_tables_as_the_dataframes(toy_run: Run, tmp_path: Path) -> None:
    import pandas as pd

    out = _pbtkit("export", "-s", toy_run.storage, "-f", "parquet", "-o", "pq", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == [
        "events.parquet", "reports.parquet", "trials.parquet",
    ]  # fmt: skip
    result = toy_run.result
    for table in ("trials", "reports", "events"):
        written = pd.read_parquet(tmp_path / "pq" / f"{table}.parquet")
        pd.testing.assert_frame_equal(written, result.to_dataframe(table), check_dtype=False)
    trials = pd.read_parquet(tmp_path / "pq" / "trials.parquet")
    assert len(trials) == len(result.trials)
    assert int(trials["exploit"].sum()) == len(result.exploits)
    out = _pbtkit("export", "-s", toy_run.storage, "-f", "parquet", cwd=tmp_path)
    assert out.returncode == 2
    assert "give --out FOLDER" in out.stderr


def test_the_dataframe_has_a_row_per_trial(toy_run: Run) -> None:
    result = toy_run.result
    frame = result.to_dataframe()
    assert list(frame["trial_id"]) == [t.id for t in result.trials]
    for name in ("member", "generation", "start_step", "end_step", "status", "score",
                 "parent_id", "parent_member", "exploit", "donor_member",
                 "hparams.h0", "hparams.h1", "metrics.score"):  # fmt: skip
        assert name in frame.columns
    for t, (_, row) in zip(result.trials, frame.iterrows(), strict=True):
        assert row["member"] == t.member
        assert row["hparams.h0"] == t.hparams["h0"]
        assert row["start_step"] == t.start_step
        if math.isfinite(t.score):
            assert row["score"] == t.score
    exploits = frame[frame["exploit"]]
    assert sorted(exploits["trial_id"]) == sorted(e.trial_id for e in result.exploits)
    # an exploit starts from another member's checkpoint (inherit="all")
    assert (exploits["parent_member"] != exploits["member"]).all()
    assert (exploits["donor_member"] == exploits["parent_member"]).all()
    reports = result.to_dataframe("reports")
    assert set(reports["step"]) == set(range(30))
    assert len(result.to_dataframe("events")) == len(result.events)


def test_a_missing_hyperparameter_is_a_missing_value(tmp_path: Path) -> None:
    """Conditional hyperparameters leave inactive ones out of a trial: a gap, not an error."""
    from pbtkit.export import dataframe, trial_table
    from pbtkit.store import TrialRecord

    trials = [
        TrialRecord(1, 1, 0, 0, {"opt": "sgd", "momentum": 0.9}, None, 0, 5, status="done"),
        TrialRecord(2, 1, 1, 0, {"opt": "adam"}, None, 0, 5, status="done"),
        TrialRecord(3, 1, 2, 0, {"opt": 3}, None, 0, 5, status="running"),
    ]
    columns, rows = trial_table(trials, [], ["opt", "momentum"])
    frame = dataframe(columns, rows)
    assert frame["hparams.momentum"].isna().tolist() == [False, True, True]
    assert frame["hparams.opt"].tolist() == ["sgd", "adam", "3"]  # mixed kinds: as text
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)  # every column has one kind: Parquet takes it


def test_without_pandas_the_message_names_the_extra(
    toy_run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(pk.ConfigError, match=r"pip install 'pbtkit\[pandas\]'"):
        toy_run.result.to_dataframe()
    with pytest.raises(pk.ConfigError, match="table must be one of"):
        toy_run.result.to_dataframe("members")
