"""PBT on reinforcement learning: PPO on gymnasium's CartPole-v1 (nothing rendered),
tuning the learning rate, entropy coefficient, clip range and discount.

The code is in ``pbtkit.examples.cartpole``; at the end the best member's greedy policy
plays 20 episodes it has never seen.

    pip install 'pbtkit[rl]'
    python examples/cartpole.py                      # 8 members x 12 PPO iterations
    python examples/cartpole.py --population 4 --iterations 8
"""

from __future__ import annotations

import argparse

import numpy as np

from pbtkit.examples import cartpole

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="pbt-cartpole", help="where the run's files go")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument(
        "--iterations", type=int, default=12, help="PPO iterations (1,024 steps) per member"
    )
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    result = cartpole.main(
        args.dir, population=args.population, total_steps=args.iterations, workers=args.workers
    )
    print(result.summary_text())
    assert result.best.checkpoint is not None
    returns = cartpole.evaluate(cartpole.load_policy(result.best.checkpoint), 20, 2_000_000)
    print(f"best member's greedy return over 20 new episodes: {np.mean(returns):.1f}")
