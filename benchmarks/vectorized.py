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
- ``plain``: the floor, every member trained for the same steps one after another in a
  bare loop (no PBT, no checkpoints, one core, one process).

Each run is a child process, timed from outside (``process_s``: imports and worker
start-up included) and inside (``wall_s``: the call that runs PBT). ``throughput`` is
members x steps per second of ``wall_s``. One JSON line per run, then one per population
with the medians and ``speedup`` = median vectorized throughput / median process
throughput (and the same from outside). ``--task gan``: the same on
:mod:`pbtkit.examples.vectorized_gan` (a step is a discriminator and a generator update,
each with its own Adam; the floor does the same with two ``torch.optim.Adam``).

``--versus-random N``: instead, BENCHMARKS.md section 3 on the vectorized path, the
quality question asked of the process path in ``torch_examples.py``: the example as it is
(:data:`~pbtkit.examples.vectorized_digits.SETTINGS`: 32 members x 400 steps unless
``--population``/``--steps`` say otherwise) with PBT (the example's exploit, ``Perturb()``)
against random search (``NoExploit(explore=False)``, ``Keep()``: the same members,
initial hyperparameters and steps, no exploits), on paired seeds ``--first-seed`` ..
``+N-1`` (seed ``s`` fixes the initial hyperparameters of both; a member's initial weights
and the data order do not depend on it). The winner is the member with the best
validation accuracy; the result is its test accuracy. One JSON line per run, then one
summary line: mean, std, median, paired difference, wins/ties/losses, Wilcoxon p. With
``--task gan`` the same on :mod:`pbtkit.examples.vectorized_gan` (32 members x 1,000
iterations, binary tournament): the winner has the best MMD, the result is its test MMD
(a fresh draw of 1,000 points, lower is better).

Usage: python benchmarks/vectorized.py [--populations 8,32,128] [--repeats 3]
       [--steps 200] [--ready-every 50] [--workers 2] [--task digits|gan]
       python benchmarks/vectorized.py --versus-random 10 [--first-seed 0] [--task gan]
       python benchmarks/vectorized.py --summarise FILE...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from torch_examples import timed_child  # benchmarks/ is this script's folder

ROOT = Path(__file__).resolve().parents[1]


def child(
    mode: str, population: int, steps: int, ready_every: int, workers: int, task: str = "digits"
) -> dict[str, Any]:
    """One run in this process; its figures."""
    import torch

    import pbtkit as pk
    from pbtkit.examples import vectorized_digits as vd
    from pbtkit.examples import vectorized_gan as vg

    example: Any = vd if task == "digits" else vg
    metric = "accuracy" if task == "digits" else "mmd"
    if task == "digits":
        vd._tensors()  # the data is loaded before the clock starts, in every mode
    settings = {
        **example.SETTINGS,
        "population": population,
        "total_steps": steps,
        "ready_every": ready_every,
        "progress": False,
    }
    with tempfile.TemporaryDirectory() as directory:
        settings["storage"] = f"sqlite:///{Path(directory) / 'pbt.db'}"
        settings["checkpoint_dir"] = Path(directory) / "checkpoints"
        started = time.perf_counter()
        if mode == "plain" and task == "digits":
            torch.set_num_threads(1)
            hp = {"smoothing": torch.tensor(0.1)}
            for _ in range(population):
                model = vd.mlp()
                opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
                for step in range(steps):
                    opt.zero_grad(set_to_none=True)
                    torch.autograd.backward(vd.loss(model, vd.data(step), hp))
                    opt.step()
            wall = time.perf_counter() - started
            best = float("nan")
        elif mode == "plain":  # the GAN: a D step, then a G step, each its own Adam
            torch.set_num_threads(1)
            for _ in range(population):
                nets = vg.networks()
                opts = {
                    n: torch.optim.Adam(nets[n].parameters(), lr=1e-3, betas=(0.5, 0.999))
                    for n in ("D", "G")
                }
                for step in range(steps):
                    batch = vg.data(step)
                    for n, loss in (("D", vg.d_loss), ("G", vg.g_loss)):
                        opts[n].zero_grad(set_to_none=True)
                        torch.autograd.backward(loss(nets, batch, {}))
                        opts[n].step()
            wall = time.perf_counter() - started
            best = float("nan")
        elif mode == "vectorized":
            torch.set_num_threads(workers)
            import pbtkit.torch.vectorized as pv

            del settings["progress"]
            result = pv.run(example.TRAINER, **settings)
            wall = time.perf_counter() - started
            best = result.best.metrics[metric]
        else:
            result = pk.run(
                f"{example.__name__}:train",
                executor="process",
                workers=workers,
                **settings,
            )
            wall = time.perf_counter() - started
            best = result.best.metrics[metric]
    return {"wall_s": wall, f"best_{metric}": best}


def versus_random(
    seed: int, method: str, population: int | None, steps: int | None, task: str = "digits"
) -> dict[str, Any]:
    """One run of a vectorized example, PBT or random search, in this process.

    ``task``: ``"digits"`` (the result: the winner's test accuracy) or ``"gan"`` (the
    winner's test MMD: its generator's MMD on a fresh draw of 1,000 points, noise and true
    sample seeded apart from the fitness's, as ``torch_examples.py gan`` measures it)."""
    import pbtkit as pk
    import pbtkit.torch as pt
    import pbtkit.torch.vectorized as pv
    from pbtkit.examples import gan
    from pbtkit.examples import vectorized_digits as vd
    from pbtkit.examples import vectorized_gan as vg

    if task == "digits":
        vd._tensors()
    example: Any = vd if task == "digits" else vg
    settings: dict[str, Any] = {**example.SETTINGS, "seed": seed}
    if population is not None:
        settings["population"] = population
    if steps is not None:
        settings["total_steps"] = steps
    if method == "random":
        settings.update(exploit=pk.NoExploit(explore=False), explore=pk.Keep())
    with tempfile.TemporaryDirectory() as directory:
        settings["storage"] = f"sqlite:///{Path(directory) / 'pbt.db'}"
        settings["checkpoint_dir"] = Path(directory) / "checkpoints"
        started = time.perf_counter()
        result = pv.run(example.TRAINER, **settings)
        wall = time.perf_counter() - started
        best = result.best
        exploits = sum(1 for e in result.events if e.kind == "exploit")
        row: dict[str, Any] = {
            "benchmark": "vectorized_versus_random",
            "task": task,
            "method": method,
            "seed": seed,
            "population": settings["population"],
            "total_steps": settings["total_steps"],
        }
        if task == "digits":
            row["val_accuracy"] = float(best.metrics["accuracy"])
            row["test_accuracy"] = float(best.metrics["test_accuracy"])
        else:
            nets, _ = gan.build(best.hparams)
            pt.load(best.checkpoint, model=nets)
            row["val_mmd"] = float(best.metrics["mmd"])
            row["test_mmd"] = gan.quality(nets["G"], n=1000, seed=999_983 + seed)["mmd"]
            row["modes"] = float(best.metrics["modes"])
    return {**row, "exploits": exploits, "wall_s": round(wall, 2)}


def summarise_versus(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Paired PBT - random search figures over the seeds both methods ran."""
    from scipy.stats import wilcoxon

    task = rows[0].get("task", "digits")
    key, better = ("test_accuracy", "greater") if task == "digits" else ("test_mmd", "less")
    by = {m: {r["seed"]: r[key] for r in rows if r["method"] == m} for m in ("pbt", "random")}
    seeds = sorted(set(by["pbt"]) & set(by["random"]))
    pbt = [by["pbt"][s] for s in seeds]
    rnd = [by["random"][s] for s in seeds]
    diffs = [a - b for a, b in zip(pbt, rnd, strict=True)]
    line: dict[str, Any] = {
        "benchmark": "vectorized_versus_random",
        "task": task,
        "summary": True,
        "metric": key,
        "seeds": len(seeds),
    }
    for name, values in (("pbt", pbt), ("random", rnd)):
        line[f"{name}_mean"] = round(statistics.fmean(values), 4)
        line[f"{name}_std"] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
        line[f"{name}_median"] = round(statistics.median(values), 4)
    line["diff_mean"] = round(statistics.fmean(diffs), 4)
    sign = 1 if better == "greater" else -1  # a win: PBT better, whichever way that is
    line["wins_ties_losses"] = [
        sum(sign * d > 0 for d in diffs),
        sum(d == 0 for d in diffs),
        sum(sign * d < 0 for d in diffs),
    ]
    if any(diffs):
        line["wilcoxon_p"] = round(float(wilcoxon(pbt, rnd).pvalue), 5)
        line["wilcoxon_p_better"] = round(float(wilcoxon(pbt, rnd, alternative=better).pvalue), 5)
    line["wall_s_median"] = {
        m: statistics.median(r["wall_s"] for r in rows if r["method"] == m)
        for m in ("pbt", "random")
    }
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--populations", default="8,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--ready-every", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--versus-random",
        type=int,
        metavar="SEEDS",
        help="PBT against random search on N paired seeds",
    )
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument(
        "--task",
        choices=("digits", "gan"),
        default="digits",
        help="the vectorized example: digits (default) or gan",
    )
    parser.add_argument(
        "--summarise", nargs="+", metavar="FILE", help="the summary line again from saved output"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument(
        "--population",
        type=int,
        help="with --versus-random: the population (default: the example's)",
    )
    args = parser.parse_args()
    if args.summarise:
        saved = [
            json.loads(line)
            for path in args.summarise
            for line in Path(path).read_text().splitlines()
            if line.startswith("{")
        ]
        rows = [
            r
            for r in saved
            if r.get("benchmark") == "vectorized_versus_random"
            and "method" in r
            and r.get("task", "digits") == args.task
        ]
        print(json.dumps(summarise_versus(rows)))
        return
    if args.versus_random:
        import torch

        torch.set_num_threads(args.workers)
        steps = args.steps if "--steps" in sys.argv else None
        rows = []
        for seed in range(args.first_seed, args.first_seed + args.versus_random):
            # Alternate which method runs first: the machine drifts, the results do not.
            methods = ["pbt", "random"] if seed % 2 == 0 else ["random", "pbt"]
            for method in methods:
                rows.append(versus_random(seed, method, args.population, steps, args.task))
                print(json.dumps(rows[-1]), flush=True)
        print(json.dumps(summarise_versus(rows)), flush=True)
        return
    if args.child:
        figures = child(
            args.child, args.population, args.steps, args.ready_every, args.workers, args.task
        )
        print(json.dumps(figures))
        return
    # No OMP_NUM_THREADS for the children: each mode sets its own threads (the process
    # path's workers get cores // workers from pbtkit; a value inherited here would give
    # each worker that many and oversubscribe the cores).
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)
    for population in (int(p) for p in args.populations.split(",")):
        runs: dict[str, list[dict[str, Any]]] = {"vectorized": [], "process": [], "plain": []}
        for repeat in range(args.repeats):
            order = ["vectorized", "process", "plain"]
            if repeat % 2:
                order = order[::-1]  # neither mode always runs first on a drifting machine
            for mode in order:
                command = [sys.executable, __file__, "--child", mode, "--population"]
                command += [str(population), "--steps", str(args.steps), "--ready-every"]
                command += [str(args.ready_every), "--workers", str(args.workers)]
                figures = timed_child([*command, "--task", args.task], env)
                work = population * args.steps
                line = {
                    "task": args.task,
                    "population": population,
                    "mode": mode,
                    "repeat": repeat,
                    "steps": args.steps,
                    "ready_every": args.ready_every,
                    "workers": args.workers,
                    **figures,
                    "throughput": work / figures["wall_s"],
                    "throughput_outside": work / figures["process_s"],
                }
                runs[mode].append(line)
                print(json.dumps(line), flush=True)
        summary: dict[str, Any] = {"task": args.task, "population": population, "summary": True}
        for mode, lines in runs.items():
            for key in ("wall_s", "process_s", "throughput", "throughput_outside"):
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
