"""The MLflow logger against a real tracking store (SQLite), read back with MlflowClient."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

import pbtkit as pk
from pbtkit.loggers import Follower, MLflowLogger
from tests import trainers
from tests.loggers.conftest import KINDS, POPULATION, TrackedRun, settings


def _runs(client: MlflowClient, experiment: str = "pbt") -> tuple[Any, dict[int, Any]]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id])
    parents = [r for r in runs if r.data.tags.get("pbtkit.role") == "experiment"]
    assert len(parents) == 1
    parent = parents[0]
    children = {
        int(r.data.tags["pbtkit.member"]): r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    return parent, children


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_a_parent_run_and_a_finished_child_run_per_member(tracked: TrackedRun) -> None:
    client = MlflowClient(tracking_uri=tracked.tracking_uri)
    parent, children = _runs(client)
    assert parent.info.run_name == "tracked"
    assert parent.info.status == "FINISHED"
    assert sorted(children) == list(range(POPULATION))
    for member, run in children.items():
        assert run.info.run_name == f"member-{member:03d}"
        assert run.info.status == "FINISHED"
    params = parent.data.params
    assert params["population"] == str(POPULATION)
    assert params["metric"] == "score"
    assert json.loads(params["space.kind"]) == {"type": "choice", "values": KINDS}
    best = tracked.result.best
    assert parent.data.tags["pbtkit.best_member"] == str(best.member)
    assert float(parent.data.tags["pbtkit.best_score"]) == pytest.approx(best.score)
    assert parent.data.tags["pbtkit.best_run_id"] == children[best.member].info.run_id


def test_every_member_has_its_metrics_by_step(tracked: TrackedRun) -> None:
    client = MlflowClient(tracking_uri=tracked.tracking_uri)
    _, children = _runs(client)
    for member, run in children.items():
        for metric in ("score", "loaded_value"):
            expected = [
                (r.step, r.metrics[metric])
                for r in tracked.reports
                if r.member == member and metric in r.metrics
            ]
            history = _history(client, run.info.run_id, metric)
            assert len(history) == len(expected)
            assert dict(history) == pytest.approx(dict(expected))
        # the objective of each finished trial, at its last step
        trials = [t for t in tracked.result.trials if t.member == member and t.status == "done"]
        scores = dict(_history(client, run.info.run_id, "pbt/score"))
        assert scores == pytest.approx({t.end_step - 1: t.score for t in trials})


def test_every_member_has_its_schedule_as_curves(tracked: TrackedRun) -> None:
    client = MlflowClient(tracking_uri=tracked.tracking_uri)
    _, children = _runs(client)
    for member, run in children.items():
        trials = [t for t in tracked.result.trials if t.member == member and t.status == "done"]
        x = dict(_history(client, run.info.run_id, "hparams/x"))
        kind = dict(_history(client, run.info.run_id, "hparams/kind"))
        for t in trials:
            for step in (t.start_step, t.end_step - 1):
                assert x[step] == pytest.approx(t.hparams["x"])
                assert kind[step] == KINDS.index(t.hparams["kind"])  # categorical: its index
        assert run.data.tags["hparams.kind"] == trials[-1].hparams["kind"]
        assert float(run.data.tags["hparams.x"]) == pytest.approx(trials[-1].hparams["x"])


def test_every_exploit_is_a_tag_and_a_donor_curve(tracked: TrackedRun) -> None:
    client = MlflowClient(tracking_uri=tracked.tracking_uri)
    parent, children = _runs(client)
    steps = {t.id: t.start_step for t in tracked.result.trials}
    for member, run in children.items():
        mine = [e for e in tracked.result.exploits if e.member == member]
        tags = sorted(v for k, v in run.data.tags.items() if k.startswith("pbtkit.exploit."))
        expected = sorted(
            f"step {steps[e.trial_id]}: copied member {e.donor_member} (trial {e.donor_trial})"
            for e in mine
            if e.trial_id is not None
        )
        assert [t.split(";")[0] for t in tags] == expected
        donors = _history(client, run.info.run_id, "pbt/exploit_donor")
        assert sorted(donors) == sorted(
            (steps[e.trial_id], float(e.donor_member))
            for e in mine
            if e.trial_id is not None and e.donor_member is not None
        )
    # the parent keeps every exploit as JSON, with what changed
    path = client.download_artifacts(parent.info.run_id, "exploits.json", str(tracked.directory))
    rows = json.loads(Path(path).read_text())["exploits"]
    assert len(rows) == len(tracked.result.exploits)
    for row, e in zip(rows, tracked.result.exploits, strict=True):
        assert (row["member"], row["donor_member"], row["trial"]) == (
            e.member, e.donor_member, e.trial_id,
        )  # fmt: skip
        assert row["new_hparams"] == dict(e.new_hparams or {})
        changed = {c["name"] for c in row["changes"]}
        assert changed == {
            k for k in (e.new_hparams or {}) if (e.old_hparams or {}).get(k) != e.new_hparams[k]
        }


def test_the_best_checkpoint_is_an_artifact_and_best_so_far_a_curve(
    tracked: TrackedRun, tmp_path: Path
) -> None:
    client = MlflowClient(tracking_uri=tracked.tracking_uri)
    parent, _ = _runs(client)
    best = tracked.result.best
    assert isinstance(best.checkpoint, Path)
    local = Path(client.download_artifacts(parent.info.run_id, "best-checkpoint", str(tmp_path)))
    assert (local / "state.json").read_text() == (best.checkpoint / "state.json").read_text()
    curve = _history(client, parent.info.run_id, "pbt/best_score")
    values = [v for _, v in sorted(curve)]
    assert values == sorted(values)  # "max": the best so far only rises
    assert values[-1] == pytest.approx(best.score)


def test_running_again_replaces_the_runs_of_the_experiment(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for _ in range(2):  # the second resumes the finished run: written again, once
        pk.run(
            trainers.climb,
            loggers=[{"type": "mlflow", "tracking_uri": uri, "experiment_name": "pbt",
                      "artifact_location": (tmp_path / "art").as_uri()}],
            **settings(tmp_path, population=2, total_steps=6),  # type: ignore[arg-type]
        )  # fmt: skip
    client = MlflowClient(tracking_uri=uri)
    _, children = _runs(client)
    assert sorted(children) == [0, 1]
    history = _history(client, children[0].info.run_id, "score")
    assert sorted(s for s, _ in history) == list(range(6))  # each step once


def test_a_follower_writes_a_finished_run_later(tracked: TrackedRun, tmp_path: Path) -> None:
    from pbtkit.controller import Controller
    from pbtkit.store import open_store

    uri = f"sqlite:///{tmp_path / 'later.db'}"
    store = open_store(f"sqlite:///{tracked.directory / 'run.db'}")
    logger = MLflowLogger(uri, "later", artifact_location=(tmp_path / "art").as_uri())
    with Follower(Controller(store), "tracked", [logger]):
        pass
    store.close()
    client = MlflowClient(tracking_uri=uri)
    _, children = _runs(client, "later")
    assert sorted(children) == list(range(POPULATION))


def test_without_mlflow_the_message_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import now fails
    with pytest.raises(pk.ConfigError, match=r"pip install 'pbtkit\[mlflow\]'"):
        pk.run(trainers.climb, loggers=["mlflow"], **settings(tmp_path))  # type: ignore[arg-type]
    assert not (tmp_path / "run.db").exists()  # refused before anything was created


def test_an_unusable_tracking_store_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    logger = MLflowLogger(tracking_uri=f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}")
    with pytest.raises(pk.ConfigError, match="give a tracking_uri it can reach"):
        pk.run(trainers.climb, loggers=[logger], **settings(tmp_path))  # type: ignore[arg-type]
