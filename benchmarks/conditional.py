"""Conditional hyperparameters: what the DAG costs the core, and what the choice gives.

1. Core cost, side by side in one process: microseconds per ``sample``, ``validate`` and
   ``Perturb()`` call on the digits example's flat space (lr, momentum, l2: the code path
   every flat space takes, unchanged) and on its conditional one (optimizer SGD with
   momentum or Adam with beta1/beta2). Median over repeats; the ratio is the claim.
2. Quality on digits with noisy labels (docs/benchmarks.md, item 3: 8 members x 16 epochs,
   ready every 2, 2 worker processes, Truncation(0.25)): the flat SGD space against the
   conditional optimizer space, with ``Perturb()`` and with ``PB2()``, at equal compute,
   paired seeds. One JSON line per run, then per setting: mean and std of the winner's
   test accuracy, the paired difference to the flat space and its Wilcoxon p-value.

Usage: OMP_NUM_THREADS=1 python benchmarks/conditional.py [--seeds 5] [--skip-quality]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import pbtkit as pk
from pbtkit.core import SearchSpace
from pbtkit.examples import digits

FLAT = SearchSpace.coerce(digits.SPACE)
CONDITIONAL = SearchSpace.coerce(digits.OPTIMIZER_SPACE)


def _per_call_us(fn: Callable[[], Any], calls: int = 2000, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(times)


def core_cost() -> list[dict[str, Any]]:
    """Per-call cost on the flat and the conditional space, measured side by side."""
    lines = []
    explorer = pk.Perturb()
    for label, space in (("flat", FLAT), ("conditional", CONDITIONAL)):
        rng = np.random.default_rng(0)
        member = space.sample(rng)
        lines.append(
            {
                "bench": "core",
                "space": label,
                "sample_us": round(_per_call_us(lambda s=space, r=rng: s.sample(r)), 2),
                "validate_us": round(_per_call_us(lambda s=space, m=member: s.validate(m)), 2),
                "perturb_us": round(
                    _per_call_us(lambda s=space, m=member, r=rng: explorer(m, s, r)), 2
                ),
            }
        )
    flat, conditional = lines
    lines.append(
        {
            "bench": "core",
            "ratio_conditional_to_flat": {
                key: round(conditional[key] / flat[key], 2)
                for key in ("sample_us", "validate_us", "perturb_us")
            },
        }
    )
    return lines


SETTINGS = {
    "flat_perturb": (digits.SPACE, pk.Perturb()),
    "optimizers_perturb": (digits.OPTIMIZER_SPACE, pk.Perturb()),
    "optimizers_pb2": (digits.OPTIMIZER_SPACE, pk.PB2()),
}
FLOOR = "flat_perturb"


def one_run(name: str, seed: int, directory: Path) -> dict[str, Any]:
    """One digits run; the winner's accuracies and how often members switched optimizer."""
    space, explore = SETTINGS[name]
    started = time.perf_counter()
    result = pk.run(
        digits.train,
        space=space,
        metric="accuracy",
        population=8,
        workers=2,
        ready_every=2,
        total_steps=16,
        exploit=pk.Truncation(0.25),
        explore=explore,
        seed=seed,
        storage=f"sqlite:///{directory / f'{name}-{seed}.db'}",
        checkpoint_dir=directory / f"{name}-{seed}",
        name=name,
        progress=False,
        tensorboard=False,
    )
    switches = sum(
        (e.old_hparams or {}).get("optimizer") != (e.new_hparams or {}).get("optimizer")
        for e in result.exploits
    )
    return {
        "bench": "quality",
        "setting": name,
        "seed": seed,
        "test_accuracy": result.best.metrics["test_accuracy"],
        "val_accuracy": result.best.metrics["accuracy"],
        "best_optimizer": result.best.hparams.get("optimizer", "sgd"),
        "exploits": len(result.exploits),
        "optimizer_switches": switches,
        "wall_s": round(time.perf_counter() - started, 2),
    }


def summarise(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per setting: mean, std, paired difference and Wilcoxon p against the flat space."""
    from scipy.stats import wilcoxon

    floor = [r["test_accuracy"] for r in runs[FLOOR]]
    lines = []
    for name, rows in runs.items():
        test = [r["test_accuracy"] for r in rows]
        line: dict[str, Any] = {
            "bench": "quality_summary",
            "setting": name,
            "seeds": len(test),
            "test_mean": round(statistics.fmean(test), 4),
            "test_std": round(statistics.stdev(test), 4) if len(test) > 1 else 0.0,
            "adam_wins": sum(r["best_optimizer"] == "adam" for r in rows),
            "switches_mean": round(statistics.fmean(r["optimizer_switches"] for r in rows), 1),
            "wall_s_median": round(statistics.median(r["wall_s"] for r in rows), 1),
        }
        if name != FLOOR:
            diffs = [a - b for a, b in zip(test, floor, strict=True)]
            line["diff_vs_flat_mean"] = round(statistics.fmean(diffs), 4)
            line["wilcoxon_p"] = (
                round(float(wilcoxon(test, floor).pvalue), 4) if any(diffs) else None
            )
        lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=5, help="paired seeds 0..N-1 (default 5)")
    parser.add_argument("--skip-quality", action="store_true", help="only the core cost")
    args = parser.parse_args()
    for line in core_cost():
        print(json.dumps(line), flush=True)
    if args.skip_quality:
        return
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for name in SETTINGS:
                row = one_run(name, seed, Path(tmp))
                runs[name].append(row)
                print(json.dumps(row), flush=True)
    for line in summarise(runs):
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
