"""Training functions for the engine tests; module-level so worker processes can import them.

Each keeps a tiny "model" (a few numbers) in ``state.json`` so tests can check exactly
which checkpoint a trial started from.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from pathlib import Path

import pbtkit as pk


def _load(trial: pk.Trial) -> dict[str, float]:
    if trial.parent_checkpoint is None:
        return {"value": 0.0, "written_by_trial": -1, "written_by_member": -1}
    data: dict[str, float] = json.loads((trial.parent_checkpoint / "state.json").read_text())
    return data


def _save(trial: pk.Trial, state: dict[str, float]) -> None:
    state = {**state, "written_by_trial": trial.trial_id, "written_by_member": trial.member}
    (trial.checkpoint_dir / "state.json").write_text(json.dumps(state))


def climb(trial: pk.Trial) -> None:
    """value grows by x per step; the score is value. Reports which checkpoint it loaded."""
    state = _load(trial)
    trial.report(
        trial.start_step,
        loaded_trial=state["written_by_trial"],
        loaded_member=state["written_by_member"],
        loaded_value=state["value"],
    )
    delay = float(os.environ.get("PBTKIT_TEST_STEP_DELAY", "0"))
    for step in trial.steps():
        state["value"] += trial.hparams["x"]
        if delay:
            time.sleep(delay)
        trial.report(step, score=state["value"])
    _save(trial, state)
    log = os.environ.get("PBTKIT_TEST_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{trial.trial_id} {os.getpid()}\n")


def climb_or_crash(trial: pk.Trial) -> None:
    """Like climb, but member 1 always raises."""
    if trial.member == 1:
        raise RuntimeError("member 1 always breaks")
    climb(trial)


def always_crash(trial: pk.Trial) -> None:
    """Every trial raises."""
    raise ValueError(f"broken trial {trial.trial_id}")


def nan_member(trial: pk.Trial) -> None:
    """Member 0 reports NaN; the others climb."""
    if trial.member == 0:
        for step in trial.steps():
            trial.report(step, score=math.nan)
        _save(trial, {"value": math.nan})
        return
    climb(trial)


def typo(trial: pk.Trial) -> None:
    """Reports 'scor' instead of 'score'."""
    for step in trial.steps():
        trial.report(step, scor=1.0)


def saves_nothing(trial: pk.Trial) -> None:
    """A stateless trainer: reports but writes no checkpoint."""
    for step in trial.steps():
        trial.report(step, score=trial.hparams["x"] * (step + 1))


def write_marker(path: Path, text: str) -> None:
    """Append a line to a file (used by tests that count executions)."""
    with path.open("a") as f:
        f.write(text + "\n")


def explore_to_top(
    hparams: dict[str, float], space: pk.SearchSpace, rng: object
) -> dict[str, float]:
    """A user's explore function: always jump to the top of x's range."""
    return {**hparams, "x": 1.0}


def explore_out_of_space(
    hparams: dict[str, float], space: pk.SearchSpace, rng: object
) -> dict[str, float]:
    """A broken explore function: leaves the space."""
    return {**hparams, "x": 7.0}


def reports_text(trial: pk.Trial) -> None:
    """Reports a string as a metric."""
    trial.report(trial.start_step, score="high")  # type: ignore[arg-type]


def reports_outside(trial: pk.Trial) -> None:
    """Reports a step that is not this trial's."""
    trial.report(trial.end_step + 5, score=1.0)


#: Made when this module is imported: a process that replaced itself has a new one.
PROCESS_TOKEN = uuid.uuid4().hex[:12]


def hangs_once(trial: pk.Trial) -> None:
    """Member 0's first trial hangs on its first attempt (a stuck data loader, say); every
    other trial climbs. Logs ``trial attempt pid token`` to $PBTKIT_TEST_LOG."""
    log = os.environ.get("PBTKIT_TEST_LOG")
    if log:
        write_marker(Path(log), f"{trial.trial_id} {trial.attempt} {os.getpid()} {PROCESS_TOKEN}")
    if trial.member == 0 and trial.generation == 0 and trial.attempt == 1:
        time.sleep(float(os.environ.get("PBTKIT_TEST_HANG", "3600")))
    climb_quietly(trial)


def climb_quietly(trial: pk.Trial) -> None:
    """climb without its log line."""
    state = _load(trial)
    for step in trial.steps():
        state["value"] += trial.hparams["x"]
        trial.report(step, score=state["value"])
    _save(trial, state)


def sabotage_donor(trial: pk.Trial) -> None:
    """climb; the first trial of generation 1 to run also breaks the generation-0
    checkpoint of member 3 (trial 4), as $PBTKIT_TEST_SABOTAGE says: "delete" it or
    "corrupt" its file. Member 3 is the best, so it is the donor of the worst member."""
    climb_quietly(trial)
    how = os.environ.get("PBTKIT_TEST_SABOTAGE", "")
    root = trial.checkpoint_dir.parent.parent  # <root>/.staging/<this trial's folder>
    done = root / "sabotaged"
    if trial.generation != 1 or not how or done.exists():
        return
    done.write_text(f"by trial {trial.trial_id} of member {trial.member}")
    target = next(root.glob("*/trial-000004"))
    if how == "delete":
        import shutil

        shutil.rmtree(target)
    else:
        (target / "state.json").write_text('{"value": 1e9}')


def echo_metrics(trial: pk.Trial) -> None:
    """Reports its hyperparameters ``acc`` and ``ms`` as metrics (a fixed trade-off)."""
    for step in trial.steps():
        trial.report(step, acc=trial.hparams["acc"], ms=trial.hparams["ms"])
