"""PBT against random search at equal compute on the three PyTorch examples; for the
digits CNN also Ray Tune's PopulationBasedTraining on the same training code.

BENCHMARKS.md sections 3 and 4. Tasks (their settings are the examples' ``SETTINGS``,
shrunk with ``--population/--total-steps/--ready-every`` where said):

- ``digits``: :mod:`pbtkit.examples.torch_digits` (CNN, 30% noisy labels). The winner is
  the member with the best validation accuracy; the result is its test accuracy.
- ``gan``: :mod:`pbtkit.examples.gan` (ring of 8 Gaussians). The winner has the lowest
  MMD on the run's evaluation draw; the result is its generator's MMD (lower is better),
  modes covered and high-quality fraction on a fresh draw of 1,000 samples.
- ``cartpole``: :mod:`pbtkit.examples.cartpole` (PPO). The winner has the best greedy
  evaluation return (10 episodes); the result is its mean greedy return over 20 new
  episodes. Also reported: the mean final evaluation return of the whole population.

Methods: ``pbt`` (the example's exploit and ``Perturb()``) and ``random`` (random search:
``NoExploit(explore=False)``, the same members, hyperparameters and steps, no exploits).
Seeds are paired: seed ``s`` fixes the initial hyperparameters of both. Each run is a
child process timed from outside (``process_s``: imports and worker start-up included)
and from inside (``wall_s``: the call of ``pk.run``). One JSON line per run, then one per
method: mean, sample std, median, the paired difference to random search, wins/ties/losses
and the Wilcoxon signed-rank p-value (two-sided; one-sided in the direction of "PBT is
better" as ``wilcoxon_p_better``).

With ``--ray-python PATH`` (a Python environment with ``ray[tune]``, torch and
scikit-learn, kept apart from pbtkit's own) the digits task also runs Ray Tune's PBT
(``benchmarks/ray_torch_digits.py``) for each seed, right after pbtkit's run of that seed,
with the same population, epochs, perturbation interval, quantile, resample probability,
factors and number of concurrent workers (2, ``OMP_NUM_THREADS=1``).

Usage: python benchmarks/torch_examples.py digits|gan|cartpole [--seeds 10]
       [--ray-python /path/to/venv/bin/python] [--population N] [--total-steps N]
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
HIGHER_IS_BETTER = {"digits": True, "gan": False, "cartpole": True}
RESULT = {"digits": "test_accuracy", "gan": "test_mmd", "cartpole": "test_return"}


def one_run(
    task: str, method: str, seed: int, directory: Path, overrides: dict[str, Any]
) -> dict[str, Any]:
    """One run, in this process (the child); returns the winner's figures."""
    import numpy as np

    import pbtkit as pk
    from pbtkit.examples import run_in

    module = _module(task)
    settings = {**module.SETTINGS, "seed": seed, "progress": False, "tensorboard": False}
    if method == "random":
        settings.update(exploit=pk.NoExploit(explore=False), explore=pk.Keep())
    settings.update(overrides)
    started = time.perf_counter()
    result = run_in(directory, module.train, {}, **settings)
    wall = time.perf_counter() - started
    best = result.best
    row: dict[str, Any] = {
        "task": task,
        "method": method,
        "seed": seed,
        "selected_by": f"{result.metric}={best.score:.4f}",
        "exploits": len(result.exploits),
        "steps": sum(t.end_step - t.start_step for t in result.trials if t.status == "done"),
        "wall_s": round(wall, 2),
    }
    if task == "digits":
        row["test_accuracy"] = best.metrics["test_accuracy"]
    elif task == "gan":
        import torch

        import pbtkit.torch as pt

        nets, _ = module.build(best.hparams)
        assert best.checkpoint is not None
        pt.load(best.checkpoint, model=nets)
        fresh = module.quality(nets["G"], seed=777)
        row.update({f"test_{k}": v for k, v in fresh.items()})
        del torch
    else:
        assert best.checkpoint is not None
        policy = module.load_policy(best.checkpoint)
        row["test_return"] = float(np.mean(module.evaluate(policy, 20, 2_000_000)))
        row["population_eval_mean"] = float(
            np.mean([m.metrics["eval_return"] for m in result.members])
        )
    first = sorted((t for t in result.trials if t.start_step == 0), key=lambda t: t.member)
    row["initial"] = {k: round(float(v), 6) for k, v in first[0].hparams.items()}
    return row


def _module(task: str) -> Any:
    if task == "digits":
        from pbtkit.examples import torch_digits

        return torch_digits
    if task == "gan":
        from pbtkit.examples import gan

        return gan
    from pbtkit.examples import cartpole

    return cartpole


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    return env


def timed_child(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a child that prints one JSON line last; add its whole-process time."""
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed:\n{out.stderr[-4000:]}")
    row: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    row["process_s"] = round(elapsed, 2)
    return row


def summarise(task: str, runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One line per method: mean, std, median, paired difference and Wilcoxon p."""
    from scipy.stats import wilcoxon

    key, higher = RESULT[task], HIGHER_IS_BETTER[task]
    floor = [r[key] for r in runs.get("random", [])]
    lines = []
    for method, rows in runs.items():
        if not rows:
            continue
        values = [r[key] for r in rows]
        line: dict[str, Any] = {
            "task": task,
            "method": method,
            "seeds": len(values),
            "result": key,
            "mean": round(statistics.fmean(values), 4),
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            "median": round(statistics.median(values), 4),
            "wall_s_median": round(statistics.median(r["wall_s"] for r in rows), 1),
            "process_s_median": round(statistics.median(r["process_s"] for r in rows), 1),
        }
        for extra in ("test_modes", "test_high_quality", "population_eval_mean"):
            if extra in rows[0]:
                line[f"{extra}_mean"] = round(statistics.fmean(r[extra] for r in rows), 4)
                others = [r[extra] for r in runs.get("random", [])]
                mine = [r[extra] for r in rows]
                if method != "random" and len(others) == len(mine) and mine != others:
                    line[f"{extra}_wilcoxon_p"] = round(float(wilcoxon(mine, others).pvalue), 5)
        if method != "random" and len(floor) == len(values):
            diffs = [a - b for a, b in zip(values, floor, strict=True)]
            better = [d if higher else -d for d in diffs]
            line["diff_vs_random_mean"] = round(statistics.fmean(diffs), 4)
            line["wins_ties_losses"] = [
                sum(b > 0 for b in better),
                sum(b == 0 for b in better),
                sum(b < 0 for b in better),
            ]
            if any(diffs):
                line["wilcoxon_p"] = round(float(wilcoxon(values, floor).pvalue), 5)
                one_sided = "greater" if higher else "less"
                line["wilcoxon_p_better"] = round(
                    float(wilcoxon(values, floor, alternative=one_sided).pvalue), 5
                )
        lines.append(line)
    pbt, ray = runs.get("pbt", []), runs.get("ray_tune_pbt", [])
    if pbt and len(ray) == len(pbt):
        ours, theirs = [r[key] for r in pbt], [r[key] for r in ray]
        diffs = [a - b for a, b in zip(ours, theirs, strict=True)]
        pairs = list(zip(pbt, ray, strict=True))
        side: dict[str, Any] = {
            "task": task,
            "comparison": "pbtkit PBT vs Ray Tune PBT, same seeds, side by side",
            "seeds": len(diffs),
            "result_diff_mean": round(statistics.fmean(diffs), 4),
            "wins_ties_losses": [
                sum(d > 0 for d in diffs),
                sum(d == 0 for d in diffs),
                sum(d < 0 for d in diffs),
            ],
            "process_s_ratio_median": round(
                statistics.median(r["process_s"] / p["process_s"] for p, r in pairs), 2
            ),
            "wall_s_ratio_median": round(
                statistics.median(r["wall_s"] / p["wall_s"] for p, r in pairs), 2
            ),
        }
        if any(diffs):
            side["wilcoxon_p"] = round(float(wilcoxon(ours, theirs).pvalue), 5)
        lines.append(side)
    return lines


def _summarise_files(task: str, paths: list[str]) -> None:
    """Print the summary of the per-run lines in ``paths`` (runs of one task)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        for text in Path(path).read_text().splitlines():
            row = json.loads(text)
            if row.get("task") == task and "seed" in row and "method" in row:
                runs.setdefault(row["method"], []).append(row)
    for rows in runs.values():
        rows.sort(key=lambda r: r["seed"])
    seeds = {m: [r["seed"] for r in rows] for m, rows in runs.items()}
    if "random" in runs:  # compare on the seeds both have
        common = set(seeds["random"])
        for method in runs:
            if method != "ray_tune_pbt":
                common &= set(seeds[method])
        for method, rows in runs.items():
            if method != "ray_tune_pbt":
                runs[method] = [r for r in rows if r["seed"] in common]
    lines = (
        summarise(task, {m: r for m, r in runs.items() if m != "ray_tune_pbt"})
        if "random" in runs
        else []
    )
    if "ray_tune_pbt" in runs and "pbt" in runs:
        ray_seeds = {r["seed"] for r in runs["ray_tune_pbt"]}
        paired = {
            "pbt": [r for r in runs["pbt"] if r["seed"] in ray_seeds],
            "ray_tune_pbt": runs["ray_tune_pbt"],
        }
        lines += summarise(task, paired)
    for line in lines:
        print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("task", choices=["digits", "gan", "cartpole", "_one"])
    parser.add_argument("--seeds", type=int, default=10, help="paired seeds 0..N-1")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=["random", "pbt"])
    parser.add_argument("--ray-python", help="a Python with ray[tune]: also run Ray Tune's PBT")
    parser.add_argument(
        "--ray-seeds", type=int, help="run Ray Tune on the first N seeds only (default: all)"
    )
    parser.add_argument(
        "--summarise",
        nargs="+",
        metavar="JSONL",
        help="only print the summary of runs printed before (files of this script's output)",
    )
    parser.add_argument("--population", type=int)
    parser.add_argument("--total-steps", type=int)
    parser.add_argument("--ready-every", type=int)
    parser.add_argument("--evolution", choices=["async", "generational"])
    # the child's own arguments
    parser.add_argument("--child-task", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    overrides = {
        k: v
        for k, v in (
            ("population", args.population),
            ("total_steps", args.total_steps),
            ("ready_every", args.ready_every),
            ("evolution", args.evolution),
        )
        if v is not None
    }
    if args.task == "_one":
        row = one_run(args.child_task, args.method, args.seed, Path(args.dir), overrides)
        print(json.dumps(row), flush=True)
        return
    if args.summarise:
        _summarise_files(args.task, args.summarise)
        return
    env = _child_env()
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in args.methods}
    if args.ray_python and args.task == "digits":
        runs["ray_tune_pbt"] = []
    sizes = [f"--{k.replace('_', '-')}={v}" for k, v in overrides.items()]
    ray_sizes = [f"--{k.replace('_', '-')}={v}" for k, v in overrides.items() if k != "evolution"]
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for method in args.methods:
                directory = Path(tmp) / f"{method}-{seed}"
                row = timed_child(
                    [
                        sys.executable,
                        __file__,
                        "_one",
                        "--child-task",
                        args.task,
                        "--method",
                        method,
                        "--seed",
                        str(seed),
                        "--dir",
                        str(directory),
                        *sizes,
                    ],
                    env,
                )
                runs[method].append(row)
                print(json.dumps(row), flush=True)
            ray_seeds = args.ray_seeds if args.ray_seeds is not None else args.seeds
            if "ray_tune_pbt" in runs and seed < args.first_seed + ray_seeds:
                row = timed_child(
                    [
                        str(args.ray_python),
                        str(ROOT / "benchmarks" / "ray_torch_digits.py"),
                        "--seed",
                        str(seed),
                        "--dir",
                        str(Path(tmp) / f"ray-{seed}"),
                        *ray_sizes,
                    ],
                    env,
                )
                runs["ray_tune_pbt"].append(row)
                print(json.dumps(row), flush=True)
    for line in summarise(args.task, runs):
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
