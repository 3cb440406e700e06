"""A training target whose import is slow in the process that runs ``pbtkit.run`` (the
tests of start-up order): each import is logged with its process and times."""

from __future__ import annotations

import json
import os
import time

import pbtkit as pk

_LOG = os.environ.get("PBTKIT_TEST_IMPORT_LOG")
if _LOG:
    _driver = os.environ.get("PBTKIT_TEST_DRIVER_PID") == str(os.getpid())
    _started = time.time()
    if _driver:
        time.sleep(2.5)  # a heavy import (torch takes about this long)
    with open(_LOG, "a", encoding="utf-8") as _log:
        _log.write(json.dumps({"driver": _driver, "start": _started, "end": time.time()}) + "\n")


def train(trial: pk.Trial) -> None:
    """Reports its step as the score."""
    for step in trial.steps():
        trial.report(step, score=float(step))
