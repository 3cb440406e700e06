"""A GAN on the ring of 8 Gaussians, generator and discriminator each with its own optimizer.

The data: 8 Gaussians (standard deviation 0.05) on a circle of radius 2, the classic test
of mode collapse. The generator maps 8-dimensional noise to the plane, the discriminator
scores points; both are two-hidden-layer MLPs trained with Adam and the non-saturating
loss. PBT tunes each network's learning rate (``g_lr``, ``d_lr``) and Adam's ``beta1``
(shared). One step is one iteration: a discriminator update and a generator update on a
batch of 256.

Fitness: the maximum mean discrepancy (MMD, Gaussian kernels of widths 0.05, 0.2 and 1)
between 1,000 generated points and 1,000 points of the true distribution, lower is better;
it punishes both missing modes and blurred ones. Beside it each trial reports the energy
distance, the number of modes covered (a mode holds at least a quarter of its fair share
of the samples within 3 standard deviations of its centre) and the fraction of such
high-quality samples.

As in the PBT paper's GAN experiments, selection is a binary tournament, and an exploit
copies both networks and both optimizers (their Adam moments): one checkpoint holds
``model={"G": ..., "D": ...}`` and ``optimizer={"g": ..., "d": ...}``, and
:func:`pbtkit.torch.load` puts ``g_lr`` into the generator's optimizer and ``d_lr`` into
the discriminator's by their names.

Runs in a few minutes on 2 cores: ``python examples/gan.py``. Needs
``pip install 'pbtkit[torch]'``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pbtkit as pk
from pbtkit.examples import run_in

try:
    import torch
    from torch import nn
except ImportError as _missing:  # pragma: no cover - depends on the environment
    raise pk.ConfigError(
        f"the GAN example needs PyTorch ({_missing}): pip install 'pbtkit[torch]'"
    ) from _missing

import pbtkit.torch as pt

__all__ = [
    "SETTINGS",
    "SPACE",
    "build",
    "energy_distance",
    "main",
    "mmd",
    "quality",
    "sample_real",
    "train",
]

RADIUS, STD, MODES = 2.0, 0.05, 8
NOISE_DIM, HIDDEN, BATCH = 8, 64, 256
REPORT_EVERY = 100
SPACE = {
    "g_lr": pk.LogUniform(1e-4, 1e-2),
    "d_lr": pk.LogUniform(1e-4, 1e-2),
    "beta1": pk.Uniform(0.0, 0.9),
}

CENTERS = torch.tensor(
    [
        [RADIUS * math.cos(2 * math.pi * k / MODES), RADIUS * math.sin(2 * math.pi * k / MODES)]
        for k in range(MODES)
    ]
)


def sample_real(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` points of the true distribution."""
    modes = torch.randint(0, MODES, (n,), generator=generator)
    return CENTERS[modes] + STD * torch.randn(n, 2, generator=generator)


def _mlp(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
        nn.Linear(HIDDEN, n_out),
    )  # fmt: skip


def build(
    hparams: dict[str, Any], device: str | torch.device = "cpu", *, seed: int = 0
) -> tuple[dict[str, nn.Module], dict[str, torch.optim.Optimizer]]:
    """Fresh networks ``{"G", "D"}`` (initialised from ``seed``) and their Adam
    optimizers ``{"g", "d"}``, from ``hparams``."""
    torch.manual_seed(seed)
    nets: dict[str, nn.Module] = {"G": _mlp(NOISE_DIM, 2).to(device), "D": _mlp(2, 1).to(device)}
    betas = (float(hparams["beta1"]), 0.999)
    optimizers: dict[str, torch.optim.Optimizer] = {
        "g": torch.optim.Adam(nets["G"].parameters(), lr=float(hparams["g_lr"]), betas=betas),
        "d": torch.optim.Adam(nets["D"].parameters(), lr=float(hparams["d_lr"]), betas=betas),
    }
    return nets, optimizers


def mmd(x: torch.Tensor, y: torch.Tensor, widths: tuple[float, ...] = (0.05, 0.2, 1.0)) -> float:
    """Squared maximum mean discrepancy with Gaussian kernels, averaged over ``widths``."""
    dxx, dyy, dxy = torch.cdist(x, x) ** 2, torch.cdist(y, y) ** 2, torch.cdist(x, y) ** 2
    total = 0.0
    for w in widths:
        k = lambda d, w=w: torch.exp(-d / (2 * w * w)).mean()  # noqa: E731
        total += float(k(dxx) + k(dyy) - 2 * k(dxy))
    return total / len(widths)


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """The energy distance between two samples."""
    return float(2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean())


@torch.no_grad()
def quality(generator_net: nn.Module, n: int = 1000, seed: int = 12345) -> dict[str, float]:
    """MMD, energy distance, modes covered and high-quality fraction of ``n`` samples
    (fixed noise and a fixed true sample, so members are compared on the same draw)."""
    device = next(generator_net.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    fake = generator_net(torch.randn(n, NOISE_DIM, generator=gen).to(device)).cpu()
    real = sample_real(n, gen)
    nearest = torch.cdist(fake, CENTERS).min(dim=1)
    good = nearest.values < 3 * STD
    counts = torch.bincount(nearest.indices[good], minlength=MODES)
    return {
        "mmd": mmd(fake, real),
        "energy": energy_distance(fake, real),
        "modes": float((counts >= n / MODES / 4).sum()),
        "high_quality": float(good.float().mean()),
    }


def train(
    trial: pk.Trial,
    *,
    on_loaded: Callable[[pk.Trial, dict[str, nn.Module], dict[str, Any]], None] | None = None,
) -> None:
    """Train the trial's iterations from its parent checkpoint; report losses and quality.

    Args:
        trial: The trial.
        on_loaded: Called with the networks and optimizers right after loading (the
            tests record what an exploit copied).
    """
    nets, optimizers = build(trial.hparams, trial.device, seed=trial.member)
    pt.load(trial, model=nets, optimizer=optimizers)  # g_lr -> "g", d_lr -> "d", beta1 -> both
    if on_loaded is not None:
        on_loaded(trial, nets, optimizers)
    g_net, d_net = nets["G"], nets["D"]
    gen = torch.Generator().manual_seed(trial.member * 1_000_003 + trial.start_step)
    bce = nn.functional.binary_cross_entropy_with_logits
    ones = torch.ones(BATCH, 1, device=trial.device)
    zeros = torch.zeros(BATCH, 1, device=trial.device)
    d_sum = g_sum = 0.0
    for step in trial.steps():
        real = sample_real(BATCH, gen).to(trial.device)
        fake = g_net(torch.randn(BATCH, NOISE_DIM, generator=gen).to(trial.device))
        optimizers["d"].zero_grad(set_to_none=True)
        d_loss = bce(d_net(real), ones) + bce(d_net(fake.detach()), zeros)
        d_loss.backward()
        optimizers["d"].step()
        optimizers["g"].zero_grad(set_to_none=True)
        g_loss = bce(d_net(fake), ones)
        g_loss.backward()
        optimizers["g"].step()
        d_sum += d_loss.item()
        g_sum += g_loss.item()
        if (step + 1) % REPORT_EVERY == 0:
            trial.report(step, d_loss=d_sum / REPORT_EVERY, g_loss=g_sum / REPORT_EVERY)
            d_sum = g_sum = 0.0
    trial.report(trial.last_step, **quality(g_net))
    pt.save(trial, model=nets, optimizer=optimizers)


#: The run's settings: 8 members x 3,000 iterations, ready every 500, binary tournament.
SETTINGS: dict[str, Any] = {
    "space": SPACE,
    "metric": "mmd",
    "mode": "min",
    "population": 8,
    "workers": 2,
    "ready_every": 500,
    "total_steps": 3000,
    "exploit": pk.BinaryTournament(),
    "name": "gan",
}


def main(
    directory: str | Path = "pbt-gan", *, progress: bool | None = None, **overrides: Any
) -> pk.Result:
    """Run :data:`SETTINGS` into ``directory`` (``overrides`` win)."""
    return run_in(directory, train, overrides, progress=progress, **SETTINGS)


if __name__ == "__main__":
    result = main()
    print(result.summary_text())
    best = result.best.metrics
    print(
        f"best member: MMD {best['mmd']:.4f}, energy distance {best['energy']:.4f}, "
        f"{best['modes']:.0f} of {MODES} modes, {best['high_quality']:.0%} high-quality samples"
    )
