"""A population of 32 GANs on the ring of 8 Gaussians trained in one process.

Every member's generator and discriminator are stacked and trained together through
torch.func.vmap: each step the discriminator's update with its own Adam (d_lr), then the
generator's against the updated discriminator with its own Adam (g_lr), beta1 shared;
fitness is the MMD to the true distribution, selection a binary tournament. Each
member's checkpoint is an ordinary pbtkit.torch checkpoint. The code is in
``pbtkit.examples.vectorized_gan``.

    pip install 'pbtkit[torch]'
    python examples/vectorized_gan.py                    # 32 members x 1,000 iterations
    python examples/vectorized_gan.py --population 16 --steps 600
"""

from __future__ import annotations

import argparse

from pbtkit.examples import gan, vectorized_gan

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="pbt-vectorized-gan", help="where the run's files go")
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1000, help="iterations per member")
    args = parser.parse_args()
    result = vectorized_gan.main(args.dir, population=args.population, total_steps=args.steps)
    print(result.summary_text())
    best = result.best.metrics
    print(
        f"best member: MMD {best['mmd']:.4f}, energy distance {best['energy']:.4f}, "
        f"{best['modes']:.0f} of {gan.MODES} modes, "
        f"{best['high_quality']:.0%} high-quality samples"
    )
