"""The PBT paper's toy under Ray Tune's ``PopulationBasedTraining`` (run by toy_vs_ray.py).

Run with the Python of a separate environment that has Ray Tune (and numpy); it does not
import pbtkit. The same task and settings as ``pbtkit.examples.toy``: population 8, 100
steps, ready every 10 (a checkpoint at each), the score reported every step, 2 trials at
once (2 CPUs, one each), truncation 25% (``quantile_fraction``), perturb x0.8/x1.2,
resample probability 0.25, h in U(0, 1). The step count lives in the checkpoint, so a
member that copies a donor continues from the donor's step (as in pbtkit).

Prints one JSON line: the seed, the best true Q among the members' last results and
that member's h, the wall time of ``Tuner.fit`` and of the whole script (``ray.init`` included).

Usage: python benchmarks/ray_toy.py --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()

import numpy as np  # noqa: E402
import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.schedulers import PopulationBasedTraining  # noqa: E402
from ray.tune.search.basic_variant import BasicVariantGenerator  # noqa: E402

LR = 0.01
STEPS = 100
READY = 10


def train(config: dict[str, Any]) -> None:
    """Gradient ascent on the surrogate; the true Q reported every step."""
    theta = np.array([0.9, 0.9])
    step = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            theta = np.load(Path(directory) / "theta.npy")
            step = int((Path(directory) / "step").read_text())
    h = np.array([config["h0"], config["h1"]])
    while step < STEPS:
        theta = theta + LR * (-2.0 * h * theta)
        step += 1
        metrics = {"score": float(1.2 - np.sum(theta**2)), "step": step}
        if step % READY == 0:
            with tempfile.TemporaryDirectory() as directory:
                np.save(Path(directory) / "theta.npy", theta)
                (Path(directory) / "step").write_text(str(step))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        else:
            tune.report(metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    random.seed(args.seed)
    np.random.seed(args.seed)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        scheduler = PopulationBasedTraining(
            time_attr="step",
            perturbation_interval=READY,
            quantile_fraction=0.25,
            resample_probability=0.25,
            perturbation_factors=(1.2, 0.8),
            hyperparam_mutations={"h0": tune.uniform(0.0, 1.0), "h1": tune.uniform(0.0, 1.0)},
        )
        tuner = tune.Tuner(
            tune.with_resources(train, {"cpu": 1}),
            param_space={"h0": tune.uniform(0.0, 1.0), "h1": tune.uniform(0.0, 1.0)},
            tune_config=tune.TuneConfig(
                metric="score",
                mode="max",
                num_samples=8,
                scheduler=scheduler,
                search_alg=BasicVariantGenerator(random_state=args.seed),
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name="toy",
                storage_path=tmp,
                stop={"step": STEPS},
                verbose=0,
            ),
        )
        fit_started = time.perf_counter()
        results = tuner.fit()
        fit = time.perf_counter() - fit_started
        best = results.get_best_result(metric="score", mode="max", scope="last")
        line = {
            "benchmark": "ray_toy_pop8",
            "seed": args.seed,
            "best_score": round(float(best.metrics["score"]), 4),
            # Ray perturbs a value without clipping it to its distribution's bounds.
            "best_h": [round(float(best.config[h]), 4) for h in ("h0", "h1")],
            "fit_s": round(fit, 2),
            "script_s": round(time.perf_counter() - STARTED, 2),
            "errors": len(results.errors),
        }
        ray.shutdown()
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
