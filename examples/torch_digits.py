"""PBT on a small PyTorch CNN: scikit-learn's digits, 30% of the training labels noisy.

Tunes learning rate, momentum, weight decay, dropout and batch size (an ordinal) of an
SGD-trained CNN; checkpoints through pbtkit.torch, which puts each exploit's explored
values into the optimizer. The code is in ``pbtkit.examples.torch_digits``.

    pip install 'pbtkit[torch,examples]'
    python examples/torch_digits.py                  # 8 members x 16 epochs, about a minute
    python examples/torch_digits.py --population 4 --epochs 6
"""

from __future__ import annotations

import argparse

from pbtkit.examples import torch_digits

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="pbt-torch-digits", help="where the run's files go")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=16, help="epochs per member")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    result = torch_digits.main(
        args.dir, population=args.population, total_steps=args.epochs, workers=args.workers
    )
    print(result.summary_text())
    print(f"test accuracy of the best member: {result.best.metrics['test_accuracy']:.3f}")
