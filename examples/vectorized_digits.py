"""A population of 32 digits MLPs trained in one process, as one computation.

Every member's parameters are stacked and trained together through torch.func.vmap, each
with its own learning rate, momentum, weight decay and label smoothing; PBT decides as in
any run and each member's checkpoint is an ordinary pbtkit.torch checkpoint. The code is
in ``pbtkit.examples.vectorized_digits``.

    pip install 'pbtkit[torch,examples]'
    python examples/vectorized_digits.py                    # 32 members x 400 steps
    python examples/vectorized_digits.py --population 8 --steps 200
"""

from __future__ import annotations

import argparse

from pbtkit.examples import vectorized_digits

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="pbt-vectorized-digits", help="where the run's files go")
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--steps", type=int, default=400, help="minibatch steps per member")
    args = parser.parse_args()
    result = vectorized_digits.main(args.dir, population=args.population, total_steps=args.steps)
    print(result.summary_text())
    print(f"test accuracy of the best member: {result.best.metrics['test_accuracy']:.3f}")
