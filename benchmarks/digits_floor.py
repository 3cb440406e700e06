"""The digits example against the same training with no framework, whole process.

``pbtkit.examples.digits`` as a user runs it (``digits.main``: 8 members x 16 epochs,
ready every 2, 2 worker processes, SQLite, its defaults) against the floor: the same
members trained by 2 plain processes with no PBT (each process loads the data and trains
its 4 members for 16 epochs with the example's own ``epoch`` function, measuring
validation and test accuracy every 2 epochs as each trial does; no store, no checkpoints,
no decisions). Both are timed from outside, from the start of the command to its exit,
interleaved repeat by repeat (which goes first alternates), so both see the same load.

An asynchronous PBT run can train more epochs than 8 x 16: a member that copies a donor
continues from the donor's step, and may train again epochs that the donor already had.
Each pbtkit line gives ``epochs`` (what it trained); the summary's ``ratio_median`` is the
plain ratio of medians, and ``ratio_equal_work`` divides each pbtkit run by its paired
floor scaled to the epochs it trained when they are more than 8 x 16 (the whole floor is
scaled, start-up included: a little in pbtkit's favour).

The floor's processes import ``pbtkit.examples.digits`` for its functions, so they pay
``import pbtkit`` (about 0.1 s) too, a little in pbtkit's favour.

Usage: python benchmarks/digits_floor.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from torch_examples import timed_child  # benchmarks/ is this script's folder

ROOT = Path(__file__).resolve().parent.parent
MEMBERS, EPOCHS, READY_EVERY, WORKERS = 8, 16, 2, 2

#: One run of the example in a fresh directory; prints the epochs it trained.
PBTKIT_RUN = """
import json, sys
from pbtkit.examples import digits
result = digits.main(sys.argv[1], progress=False)
epochs = sum(t.end_step - t.start_step for t in result.trials if t.status == "done")
print(json.dumps({"epochs": epochs, "test_accuracy": result.best.metrics["test_accuracy"]}))
"""


def floor_worker(index: int) -> None:
    """Train members ``index``, ``index + WORKERS``, ... as the example's trials would."""
    import numpy as np

    from pbtkit.examples import digits

    x_train, y_train, x_val, y_val, x_test, y_test = digits.load_data()
    hp = {"lr": 0.05, "momentum": 0.9, "l2": 1e-4}
    for member in range(index, MEMBERS, WORKERS):
        params = digits.init_params(np.random.default_rng(member))
        for step in range(EPOCHS):
            digits.epoch(params, x_train, y_train, hp, np.random.default_rng([member, step]))
            if (step + 1) % READY_EVERY == 0:
                digits.accuracy(params, x_val, y_val)
                digits.accuracy(params, x_test, y_test)


def floor() -> None:
    """The floor: ``WORKERS`` plain processes, started at once, waited for."""
    procs = [
        subprocess.Popen([sys.executable, __file__, "--floor-worker", str(i)])
        for i in range(WORKERS)
    ]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"a floor process failed with exit code {proc.returncode}")
    print(json.dumps({"epochs": MEMBERS * EPOCHS}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--floor-worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_worker is not None:
        floor_worker(args.floor_worker)
        return
    if args.floor:
        floor()
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    rows: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        modes = ["pbtkit", "floor"] if repeat % 2 == 0 else ["floor", "pbtkit"]
        for mode in modes:
            with tempfile.TemporaryDirectory() as directory:
                if mode == "pbtkit":
                    command = [sys.executable, "-c", PBTKIT_RUN, directory]
                else:
                    command = [sys.executable, __file__, "--floor"]
                figures = timed_child(command, env)
            row = {"benchmark": "digits_floor", "mode": mode, "repeat": repeat, **figures}
            rows.append(row)
            print(json.dumps(row), flush=True)
    floors = [r["process_s"] for r in rows if r["mode"] == "floor"]
    runs = [r for r in rows if r["mode"] == "pbtkit"]
    floor_s = statistics.median(floors)
    summary: dict[str, Any] = {
        "benchmark": "digits_floor",
        "summary": True,
        "floor_s_median": floor_s,
        "pbtkit_s_median": statistics.median(r["process_s"] for r in runs),
        "epochs_median": statistics.median(r["epochs"] for r in runs),
        "ratio_median": round(statistics.median(r["process_s"] for r in runs) / floor_s, 3),
    }
    # Equal work: pbtkit's wall against the floor for the epochs it trained, pair by pair.
    pairs = []
    for run, floor_run in zip(runs, (r for r in rows if r["mode"] == "floor"), strict=True):
        scaled = floor_run["process_s"] * run["epochs"] / (MEMBERS * EPOCHS)
        pairs.append(run["process_s"] / max(scaled, floor_run["process_s"]))
    summary["ratio_equal_work_per_pair"] = [round(p, 3) for p in pairs]
    summary["ratio_equal_work_median"] = round(statistics.median(pairs), 3)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
