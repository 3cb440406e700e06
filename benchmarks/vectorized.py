"""A population in one process (pbtkit.torch.vectorized) against a process per member.

The task of :mod:`pbtkit.examples.vectorized_digits`: a digits MLP (64 -> 64 -> 10),
minibatches of 64, SGD with each member's learning rate, momentum and weight decay, and a
label-smoothing weight in the loss; ready every ``--ready-every`` steps, truncation 25%,
SQLite store. For each population size and repeat, side by side in one run:

- ``vectorized``: :func:`pbtkit.torch.vectorized.run`, every member in one process as one
  computation, with as many torch threads as the process path has workers;
- ``process``: :func:`pbtkit.run` with ``executor="process"`` and ``--workers`` worker
  processes (one torch thread each), the same task one member at a time
  (``vectorized_digits.train``, the same data, loss and optimizer arithmetic);
- ``plain``: the floor, one member trained for the same steps in a bare loop, times the
  population (no PBT, no checkpoints, one core).

Each run is a child process, timed from outside (``process_s``: imports and worker
start-up included) and inside (``wall_s``: the call that runs PBT). ``throughput`` is
members x steps per second of ``wall_s``. One JSON line per run, then one per population
with the medians and ``speedup`` = median vectorized throughput / median process
throughput (and the same from outside).

Usage: python benchmarks/vectorized.py [--populations 8,32,128] [--repeats 3]
       [--steps 200] [--ready-every 50] [--workers 2]
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

ROOT = Path(__file__).resolve().parents[1]


def child(mode: str, population: int, steps: int, ready_every: int, workers: int) -> dict[str, Any]:
    """One run in this process; its figures."""
    import torch

    import pbtkit as pk
    from pbtkit.examples import vectorized_digits as vd

    vd._tensors()  # the data is loaded before the clock starts, in every mode
    settings = {
        **vd.SETTINGS,
        "population": population,
        "total_steps": steps,
        "ready_every": ready_every,
        "progress": False,
    }
    with tempfile.TemporaryDirectory() as directory:
        settings["storage"] = f"sqlite:///{Path(directory) / 'pbt.db'}"
        settings["checkpoint_dir"] = Path(directory) / "checkpoints"
        started = time.perf_counter()
        if mode == "plain":
            torch.set_num_threads(1)
            model = vd.mlp()
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
            hp = {"smoothing": torch.tensor(0.1)}
            for step in range(steps):
                opt.zero_grad(set_to_none=True)
                torch.autograd.backward(vd.loss(model, vd.data(step), hp))
                opt.step()
            wall = (time.perf_counter() - started) * population
            best = float("nan")
        elif mode == "vectorized":
            torch.set_num_threads(workers)
            import pbtkit.torch.vectorized as pv

            del settings["progress"]
            result = pv.run(vd.TRAINER, **settings)
            wall = time.perf_counter() - started
            best = result.best.metrics["accuracy"]
        else:
            result = pk.run(
                "pbtkit.examples.vectorized_digits:train",
                executor="process",
                workers=workers,
                **settings,
            )
            wall = time.perf_counter() - started
            best = result.best.metrics["accuracy"]
    return {"wall_s": wall, "best_accuracy": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--populations", default="8,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--ready-every", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--population", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        figures = child(args.child, args.population, args.steps, args.ready_every, args.workers)
        print(json.dumps(figures))
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.setdefault("OMP_NUM_THREADS", str(args.workers))
    for population in (int(p) for p in args.populations.split(",")):
        runs: dict[str, list[dict[str, Any]]] = {"vectorized": [], "process": [], "plain": []}
        for repeat in range(args.repeats):
            order = ["vectorized", "process", "plain"]
            if repeat % 2:
                order = order[::-1]  # neither mode always runs first on a drifting machine
            for mode in order:
                started = time.perf_counter()
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        mode,
                        "--population",
                        str(population),
                        "--steps",
                        str(args.steps),
                        "--ready-every",
                        str(args.ready_every),
                        "--workers",
                        str(args.workers),
                    ],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                figures = json.loads(out.stdout.strip().splitlines()[-1])
                figures["process_s"] = time.perf_counter() - started
                work = population * args.steps
                line = {
                    "population": population,
                    "mode": mode,
                    "repeat": repeat,
                    "steps": args.steps,
                    "ready_every": args.ready_every,
                    "workers": args.workers,
                    **figures,
                    "throughput": work / figures["wall_s"],
                    # The floor trains one member and scales its time: no outside figure.
                    "throughput_outside": None if mode == "plain" else work / figures["process_s"],
                }
                runs[mode].append(line)
                print(json.dumps(line), flush=True)
        summary: dict[str, Any] = {"population": population, "summary": True}
        for mode, lines in runs.items():
            for key in ("wall_s", "process_s", "throughput", "throughput_outside"):
                if mode != "plain" or key in ("wall_s", "throughput"):
                    summary[f"{mode}_{key}_median"] = statistics.median(x[key] for x in lines)
        summary["speedup_per_repeat"] = [
            v["throughput"] / p["throughput"]
            for v, p in zip(runs["vectorized"], runs["process"], strict=True)
        ]
        summary["speedup"] = (
            summary["vectorized_throughput_median"] / summary["process_throughput_median"]
        )
        summary["speedup_outside"] = (
            summary["vectorized_throughput_outside_median"]
            / summary["process_throughput_outside_median"]
        )
        summary["vectorized_vs_plain"] = (
            summary["vectorized_throughput_median"] / summary["plain_throughput_median"]
        )
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
