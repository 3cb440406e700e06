"""Ray Tune's PopulationBasedTraining on the torch digits CNN: the comparison's other side.

Runs in its own Python environment (``ray[tune]``, torch, scikit-learn, safetensors and
pbtkit's dependencies; pbtkit itself from ``src`` on ``PYTHONPATH``), started by
``benchmarks/torch_examples.py digits --ray-python PATH``. The training code is pbtkit's
(:mod:`pbtkit.examples.torch_digits`: the same data, network, epoch and evaluation) and
so are the checkpoints (``pbtkit.torch``, which also writes Ray's explored values into
the optimizer: without that, Ray's exploits would train on with the donor's learning
rate). The settings match pbtkit's run: population 8, 16 epochs, a decision every 2
epochs (``perturbation_interval=2``, a checkpoint at each), quantile 0.25, resample
probability 0.25, factors 1.2/0.8, the same space (batch size as an ordered list, which
Ray shifts to a neighbour), 2 trials at once with one CPU each.

Ray pauses PBT trials at each perturbation interval to let the others catch up and
resumes them from their checkpoint, in the same actor where it can (``reuse_actors``).

Prints one JSON line: the winner's (last validation accuracy, over all trials) test
accuracy, and ``wall_s`` from the start of ``Tuner.fit`` to its end.

Usage: OMP_NUM_THREADS=1 python benchmarks/ray_torch_digits.py --seed 0 --dir /tmp/ray
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any


def trainable(config: dict[str, Any]) -> None:
    """One Ray trial: epochs of the digits CNN, a checkpoint every 2 epochs."""
    import torch
    from ray import tune

    import pbtkit.torch as pt
    from pbtkit.examples import torch_digits as td

    torch.set_num_threads(1)
    _, _, x_val, y_val, x_test, y_test = td.load_tensors()
    member = zlib.crc32(tune.get_context().get_trial_id().encode()) % 1000
    model, optimizer = td.build(config, "cpu", seed=member)
    epoch = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            extra = pt.load(directory, model=model, optimizer=optimizer, hparams=config)
            epoch = int(extra["epoch"])
    while True:
        td.fit_epoch(model, optimizer, int(config["batch_size"]), seed=member * 100_003 + epoch)
        epoch += 1
        metrics = {
            "accuracy": td.evaluate(model, x_val, y_val),
            "test_accuracy": td.evaluate(model, x_test, y_test),
        }
        if epoch % 2 == 0:
            with tempfile.TemporaryDirectory() as directory:
                pt.save(directory, model=model, optimizer=optimizer, epoch=epoch)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
        else:
            tune.report(metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--total-steps", type=int, default=16)
    parser.add_argument("--ready-every", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    space = {
        "lr": tune.loguniform(1e-3, 0.5),
        "momentum": tune.uniform(0.0, 0.99),
        "weight_decay": tune.loguniform(1e-6, 1e-2),
        "dropout": tune.uniform(0.0, 0.7),
        "batch_size": [16, 32, 64, 128],
    }
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",
        metric="accuracy",
        mode="max",
        perturbation_interval=args.ready_every,
        hyperparam_mutations=space,
        quantile_fraction=0.25,
        resample_probability=0.25,
        perturbation_factors=(1.2, 0.8),
    )
    param_space = {**space, "batch_size": tune.choice([16, 32, 64, 128])}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            num_samples=args.population,
            max_concurrent_trials=2,
            reuse_actors=True,  # Ray's fastest setting: a paused trial may resume in a live actor
            search_alg=tune.search.BasicVariantGenerator(random_state=args.seed),
        ),
        run_config=tune.RunConfig(
            name=f"ray-digits-{args.seed}",
            storage_path=str(Path(args.dir).resolve()),
            stop={"training_iteration": args.total_steps},
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
        ),
    )
    started = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - started
    best = results.get_best_result(metric="accuracy", mode="max", scope="last")
    ray.shutdown()
    print(
        json.dumps(
            {
                "task": "digits",
                "method": "ray_tune_pbt",
                "seed": args.seed,
                "selected_by": f"accuracy={best.metrics['accuracy']:.4f}",
                "test_accuracy": best.metrics["test_accuracy"],
                "errors": len(results.errors),
                "wall_s": round(wall, 2),
                "ray": ray.__version__,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
