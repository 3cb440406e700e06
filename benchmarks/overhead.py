"""Overhead of pbtkit against the training it runs (docs/benchmarks.md, item 1).

The PBT paper's toy problem: population 8, 100 steps each, ready every 10 steps (a
checkpoint and a decision each time), a metric reported every step, 2 worker processes,
truncation 25%, perturb x0.8/x1.2 with resample probability 0.25. Each configuration
runs ``--repeats`` times on a fresh SQLite file; one JSON line per configuration gives
the median wall time (start of ``run`` to result, worker start-up included), the median
efficiency (time inside the training function / (workers x wall)) and the best score.
The plain loop with no framework is printed first as the floor.

Usage: python benchmarks/overhead.py [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import pbtkit as pk
from pbtkit.examples import toy

LR = toy.LEARNING_RATE
SPACE = toy.SPACE


def train(trial: pk.Trial) -> None:
    """The toy's training function, timed so the benchmark can compute efficiency."""
    started = time.perf_counter()
    toy.train(trial)
    trial.report(trial.last_step, train_seconds=time.perf_counter() - started)


def plain_loop(population: int, steps: int) -> float:
    """The same work with no framework: the floor."""
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    for _ in range(population):
        theta = np.array([0.9, 0.9])
        h = rng.random(2)
        for _ in range(steps):
            theta = theta + LR * (-2.0 * h * theta)
            _ = float(1.2 - np.sum(theta**2))
    return time.perf_counter() - started


def one_run(
    population: int, steps: int, ready_every: int, workers: int, seed: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = pk.run(
            train,
            space=SPACE,
            metric="score",
            population=population,
            workers=workers,
            ready_every=ready_every,
            total_steps=steps,
            exploit=pk.Truncation(0.25),
            explore=pk.Perturb((0.8, 1.2), resample_probability=0.25),
            storage=f"sqlite:///{Path(tmp) / 'pbt.db'}",
            checkpoint_dir=Path(tmp) / "ckpt",
            name="overhead",
            seed=seed,
            progress=False,
        )
        wall = time.perf_counter() - started
        inside = sum(
            value for curve in result.curves("train_seconds").values() for _, value in curve
        )
        trials = sum(t.status == "done" for t in result.trials)
        return {
            "wall_s": wall,
            "efficiency": inside / (workers * wall),
            "best_score": result.best.score,
            "trials": trials,
            "exploits": len(result.exploits),
        }


def measure(
    name: str, population: int, steps: int, ready_every: int, workers: int, repeats: int
) -> None:
    runs = [one_run(population, steps, ready_every, workers, seed) for seed in range(repeats)]
    wall = statistics.median(r["wall_s"] for r in runs)
    trials = runs[0]["trials"]
    line = {
        "benchmark": name,
        "population": population,
        "steps": steps,
        "ready_every": ready_every,
        "workers": workers,
        "repeats": repeats,
        "wall_s": round(wall, 3),
        "wall_s_min": round(min(r["wall_s"] for r in runs), 3),
        "efficiency": round(statistics.median(r["efficiency"] for r in runs), 4),
        "best_score": round(statistics.median(r["best_score"] for r in runs), 4),
        "trials": trials,
        "ms_per_trial": round(1000 * wall * workers / trials, 2),
        "exploits_median": statistics.median(r["exploits"] for r in runs),
    }
    print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="skip the population of 1,000")
    args = parser.parse_args()
    floor = statistics.median(plain_loop(8, 100) for _ in range(args.repeats))
    print(
        json.dumps(
            {"benchmark": "plain_loop", "population": 8, "steps": 100, "wall_s": round(floor, 5)}
        )
    )
    measure("toy_pop8", 8, 100, 10, 2, args.repeats)
    measure("toy_pop64", 64, 50, 10, 2, max(1, args.repeats // 2))
    if not args.quick:
        measure("toy_pop1000", 1000, 20, 10, 2, 1)


if __name__ == "__main__":
    main()
