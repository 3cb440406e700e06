"""Training functions for the Ray tests; module-level so Ray's worker processes import them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pbtkit as pk
from tests import trainers


def holding_marker() -> Path:
    """Where a stalled trial writes its id: ``holding`` beside ``$PBTKIT_TEST_LOG``."""
    return Path(os.environ["PBTKIT_TEST_LOG"]).with_name("holding")


def climb_until_killed(trial: pk.Trial) -> None:
    """climb; but member 0's second trial, the first time it runs, waits for its worker to die.

    It writes its trial id into :func:`holding_marker` first, so a test knows which trial
    the worker holds. Run again (the marker is there) it climbs like any other. (Not by
    attempt number: losing a Ray worker does not use up an attempt.)
    """
    if trial.member == 0 and trial.generation == 1 and not holding_marker().exists():
        holding_marker().write_text(str(trial.trial_id))
        time.sleep(60)  # a long trial: the test kills this worker in the middle of it
        raise RuntimeError("nobody killed the worker holding this trial")
    trainers.climb(trial)
