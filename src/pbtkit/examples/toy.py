"""The toy problem of the PBT paper (Jaderberg et al. 2017, section 4.1 and Figure 2).

Each member holds theta = (0.9, 0.9) and hyperparameters h = (h0, h1). A step is gradient
ascent with learning rate 0.01 on the surrogate objective
``Q_hat(theta | h) = 1.2 - (h0 * theta0**2 + h1 * theta1**2)``; the score is the true
objective ``Q(theta) = 1.2 - (theta0**2 + theta1**2)``, whose maximum is 1.2 at theta = 0.
A member whose h is small barely moves; PBT lets it copy a better theta and a better h.

Run it with ``python examples/toy.py`` or ``pbtkit run pbtkit.examples.toy:train -c toy.toml``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import pbtkit as pk
from pbtkit.examples import run_in

LEARNING_RATE = 0.01
SPACE = {"h0": pk.Uniform(0.0, 1.0), "h1": pk.Uniform(0.0, 1.0)}


def score(theta: np.ndarray) -> float:
    """The true objective Q(theta)."""
    return float(1.2 - np.sum(theta**2))


def train(trial: pk.Trial) -> None:
    """Gradient ascent on the surrogate for the trial's steps, reporting Q after each."""
    if trial.parent_checkpoint is not None:
        theta = np.load(trial.parent_checkpoint / "theta.npy")
    else:
        theta = np.array([0.9, 0.9])
    h = np.array([trial.hparams["h0"], trial.hparams["h1"]])
    for step in trial.steps():
        theta = theta + LEARNING_RATE * (-2.0 * h * theta)
        # theta too, so that `pbtkit plot --paths theta0,theta1` can draw the paths
        trial.report(step, score=score(theta), theta0=float(theta[0]), theta1=float(theta[1]))
    np.save(trial.checkpoint_dir / "theta.npy", theta)


def without_pbt(hparams: Sequence[Mapping[str, Any]], steps: int) -> float:
    """The best Q the same members reach when each keeps its own h (no exploit, no explore)."""
    best = -np.inf
    for hp in hparams:
        theta = np.array([0.9, 0.9])
        h = np.array([hp["h0"], hp["h1"]])
        for _ in range(steps):
            theta = theta + LEARNING_RATE * (-2.0 * h * theta)
        best = max(best, score(theta))
    return float(best)


def main(
    directory: str | Path = "pbt-demo", *, progress: bool | None = None, **overrides: object
) -> pk.Result:
    """Population 8, 100 steps, ready every 10, 2 workers, truncation 25% (docs/benchmarks.md)."""
    return run_in(
        directory,
        train,
        overrides,
        space=SPACE,
        metric="score",
        mode="max",
        population=8,
        workers=2,
        ready_every=10,
        total_steps=100,
        exploit=pk.Truncation(0.25),
        explore=pk.Perturb((0.8, 1.2), resample_probability=0.25),
        name="toy",
        progress=progress,
    )


if __name__ == "__main__":
    result = main()
    print(result.summary_text())
    print("schedule of the best member:")
    for step, values in result.schedule().changes():
        print(f"  from step {step:3d}: h0={values['h0']:.3f} h1={values['h1']:.3f}")
