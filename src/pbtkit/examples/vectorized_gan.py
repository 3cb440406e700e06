"""The GAN on the ring of 8 Gaussians, the whole population trained in one process.

The task of :mod:`pbtkit.examples.gan` (the same data, networks, Adam optimizers,
non-saturating loss, search space, MMD fitness and binary tournament) trained by
:mod:`pbtkit.torch.vectorized`: every member's generator and discriminator stacked, and
each step two updates in order, as in the ordinary GAN: the discriminator's loss, its
gradient taken with respect to the discriminator only and stepped by its own Adam
(``d_lr``), then the generator's loss against the updated discriminator, stepped by the
generator's Adam (``g_lr``); ``beta1`` goes to both. One checkpoint per member holds
``model={"G", "D"}`` and ``optimizer={"g", "d"}``, exactly as :func:`gan.train
<pbtkit.examples.gan.train>` writes and reads them, so :func:`pbtkit.torch.load` (and the
ordinary example) continue from a vectorized member.

What differs from the ordinary example: a step's real samples and noise depend on the
step only (every member sees the same batch), and the losses are written with
``softplus`` (the same value as ``binary_cross_entropy_with_logits`` against targets 1
and 0), which under ``vmap`` is about seventy times faster per call than that function's
Python decomposition. The fitness is the MMD of :func:`gan.quality
<pbtkit.examples.gan.quality>` with ``n=500`` (its fixed noise and true sample, its
kernels; half its default sample, since the population's ``[P, n, n]`` distance matrices
cost the square of ``n``), computed under ``vmap`` from explicit pairwise squared
distances, beside the energy distance, the modes covered and the fraction of
high-quality samples.

Runs in about a minute on 2 cores: ``python examples/vectorized_gan.py``. Needs
``pip install 'pbtkit[torch]'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pbtkit as pk

try:
    import torch
    from torch import nn
    from torch.nn import functional
except ImportError as _missing:  # pragma: no cover - depends on the environment
    raise pk.ConfigError(
        f"the vectorized GAN example needs PyTorch ({_missing}): pip install 'pbtkit[torch]'"
    ) from _missing

import pbtkit.torch.vectorized as pv
from pbtkit.examples import run_in
from pbtkit.examples.gan import BATCH, CENTERS, MODES, NOISE_DIM, SPACE, STD, sample_real
from pbtkit.examples.gan import _mlp as mlp

__all__ = [
    "EVAL_SAMPLES",
    "SETTINGS",
    "SPACE",
    "TRAINER",
    "d_loss",
    "data",
    "evaluate",
    "g_loss",
    "main",
    "networks",
    "train",
]

#: Samples in the fitness, and the seed of its fixed noise and true sample (gan.quality's).
EVAL_SAMPLES, EVAL_SEED = 500, 12345
_WIDTHS = (0.05, 0.2, 1.0)  # gan.mmd's kernel widths


def data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A step's true samples and noise, from a generator seeded by the step (the same
    for every member and for :func:`train`)."""
    generator = torch.Generator().manual_seed(step)
    real = sample_real(BATCH, generator)
    return real, torch.randn(BATCH, NOISE_DIM, generator=generator)


def networks() -> dict[str, nn.Module]:
    """One member's generator and discriminator (those of :func:`gan.build
    <pbtkit.examples.gan.build>`)."""
    return {"G": mlp(NOISE_DIM, 2), "D": mlp(2, 1)}


def d_loss(model: Mapping[str, Any], batch: tuple[torch.Tensor, ...], hp: Any) -> Any:
    """The discriminator's loss: true points scored 1, generated ones 0."""
    real, noise = batch
    fake = model["G"](noise).detach()
    return (
        functional.softplus(-model["D"](real)).mean() + functional.softplus(model["D"](fake)).mean()
    )


def g_loss(model: Mapping[str, Any], batch: tuple[torch.Tensor, ...], hp: Any) -> Any:
    """The generator's non-saturating loss: its points scored as true by the (updated)
    discriminator."""
    _, noise = batch
    return functional.softplus(-model["D"](model["G"](noise))).mean()


def _squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances (``torch.cdist(x, y) ** 2``, written so ``vmap`` runs it)."""
    inner = x @ y.transpose(-1, -2)
    return ((x * x).sum(-1, keepdim=True) + (y * y).sum(-1).unsqueeze(-2) - 2 * inner).clamp_min(0)


def _reference() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fixed noise and true sample of :func:`gan.quality <pbtkit.examples.gan.quality>`,
    and the terms of the true sample alone (the same for every member): its mean kernel
    value per width and its mean distance."""
    generator = torch.Generator().manual_seed(EVAL_SEED)
    noise = torch.randn(EVAL_SAMPLES, NOISE_DIM, generator=generator)
    real = sample_real(EVAL_SAMPLES, generator)
    real_d = _squared_distances(real, real)
    kernels = torch.stack([torch.exp(-real_d / (2 * w * w)).mean() for w in _WIDTHS])
    return noise, real, kernels, real_d.sqrt().mean()


# Drawn at import, not in evaluate: under vmap a random operation is refused.
_REFERENCE = _reference()


def evaluate(model: Mapping[str, Any], hp: Any) -> dict[str, torch.Tensor]:
    """MMD (the objective, lower is better), energy distance, modes covered and the
    fraction of high-quality samples, as :func:`gan.quality
    <pbtkit.examples.gan.quality>` computes them, in tensor operations ``vmap`` runs."""
    noise, real, real_kernels, real_distance = _REFERENCE
    fake = model["G"](noise)
    fake_d = _squared_distances(fake, fake)
    cross_d = _squared_distances(fake, real)
    mmd = sum(
        torch.exp(-fake_d / (2 * w * w)).mean()
        + real_kernels[i]
        - 2 * torch.exp(-cross_d / (2 * w * w)).mean()
        for i, w in enumerate(_WIDTHS)
    ) / len(_WIDTHS)
    energy = 2 * cross_d.sqrt().mean() - fake_d.sqrt().mean() - real_distance
    nearest, mode = _squared_distances(fake, CENTERS).min(dim=-1)
    good = nearest.sqrt() < 3 * STD
    hits = (mode.unsqueeze(-1) == torch.arange(MODES)) & good.unsqueeze(-1)
    counts = hits.sum(dim=-2)
    return {
        "mmd": torch.as_tensor(mmd),
        "energy": energy,
        "modes": (counts >= EVAL_SAMPLES / MODES / 4).sum().float(),
        "high_quality": good.float().mean(),
    }


TRAINER = pv.VectorizedTrainer(
    model=networks,
    loss={"D": d_loss, "G": g_loss},  # the discriminator's step, then the generator's
    data=data,
    evaluate=evaluate,
    optimizer="adam",
    optimizer_names={"G": "g", "D": "d"},  # g_lr -> the generator's Adam, as in gan.py
    report_every=100,
)

#: The same task one member at a time: a ``train`` for :func:`pbtkit.run` and replay.
train = TRAINER.train_trial

#: 32 members x 1,000 iterations, ready every 200, binary tournament.
SETTINGS: dict[str, Any] = {
    "space": SPACE,
    "metric": "mmd",
    "mode": "min",
    "population": 32,
    "ready_every": 200,
    "total_steps": 1000,
    "exploit": pk.BinaryTournament(),
    "name": "vectorized_gan",
}


def main(directory: str | Path = "pbt-vectorized-gan", **overrides: Any) -> pk.Result:
    """Run :data:`SETTINGS` into ``directory``, every member in this process."""
    return run_in(directory, TRAINER, overrides, runner=pv.run, **SETTINGS)


if __name__ == "__main__":
    result = main()
    print(result.summary_text())
    best = result.best.metrics
    print(
        f"best member: MMD {best['mmd']:.4f}, energy distance {best['energy']:.4f}, "
        f"{best['modes']:.0f} of {MODES} modes, {best['high_quality']:.0%} high-quality samples"
    )
