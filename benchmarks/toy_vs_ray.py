"""The pop-8 toy, pbtkit against Ray Tune 2.60, whole process, side by side (docs/benchmarks.md).

Each run is a separate process timed from outside (start of the command to its exit,
imports, worker start-up and shut-down included), as a user waits for it: pbtkit runs
``pbtkit.examples.toy`` (population 8, 100 steps, ready every 10, a report every step, 2
worker processes, truncation 25%, perturb x0.8/x1.2, resample probability 0.25, SQLite);
Ray runs ``benchmarks/ray_toy.py`` with the same task and settings in its own environment.
Seeds alternate, pbtkit then Ray, so both see the same load. pbtkit runs ``--seeds``
seeds (the quality figure), Ray the first ``--ray-seeds`` of them.

Prints one JSON line per run, then a summary: best true Q (median, min, max) of each, the
whole-process wall medians and the median of the per-seed ratios Ray / pbtkit.

Usage: python benchmarks/toy_vs_ray.py --ray-python /path/to/ray-venv/bin/python
       [--seeds 10] [--ray-seeds 3] [--evolution async|generational]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: One pbtkit run of the toy in a fresh directory; prints the best member's true Q.
PBTKIT_RUN = """
import json, sys
from pbtkit.examples import toy
result = toy.main(sys.argv[1], progress=False, seed=int(sys.argv[2]), evolution=sys.argv[3])
print(json.dumps({"best_score": result.best.score}))
"""


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            data: dict[str, Any] = json.loads(line)
            return data
    raise RuntimeError(f"no JSON line in the output: {text[-2000:]}")


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command[:2]} failed ({done.returncode}): {done.stderr[-3000:]}")
    return wall, _last_json(done.stdout)


def pbtkit_run(seed: int, evolution: str, env: dict[str, str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-c", PBTKIT_RUN, tmp, str(seed), evolution]
        wall, out = _timed(command, env)
    return {
        "benchmark": "pbtkit_toy_pop8",
        "evolution": evolution,
        "seed": seed,
        "wall_s": round(wall, 3),
        **out,
    }


def ray_run(python: str, seed: int, env: dict[str, str]) -> dict[str, Any]:
    wall, out = _timed([python, str(HERE / "ray_toy.py"), "--seed", str(seed)], env)
    return {**out, "wall_s": round(wall, 3)}


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray-python", help="the Python of a Ray Tune venv")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--ray-seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--evolution", choices=("async", "generational"), default="async")
    args = parser.parse_args()
    if args.ray_seeds and not args.ray_python:
        parser.error("--ray-python is needed unless --ray-seeds 0")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        ours.append(pbtkit_run(seed, args.evolution, env))
        print(json.dumps(ours[-1]), flush=True)
        if seed - args.first_seed < args.ray_seeds:
            theirs.append(ray_run(args.ray_python, seed, env))
            print(json.dumps(theirs[-1]), flush=True)
    paired = {r["seed"]: r["wall_s"] for r in ours}
    ratios = [r["wall_s"] / paired[r["seed"]] for r in theirs]
    summary: dict[str, Any] = {
        "benchmark": "toy_pop8_pbtkit_vs_ray",
        "evolution": args.evolution,
        "pbtkit_seeds": len(ours),
        "ray_seeds": len(theirs),
        "pbtkit_best_q": _spread([r["best_score"] for r in ours]),
        "pbtkit_wall_s": _spread([r["wall_s"] for r in ours]),
    }
    if theirs:
        summary["ray_best_q"] = _spread([r["best_score"] for r in theirs])
        summary["ray_wall_s"] = _spread([r["wall_s"] for r in theirs])
        summary["pbtkit_wall_s_paired"] = _spread([paired[r["seed"]] for r in theirs])
        summary["ratio_ray_over_pbtkit"] = _spread(ratios)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
