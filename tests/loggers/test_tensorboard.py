"""TensorBoard files of a real run, read back with TensorBoard's own event reader."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import pbtkit as pk
from pbtkit.controller import Controller
from pbtkit.loggers import Follower
from pbtkit.loggers.tensorboard import TensorBoardLogger, trial_dir
from pbtkit.store import open_store
from tests import trainers
from tests.helpers import POPULATION, TOTAL_STEPS, GatedRun, Run


def _read(folder: Path) -> event_accumulator.EventAccumulator:
    reader = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0}
    )
    reader.Reload()
    return reader


def _scalars(reader: event_accumulator.EventAccumulator, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in reader.Scalars(tag)}


def _texts(reader: event_accumulator.EventAccumulator, tag: str) -> list[tuple[int, str]]:
    if f"{tag}/text_summary" not in reader.Tags()["tensors"]:
        return []
    return [
        (e.step, e.tensor_proto.string_val[0].decode())
        for e in reader.Tensors(f"{tag}/text_summary")
    ]


def test_every_member_has_its_metrics_and_hyperparameters_as_scalars(toy_run: Run) -> None:
    result = toy_run.result
    reports = Controller(open_store(toy_run.storage)).reports(toy_run.name)
    folders = sorted(p.name for p in toy_run.tensorboard.iterdir())
    assert folders == [*(f"member-{m:03d}" for m in range(POPULATION)), "trials"]
    for member in range(POPULATION):
        reader = _read(toy_run.tensorboard / f"member-{member:03d}")
        tags = set(reader.Tags()["scalars"])
        assert tags == {
            "metrics/score",
            "metrics/theta0",
            "metrics/theta1",
            "hparams/h0",
            "hparams/h1",
        }
        for metric in ("score", "theta0", "theta1"):
            expected = {r.step: r.metrics[metric] for r in reports if r.member == member}
            assert _scalars(reader, f"metrics/{metric}") == pytest.approx(expected)
        assert sorted(_scalars(reader, "metrics/score")) == list(range(TOTAL_STEPS))
        # the hyperparameter in force at the first and last step of each of its trials (a
        # member that copied a donor behind it trained some steps twice: the later wins)
        trials = sorted(
            (t for t in result.trials if t.member == member and t.status == "done"),
            key=lambda t: t.id,
        )
        for name in ("h0", "h1"):
            written = _scalars(reader, f"hparams/{name}")
            expected = {}
            for t in trials:
                expected[t.start_step] = expected[t.end_step - 1] = t.hparams[name]
            for step, value in expected.items():
                assert written[step] == pytest.approx(value)


def test_a_changing_hyperparameter_shows_as_a_curve(toy_run: Run) -> None:
    exploited = {e.member for e in toy_run.result.exploits}
    assert exploited, "the toy run exploited nothing; the test needs a schedule that changes"
    member = min(exploited)
    reader = _read(toy_run.tensorboard / f"member-{member:03d}")
    values = {round(v, 12) for v in _scalars(reader, "hparams/h0").values()}
    assert len(values) > 1


def test_exploits_are_text_at_their_step(toy_run: Run) -> None:
    result = toy_run.result
    steps = {t.id: t.start_step for t in result.trials}
    for member in range(POPULATION):
        reader = _read(toy_run.tensorboard / f"member-{member:03d}")
        expected = sorted(
            (steps[e.trial_id], f"copied member {e.donor_member} (trial {e.donor_trial})")
            for e in result.exploits
            if e.member == member and e.trial_id is not None
        )
        texts = sorted(_texts(reader, "exploit"))
        assert [step for step, _ in texts] == [step for step, _ in expected]
        for (_, text), (_, part) in zip(texts, expected, strict=True):
            assert part in text


def _session(folder: Path) -> tuple[Any, Any]:
    content = _read(folder).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]
    ).session_start_info
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]
    ).experiment
    return start, experiment


def test_each_trial_has_an_hparams_record_of_the_values_then_in_force(toy_run: Run) -> None:
    done = [t for t in toy_run.result.trials if t.status == "done"]
    for t in done:
        folder = trial_dir(toy_run.tensorboard, t.member, t.id)
        start, experiment = _session(folder)
        assert start.hparams["member"].number_value == t.member
        assert start.hparams["trial"].number_value == t.id
        assert start.hparams["start_step"].number_value == t.start_step
        for name, value in t.hparams.items():
            assert start.hparams[name].number_value == pytest.approx(value)
        assert [i.name.tag for i in experiment.metric_infos] == ["metrics/score"]
        assert _scalars(_read(folder), "metrics/score") == {t.end_step: pytest.approx(t.score)}
    # the member's last record holds its final values: they differ from its first
    # wherever it exploited
    for m in toy_run.result.members:
        assert m.trial_id is not None
        start, _ = _session(trial_dir(toy_run.tensorboard, m.member, m.trial_id))
        assert {k: start.hparams[k].number_value for k in m.hparams} == pytest.approx(m.hparams)
    members = toy_run.tensorboard / "trials"
    assert sum(1 for _ in members.glob("member-*/trial-*")) == len(done)


def _settings(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    return {
        "space": {"x": pk.Uniform(0.1, 1.0), "kind": pk.Choice(["a", "b"])},
        "metric": "score",
        "population": 2,
        "workers": 1,
        "ready_every": 3,
        "total_steps": 6,
        "executor": "thread",
        "storage": f"sqlite:///{tmp_path / 'run.db'}",
        "progress": False,
        "name": "climb",
        **kw,
    }


def test_running_again_writes_each_scalar_once(tmp_path: Path) -> None:
    pk.run(trainers.climb, **_settings(tmp_path, tensorboard=True))
    folder = tmp_path / "tensorboard" / "climb" / "member-000"
    first = _scalars(_read(folder), "metrics/score")
    pk.run(trainers.climb, **_settings(tmp_path, tensorboard=True))  # resumed: rewritten
    reader = _read(folder)
    assert len(reader.Scalars("metrics/score")) == len(first) == 6
    # a categorical hyperparameter is text, written when it changes, beside a curve of
    # its index among the domain's values
    texts = _texts(reader, "hparams/kind")
    assert texts[0][0] == 0
    result = pk.Result.load(f"sqlite:///{tmp_path / 'run.db'}", "climb")
    kinds = ["a", "b"]
    for t in (t for t in result.trials if t.member == 0):
        index = kinds.index(t.hparams["kind"])
        assert _scalars(reader, "hparams/kind")[t.start_step] == index
        assert _scalars(reader, "hparams/kind")[t.end_step - 1] == index
    first = result.trials[0].hparams["kind"]
    assert texts[0][1].startswith(f"{first} (drawn at {kinds.index(first)})")
    assert "0 = a, 1 = b" in texts[0][1]


def test_a_folder_given_or_none_at_all(tmp_path: Path) -> None:
    pk.run(trainers.climb, **_settings(tmp_path, tensorboard=tmp_path / "tb"))
    assert (tmp_path / "tb" / "climb" / "member-001").is_dir()
    assert not (tmp_path / "tensorboard").exists()
    pk.run(trainers.climb, **_settings(tmp_path, name="quiet", tensorboard=False))
    assert not (tmp_path / "tensorboard").exists()
    assert not (tmp_path / "tb" / "quiet").exists()


def test_a_logger_follows_a_run_it_did_not_start(tmp_path: Path) -> None:
    """The glass-box case: any process can tail the store, here after the fact."""
    pk.run(trainers.climb, **_settings(tmp_path, tensorboard=False))
    controller = Controller(open_store(f"sqlite:///{tmp_path / 'run.db'}"))
    with Follower(controller, "climb", [TensorBoardLogger(tmp_path / "later")]) as follower:
        assert len(follower.sync().finished) == 4  # two members, two trials each
        assert follower.sync().empty  # nothing new
    reader = _read(tmp_path / "later" / "member-001")
    assert sorted(_scalars(reader, "metrics/score")) == list(range(6))


def _wait_for(what: str, condition: Callable[[], bool]) -> None:
    """Look again until ``condition`` holds; the files change in another thread."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.05)


def test_the_files_are_written_while_the_run_goes_on(tmp_path: Path) -> None:
    run = GatedRun(f"sqlite:///{tmp_path / 'live.db'}", tmp_path / "ckpt", tensorboard=True)
    folder = tmp_path / "tensorboard" / "live"
    try:
        run.release(GatedRun.POPULATION)  # the first generation only: steps 0..4

        def first_generation_written() -> bool:
            for member in range(GatedRun.POPULATION):
                path = folder / f"member-{member:03d}"
                if not path.is_dir():
                    return False
                reader = _read(path)
                if "metrics/score" not in reader.Tags()["scalars"]:
                    return False
                if sorted(_scalars(reader, "metrics/score")) != list(range(5)):
                    return False
            return True

        _wait_for("the first generation in the event files", first_generation_written)
        # the run is held at its second generation: nothing of it can be written yet
        assert all(
            max(_scalars(_read(folder / f"member-{m:03d}"), "metrics/score")) == 4
            for m in range(GatedRun.POPULATION)
        )
    finally:
        result = run.finish()
    for m in result.members:  # when the run returns, everything is there
        reader = _read(folder / f"member-{m.member:03d}")
        assert sorted(_scalars(reader, "metrics/score")) == list(range(15))
        assert m.trial_id is not None
        trial = _read(trial_dir(folder, m.member, m.trial_id))
        assert "_hparams_/session_start_info" in trial.PluginTagToContent("hparams")


def test_without_tensorboardx_the_message_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import now fails
    with pytest.raises(pk.ConfigError, match=r"pip install 'pbtkit\[tensorboard\]'"):
        pk.run(trainers.climb, **_settings(tmp_path, tensorboard=True))
    pk.run(trainers.climb, **_settings(tmp_path, name="default"))  # default: off
    assert not (tmp_path / "tensorboard" / "default").exists()


def test_reports_show_while_their_trial_is_still_running(tmp_path: Path) -> None:
    """The store holds a running trial's reports (its heartbeats carry them); the event
    files show them before the trial ends."""
    halfway = threading.Event()
    gate = threading.Event()

    def train(trial: pk.Trial) -> None:
        value = 0.0
        if trial.parent_checkpoint is not None:
            value = float((trial.parent_checkpoint / "value").read_text())
        for step in trial.steps():
            value += trial.hparams["x"]
            trial.report(step, score=value)
            if trial.member == 0 and step == 2:
                halfway.set()
                assert gate.wait(60), "the test never let the trial go on"
        (trial.checkpoint_dir / "value").write_text(str(value))

    settings = _settings(tmp_path, lease_seconds=0.4, tensorboard=tmp_path / "tb", name="beats")
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(pk.run(train, **settings)))
    thread.start()
    folder = tmp_path / "tb" / "beats" / "member-000"
    try:
        assert halfway.wait(60)

        def first_steps_written() -> bool:
            if not folder.is_dir():
                return False
            reader = _read(folder)
            if "metrics/score" not in reader.Tags()["scalars"]:
                return False
            return sorted(_scalars(reader, "metrics/score")) == [0, 1, 2]

        _wait_for("steps 0..2 of a running trial", first_steps_written)
        store = open_store(str(settings["storage"]))
        with store.read() as tx:
            experiment = tx.get_experiment("beats")
            assert experiment is not None
            first = tx.trials(experiment.id, member=0)[0]
        store.close()
        assert first.status == "running"  # still training: the files ran ahead of its end
    finally:
        gate.set()
        thread.join(120)
    assert outcome, "the run did not end"
    assert sorted(_scalars(_read(folder), "metrics/score")) == list(range(6))
