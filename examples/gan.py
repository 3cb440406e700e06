"""PBT on a GAN: the ring of 8 Gaussians, generator and discriminator each with its own
Adam and learning rate; an exploit copies both networks and both optimizers.

Fitness is the MMD between generated and true samples (lower is better); the modes
covered and the fraction of high-quality samples are reported beside it. The code is in
``pbtkit.examples.gan``.

    pip install 'pbtkit[torch]'
    python examples/gan.py                           # 8 members x 3,000 iterations
    python examples/gan.py --population 4 --iterations 1000
"""

from __future__ import annotations

import argparse

from pbtkit.examples import gan

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="pbt-gan", help="where the run's files go")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=3000, help="iterations per member")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    result = gan.main(
        args.dir, population=args.population, total_steps=args.iterations, workers=args.workers
    )
    print(result.summary_text())
    best = result.best.metrics
    print(
        f"best member: MMD {best['mmd']:.4f}, energy distance {best['energy']:.4f}, "
        f"{best['modes']:.0f} of {gan.MODES} modes, {best['high_quality']:.0%} high-quality"
    )
