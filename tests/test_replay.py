"""Training replay: a finished run's schedule, replayed, reproduces it step for step.

The runs are real: a SQLite file, two worker processes, checkpoints on disk. The trainer
(``tests.trainers.climb``) adds ``x`` to a value once per step, so a replay that follows
the right hyperparameters from the right checkpoints ends at the original score exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import pbtkit as pk
from pbtkit.cli import main
from pbtkit.replay import load_schedule
from pbtkit.store import TrialRecord, open_store
from tests import trainers

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Run:
    storage: str
    result: dict[str, pk.Result]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One generational and one asynchronous experiment in one database."""
    root = tmp_path_factory.mktemp("replay")
    storage = f"sqlite:///{root / 'pbt.db'}"
    results = {}
    for evolution in ("generational", "async"):
        results[evolution] = pk.run(
            trainers.climb,
            space={"x": pk.Uniform(0.1, 1.0)},
            metric="score",
            population=6,
            workers=2,
            ready_every=5,
            total_steps=20,
            storage=storage,
            checkpoint_dir=root / "ckpt",
            exploit=pk.Truncation(0.25),
            evolution=evolution,
            executor="process",
            progress=False,
            name=evolution,
        )
        assert results[evolution].exploits, "the test needs a run with exploits"
    return Run(storage, results)


def _lineage(storage: str, experiment: str, trial_id: int) -> list[TrialRecord]:
    """The trials behind ``trial_id``, root first, read straight from the store."""
    with open_store(storage) as store, store.read() as tx:
        trials = {t.id: t for t in tx.trials(tx.get_experiment(experiment).id)}  # type: ignore[union-attr]
    chain = [trials[trial_id]]
    while chain[-1].parent_id is not None:
        chain.append(trials[chain[-1].parent_id])
    return chain[::-1]


def _original_hparams(
    storage: str, experiment: str, trial_id: int, *, same_steps: bool
) -> dict[int, dict[str, Any]]:
    """The hyperparameters in force at each step the weights of ``trial_id`` trained."""
    steps: dict[int, dict[str, Any]] = {}
    for trial in _lineage(storage, experiment, trial_id):
        if same_steps:
            # generational: every trial starts where its parent's checkpoint ended
            assert trial.start_step == len(steps)
        for _ in range(trial.start_step, trial.end_step):
            steps[len(steps)] = dict(trial.hparams)
    return steps


class Recorder:
    """A training function that notes what it was given, then climbs."""

    def __init__(self) -> None:
        self.steps: dict[int, dict[str, Any]] = {}
        self.calls: list[tuple[int, int, bool, Path | None]] = []

    def __call__(self, trial: pk.Trial) -> None:
        self.calls.append((trial.start_step, trial.end_step, trial.replay, trial.parent_checkpoint))
        for step in trial.steps():
            assert step not in self.steps, f"step {step} trained twice"
            self.steps[step] = dict(trial.hparams)
        trainers.climb(trial)


@pytest.mark.parametrize("evolution", ["generational", "async"])
def test_a_replayed_schedule_reproduces_the_hyperparameters_at_each_step(
    run: Run, evolution: str, tmp_path: Path
) -> None:
    result = run.result[evolution]
    crossed = False
    for member in [None, *(m.member for m in result.members)]:
        target = result.best if member is None else result.members[member]
        assert target.trial_id is not None
        schedule = pk.replay_schedule(run.storage, evolution, member=member)
        # through JSON and back, as the CLI hands it over
        schedule = pk.Schedule.from_dict(json.loads(json.dumps(schedule.to_dict())))
        recorder = Recorder()
        replayed = pk.replay(recorder, schedule, checkpoint_dir=tmp_path / f"m{member}")

        original = _original_hparams(
            run.storage, evolution, target.trial_id, same_steps=evolution == "generational"
        )
        assert recorder.steps == original
        assert replayed.hparams == original
        # same weights too: the value climbed by the same x at the same steps
        assert replayed.metrics["score"] == target.score
        assert all(replay for _, _, replay, _ in recorder.calls)
        lineage = _lineage(run.storage, evolution, target.trial_id)
        crossed |= len({t.member for t in lineage}) > 1
        # one call per recorded trial, each warm-started from the call before it (no
        # exploits): climb reports which trial wrote the checkpoint it loaded
        assert [(t.end_step - t.start_step, t.trial_id) for t in replayed.trials] == [
            (t.end_step - t.start_step, t.id) for t in lineage
        ]
        loaded = [t.reports[0].metrics["loaded_trial"] for t in replayed.trials]
        assert loaded == [-1, *(t.trial_id for t in replayed.trials[:-1])]
    assert crossed, "no member's lineage crossed an exploit"


def test_a_stretch_of_the_schedule_replays_from_a_checkpoint(run: Run, tmp_path: Path) -> None:
    schedule = pk.replay_schedule(run.storage, "async")
    whole = pk.replay(trainers.climb, schedule, checkpoint_dir=tmp_path / "whole")
    # only the final checkpoint is left by default
    assert [p.name for p in (tmp_path / "whole" / "replay-async").iterdir()] == [
        Path(str(whole.checkpoint)).name
    ]

    # 0..7 then 7..20, cut inside a trial, ends where the whole replay does
    first = pk.replay(
        trainers.climb,
        schedule,
        checkpoint_dir=tmp_path / "first",
        end_step=7,
        keep_checkpoints=True,
    )
    assert [(t.start_step, t.end_step) for t in first.trials] == [(0, 5), (5, 7)]
    assert all(t.checkpoint is not None for t in first.trials)
    recorder = Recorder()
    rest = pk.replay(
        recorder,
        schedule,
        checkpoint_dir=tmp_path / "rest",
        start_step=7,
        start_checkpoint=first.checkpoint,
    )
    assert recorder.calls[0][:2] == (7, 10)
    assert recorder.calls[0][3] == first.checkpoint
    assert rest.start_step == 7
    assert {**first.hparams, **rest.hparams} == whole.hparams
    assert rest.metrics["score"] == whole.metrics["score"]
    steps = [(r.step, r.metrics["score"]) for r in rest.reports if "score" in r.metrics]
    assert (
        steps == [(r.step, r.metrics["score"]) for r in whole.reports if "score" in r.metrics][7:]
    )


def test_extra_hyperparameters_reach_every_call(run: Run, tmp_path: Path) -> None:
    recorder = Recorder()
    schedule = pk.replay_schedule(run.storage, "generational")
    pk.replay(
        recorder,
        schedule,
        checkpoint_dir=tmp_path,
        start_step=0,
        end_step=10,
        extra_hparams={"data": "train+val"},
    )
    assert sorted(recorder.steps) == list(range(10))
    assert all(
        hp == {**schedule.at(step), "data": "train+val"} for step, hp in recorder.steps.items()
    )


def test_the_schedule_json_names_its_source(run: Run) -> None:
    result = run.result["generational"]
    data = pk.replay_schedule(run.storage, "generational").to_dict()
    assert data["experiment"] == "generational"
    assert data["metric"] == "score"
    assert data["trial_id"] == result.best.trial_id
    assert data["member"] == result.best.member
    assert (data["start_step"], data["end_step"]) == (0, 20)
    assert [t["trial_id"] for t in data["trials"]] == [
        t.id for t in _lineage(run.storage, "generational", data["trial_id"])
    ]
    for segment in data["segments"]:
        assert set(segment) == {"start_step", "end_step", "member", "trial_id", "hparams"}
    # any trial's lineage, not only a member's latest
    first = data["trials"][1]["trial_id"]
    early = pk.replay_schedule(run.storage, "generational", trial=first)
    assert (early.end_step, early.trials[-1].trial_id) == (10, first)


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["replay", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_writes_the_schedule_and_trains_along_it(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--storage", run.storage, "--experiment", "async"]
    expected = pk.replay_schedule(run.storage, "async").to_dict()

    code, out, _ = _cli(where, capsys)
    assert code == 0
    assert json.loads(out) == expected

    saved = tmp_path / "schedule.json"
    code, out, _ = _cli([*where, "--out", str(saved)], capsys)
    assert code == 0
    assert f"to {saved}" in out
    assert json.loads(saved.read_text()) == expected
    assert load_schedule(saved).to_dict() == expected

    train = ["--train", "tests.trainers:climb", "--checkpoint-dir", str(tmp_path / "ckpt")]
    code, out, _ = _cli([*where, *train], capsys)
    assert code == 0, out
    best = run.result["async"].best
    assert "replayed steps 0..20 of the schedule of experiment 'async'" in out
    assert f"score={best.score:.6g}" in out

    code, out, _ = _cli(["--schedule", str(saved), *train, "--steps", ":10"], capsys)
    assert code == 0, out
    assert "replayed steps 0..10" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--experiment", "nope"], "no experiment named 'nope'"),
        (["--experiment", "nope"], "known: generational, async"),
        (["--experiment", "async", "--member", "9"], "no member 9; the population has 6"),
        (["--experiment", "async", "--trial", "99999"], "has no finished trial 99999"),
        (
            ["--experiment", "async", "--train", "tests.trainers:climb"],
            "--train needs --checkpoint-dir",
        ),
        (["--experiment", "async", "--steps", "0:5"], "need --train"),
        (["--member", "1"], "name the experiment with --experiment NAME"),
    ],
)
def test_cli_errors_say_what_is_wrong(
    run: Run, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli(["--storage", run.storage, *args], capsys)
    assert code == 2
    assert message in err


def test_cli_errors_about_files_and_steps(
    run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.db"
    code, _, err = _cli(["--storage", f"sqlite:///{missing}", "--experiment", "a"], capsys)
    assert code == 2
    assert f"no database at {missing}" in err
    assert not missing.exists()

    train = ["--train", "tests.trainers:climb", "--checkpoint-dir", str(tmp_path / "ckpt")]

    def segment(start: Any, end: int) -> dict[str, Any]:
        return {"start_step": start, "end_step": end, "member": 0, "trial_id": 1, "hparams": {}}

    broken = {
        "not valid JSON": "{not json",
        "'segments' list": "[1, 2]",
        "is missing hparams": json.dumps(
            {"segments": [{"start_step": 0, "end_step": 5, "member": 0, "trial_id": 1}]}
        ),
        "start_step must be an integer, got '0'": json.dumps({"segments": [segment("0", 5)]}),
        "must follow each other": json.dumps({"segments": [segment(0, 5), segment(6, 9)]}),
    }
    for message, text in broken.items():
        path = tmp_path / "bad.json"
        path.write_text(text)
        code, _, err = _cli(["--schedule", str(path), *train], capsys)
        assert code == 2
        assert "bad.json is not a pbtkit schedule" in err
        assert message in err

    saved = tmp_path / "schedule.json"
    assert _cli(["--storage", run.storage, "-e", "async", "--out", str(saved)], capsys)[0] == 0
    for steps, message in [
        ("0:99", "which covers steps [0, 20)"),
        ("12:8", "not a non-empty range"),
        ("x:y", "--steps wants A:B"),
        ("10:", "needs the weights at step 10: pass start_checkpoint (--start-checkpoint DIR)"),
    ]:
        code, _, err = _cli(["--schedule", str(saved), *train, "--steps", steps], capsys)
        assert (code, message in err) == (2, True), err
