"""`pbtkit export` and `pbtkit best`, run as a user runs them, on a finished run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from tests.viz.conftest import Run
from tests.viz.test_plots import _pbtkit


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
