"""Figure 2 of the PBT paper (Jaderberg et al. 2017): the toy problem and its ablations.

Two members, each with theta = (0.9, 0.9); member 0 starts with h = (1, 0), member 1 with
h = (0, 1). A step is gradient ascent with learning rate 0.02 on the surrogate
``Q_hat(theta | h) = 1.2 - (h0 * theta0**2 + h1 * theta1**2)``; the score is the true
``Q(theta) = 1.2 - (theta0**2 + theta1**2)`` (maximum 1.2 at theta = 0). 100 steps, ready
every 4. Each member can only shrink the coordinate its h weights, so alone neither gets
past ``Q = 1.2 - 0.81 - (0.9 * 0.96**100)**2 = 0.3898``.

Four variants, as in the figure:

- **PBT**: at each ready the worse member copies the better's theta (``Truncation(0.5)``
  with two members, ``inherit="weights"``: theta, not h, as in the paper), then adds
  Gaussian noise (sigma 0.1) to its h (``GaussianNoise(0.1)``);
- **explore only**: nobody copies; each member perturbs its own h (``NoExploit()``);
- **exploit only**: the worse copies the better's theta and keeps its h (``Keep()``);
- **grid search**: h fixed (``NoExploit(explore=False)``): Q stays at 0.3898.

Two things to know, where pbtkit and the paper differ:

- The two members' Q are bitwise equal until one of them explores (each shrinks "its"
  coordinate at the same rate), and pbtkit never exploits on a tie: nobody is worse, so
  nobody copies or explores and PBT would stay at 0.3898. The paper does not say how it
  breaks the tie; here the objective is ``fitness = Q - 1e-9 * member``, which ranks as Q
  does whenever the Q differ by more than 1e-9 and hands a tie to the lower slot, as a
  plain argmax would. Every figure printed is the true Q (the ``score`` metric).
- The noise is clipped at 0 as in the paper; each h lives in ``Uniform(0, 10)``, an upper
  bound far above where the noise takes it in 25 readies, so clipping at 0 is the only one
  that matters (and ``1 - 2 * 0.02 * 10 > 0``, so a step never overshoots theta = 0).

Members are compared at the same step (``evolution="generational"``), as in the paper.
``python examples/toy_figure2.py [--seeds 20]`` prints one JSON line per variant (best Q
of the final population over the seeds) and a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import pbtkit as pk
from pbtkit.core.exploit import Exploiter
from pbtkit.core.explore import Explorer
from pbtkit.examples.toy import score

LEARNING_RATE = 0.02
STEPS = 100
READY_EVERY = 4
SIGMA = 0.1
#: Subtracted from Q per slot index in the objective, to break exact ties by position.
TIE_BREAK = 1e-9
SPACE = {"h0": pk.Uniform(0.0, 10.0), "h1": pk.Uniform(0.0, 10.0)}
INITIAL = ({"h0": 1.0, "h1": 0.0}, {"h0": 0.0, "h1": 1.0})
VARIANTS: dict[str, tuple[Exploiter, Explorer]] = {
    "pbt": (pk.Truncation(0.5), pk.GaussianNoise(SIGMA)),
    "explore_only": (pk.NoExploit(), pk.GaussianNoise(SIGMA)),
    "exploit_only": (pk.Truncation(0.5), pk.Keep()),
    "grid_search": (pk.NoExploit(explore=False), pk.Keep()),
}


def train(trial: pk.Trial) -> None:
    """Gradient ascent on the surrogate (learning rate 0.02), reporting Q and theta each step.

    ``score`` is the true Q; ``fitness``, the objective, is Q with the tie-break of the
    module docstring.
    """
    if trial.parent_checkpoint is not None:
        theta = np.load(trial.parent_checkpoint / "theta.npy")
    else:
        theta = np.array([0.9, 0.9])
    h = np.array([trial.hparams["h0"], trial.hparams["h1"]])
    for step in trial.steps():
        theta = theta + LEARNING_RATE * (-2.0 * h * theta)
        q = score(theta)
        trial.report(
            step,
            score=q,
            fitness=q - TIE_BREAK * trial.member,
            theta0=float(theta[0]),
            theta1=float(theta[1]),
        )
    np.save(trial.checkpoint_dir / "theta.npy", theta)


def run_variant(variant: str, seed: int, directory: str | Path) -> float:
    """One run of a variant; returns the best final Q of the two members.

    Args:
        variant: A key of :data:`VARIANTS`.
        seed: The run's seed (the noise and the decisions; the initial h are fixed).
        directory: Where the SQLite file and the checkpoints go.

    Returns:
        The best true Q among the members after 100 steps.
    """
    exploit, explore = VARIANTS[variant]
    directory = Path(directory)
    result = pk.run(
        train,
        space=SPACE,
        metric="fitness",
        mode="max",
        population=2,
        workers=2,
        ready_every=READY_EVERY,
        total_steps=STEPS,
        storage=f"sqlite:///{directory / f'{variant}-{seed}.db'}",
        checkpoint_dir=directory / f"{variant}-{seed}",
        name=variant,
        evolution="generational",
        exploit=exploit,
        explore=explore,
        seed=seed,
        initial=INITIAL,
        inherit="weights",
        executor="thread",
        progress=False,
        tensorboard=False,
    )
    return max(m.metrics["score"] for m in result.members)


def main(seeds: int = 20, *, quiet: bool = False) -> dict[str, dict[str, float]]:
    """Run every variant over ``seeds`` seeds (0, 1, ...) and print the results.

    Args:
        seeds: How many seeds per variant.
        quiet: Print nothing.

    Returns:
        Per variant: ``mean``, ``min``, ``max`` and ``median`` of the best final Q, and
        ``seeds``.
    """
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            best = [run_variant(variant, seed, tmp) for seed in range(seeds)]
            out[variant] = {
                "mean": round(statistics.fmean(best), 4),
                "median": round(statistics.median(best), 4),
                "min": round(min(best), 4),
                "max": round(max(best), 4),
                "seeds": seeds,
            }
            if not quiet:
                print(json.dumps({"variant": variant, **out[variant]}), flush=True)
    if not quiet:
        print()
        print(f"{'variant':<14} {'mean':>7} {'median':>7} {'min':>7} {'max':>7}")
        for variant, row in out.items():
            print(
                f"{variant:<14} {row['mean']:7.4f} {row['median']:7.4f} "
                f"{row['min']:7.4f} {row['max']:7.4f}"
            )
    return out


def _cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=20, help="seeds per variant (default 20)")
    main(parser.parse_args(argv).seeds)


if __name__ == "__main__":
    _cli()
