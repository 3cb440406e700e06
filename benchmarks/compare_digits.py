"""Result quality on digits with noisy labels: exploit strategies at equal compute.

docs/benchmarks.md, item 3. The task is ``pbtkit.examples.digits`` (scikit-learn's bundled
digits, 30% of training labels random, 60/20/20 split, a one-hidden-layer MLP; tune
learning rate, momentum and L2): 8 members x 16 epochs, ready every 2 epochs, 2 worker
processes, asynchronous evolution. Every strategy gets the same 8 x 16 epochs:

- ``random_search``: ``NoExploit(explore=False)``, the 8 members train independently (the floor);
- ``truncation``: ``Truncation(0.25)`` + ``Perturb()`` (x0.8/x1.2);
- ``binary_tournament``: ``BinaryTournament()`` + ``Perturb()``;
- ``initiator``: ``Initiator(window=2)`` + ``Perturb()`` (Li et al. 2019);
- ``pb2``: ``Truncation(0.25)`` + ``PB2()`` (Parker-Holder et al. 2020).

Seeds are paired: run ``s`` of every strategy uses ``seed=s``, which fixes the initial
hyperparameters (the same 8 draws for every strategy); the network's initial weights and
the data split are the same in every run. The winner is the member with the best
validation accuracy at the end; its test accuracy is the result. One JSON line per
strategy: mean and sample std of test accuracy over the seeds, the mean paired difference
to random search, and the Wilcoxon signed-rank p-value (two-sided) against random search
(``null`` when every paired difference is zero). Each run's own line comes first.

Usage: OMP_NUM_THREADS=1 python benchmarks/compare_digits.py [--seeds 5] [--workers 2]
       [--strategies random_search truncation ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pbtkit as pk
from pbtkit.core.exploit import Exploiter
from pbtkit.core.explore import Explorer
from pbtkit.examples import digits

POPULATION = 8
EPOCHS = 16
READY_EVERY = 2
FLOOR = "random_search"


def strategies() -> dict[str, tuple[Exploiter, Explorer]]:
    """Strategy name -> (exploit, explore)."""
    return {
        FLOOR: (pk.NoExploit(explore=False), pk.Keep()),
        "truncation": (pk.Truncation(0.25), pk.Perturb()),
        "binary_tournament": (pk.BinaryTournament(), pk.Perturb()),
        "initiator": (pk.Initiator(window=2), pk.Perturb()),
        "pb2": (pk.Truncation(0.25), pk.PB2()),
    }


def one_run(name: str, seed: int, workers: int, directory: Path) -> dict[str, Any]:
    """One run of a strategy; returns the winner's accuracies and the run's cost."""
    exploit, explore = strategies()[name]
    started = time.perf_counter()
    result = pk.run(
        digits.train,
        space=digits.SPACE,
        metric="accuracy",
        mode="max",
        population=POPULATION,
        workers=workers,
        ready_every=READY_EVERY,
        total_steps=EPOCHS,
        storage=f"sqlite:///{directory / f'{name}-{seed}.db'}",
        checkpoint_dir=directory / f"{name}-{seed}",
        name=name,
        exploit=exploit,
        explore=explore,
        seed=seed,
        progress=False,
        tensorboard=False,
    )
    wall = time.perf_counter() - started
    best = result.best
    first = sorted((t for t in result.trials if t.start_step == 0), key=lambda t: t.member)
    return {
        "strategy": name,
        "seed": seed,
        "val_accuracy": best.metrics["accuracy"],
        "test_accuracy": best.metrics["test_accuracy"],
        "exploits": len(result.exploits),
        "epochs": sum(t.end_step - t.start_step for t in result.trials if t.status == "done"),
        "wall_s": round(wall, 2),
        # to check the pairing: the same seed must start every strategy from the same values
        "initial_lr": [round(float(t.hparams["lr"]), 6) for t in first],
    }


def summarise(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One line per strategy: mean, std, paired difference and Wilcoxon p vs the floor."""
    from scipy.stats import wilcoxon

    floor = [r["test_accuracy"] for r in runs.get(FLOOR, [])]
    lines = []
    for name, rows in runs.items():
        test = [r["test_accuracy"] for r in rows]
        line: dict[str, Any] = {
            "strategy": name,
            "seeds": len(test),
            "test_mean": round(statistics.fmean(test), 4),
            "test_std": round(statistics.stdev(test), 4) if len(test) > 1 else 0.0,
            "val_mean": round(statistics.fmean(r["val_accuracy"] for r in rows), 4),
            "exploits_mean": round(statistics.fmean(r["exploits"] for r in rows), 1),
            "wall_s_median": round(statistics.median(r["wall_s"] for r in rows), 1),
        }
        if name != FLOOR and len(floor) == len(test):
            diffs = [a - b for a, b in zip(test, floor, strict=True)]
            line["diff_vs_random_mean"] = round(statistics.fmean(diffs), 4)
            line["wins_ties_losses"] = [
                sum(d > 0 for d in diffs),
                sum(d == 0 for d in diffs),
                sum(d < 0 for d in diffs),
            ]
            line["wilcoxon_p"] = (
                round(float(wilcoxon(test, floor).pvalue), 4) if any(diffs) else None
            )
        lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=5, help="paired seeds 0..N-1 (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--strategies", nargs="+", choices=list(strategies()), default=list(strategies())
    )
    args = parser.parse_args()
    names = [FLOOR, *(n for n in args.strategies if n != FLOOR)]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        # seed-major, so that a run cut short still has every strategy on the first seeds
        for seed in range(args.seeds):
            for name in names:
                row = one_run(name, seed, args.workers, Path(tmp))
                runs[name].append(row)
                print(json.dumps(row), flush=True)
    for line in summarise(runs):
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
