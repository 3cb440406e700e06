"""What the trackers cost a run: the toy of BENCHMARKS.md section 1 with and without them.

The PBT paper's toy, population 8, 100 steps, ready every 10, 2 worker processes, run
once per seed in each configuration, the configurations interleaved seed by seed so
they share the machine's moods: no logger; TensorBoard; MLflow (a SQLite tracking
store); W&B (offline); all three. One JSON line per configuration:

- ``train_s``: from the first trial's start to the last one's end, read from the
  store: how long the workers took to train the population. The loggers run in a thread
  of the driving process, not in the workers, so this moves only as much as that thread
  takes the machine's cores from the workers (2 workers on 2 cores here);
- ``start_s``: from ``pk.run`` to the first trial's start: starting the workers, and
  opening the trackers (MLflow creates its SQLite tracking store the first time);
- ``end_s``: from the last trial's end to ``pk.run``'s result: the trackers' last
  write and close;
- ``wall_s``: start of ``pk.run`` to its result, all of it;
- for each configuration against no logger: the median paired ratio and a Wilcoxon
  signed-rank p-value over the seeds (``pip install scipy``).

Usage: python benchmarks/loggers.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pbtkit as pk
from pbtkit.examples import toy

CONFIGS = ("none", "tensorboard", "mlflow", "wandb", "all")


def loggers(config: str, folder: Path) -> tuple[bool, list[Any]]:
    """The ``tensorboard`` setting and the ``loggers`` of a configuration."""
    from pbtkit.loggers import MLflowLogger, WandbLogger

    def mlflow() -> Any:
        return MLflowLogger(
            tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
            artifact_location=(folder / "mlflow-artifacts").as_uri(),
        )

    def wandb() -> Any:
        return WandbLogger(project="pbtkit-bench", mode="offline", dir=str(folder))

    chosen = {
        "none": (False, []),
        "tensorboard": (True, []),
        "mlflow": (False, [mlflow()]),
        "wandb": (False, [wandb()]),
        "all": (True, [mlflow(), wandb()]),
    }
    return chosen[config]


def one_run(config: str, seed: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tensorboard, trackers = loggers(config, folder)
        started = time.perf_counter()
        epoch = time.time()
        result = pk.run(
            toy.train, space=toy.SPACE, metric="score", population=8, workers=2,
            ready_every=10, total_steps=100, exploit=pk.Truncation(0.25),
            explore=pk.Perturb((0.8, 1.2), resample_probability=0.25),
            storage=f"sqlite:///{folder / 'pbt.db'}", checkpoint_dir=folder / "ckpt",
            name="loggers", seed=seed, progress=False, tensorboard=tensorboard,
            loggers=trackers,
        )  # fmt: skip
        wall = time.perf_counter() - started
        first = min(t.started_at or math.inf for t in result.trials)
        last = max(t.finished_at or 0.0 for t in result.trials)
        return {
            "train_s": last - first,
            "start_s": first - epoch,
            "end_s": epoch + wall - last,
            "wall_s": wall,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in CONFIGS}
    for seed in range(args.repeats):
        for config in CONFIGS:
            runs[config].append(one_run(config, seed))
    try:
        from scipy.stats import wilcoxon
    except ImportError:
        wilcoxon = None
    base = runs["none"]
    for config in CONFIGS:
        line: dict[str, Any] = {"benchmark": f"loggers_{config}", "repeats": args.repeats}
        for key in ("train_s", "start_s", "end_s", "wall_s"):
            values = [r[key] for r in runs[config]]
            line[key] = round(statistics.median(values), 3)
            if config != "none" and key in ("train_s", "wall_s"):
                ratios = [a[key] / b[key] for a, b in zip(runs[config], base, strict=True)]
                line[f"{key}_ratio"] = round(statistics.median(ratios), 3)
                if wilcoxon is not None and args.repeats >= 5:
                    diffs = [a[key] - b[key] for a, b in zip(runs[config], base, strict=True)]
                    line[f"{key}_p"] = round(float(wilcoxon(diffs).pvalue), 4)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
