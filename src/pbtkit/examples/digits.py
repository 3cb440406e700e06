"""A small neural network on scikit-learn's bundled digits, 30% of training labels noisy.

Tunes learning rate, momentum and L2 of a one-hidden-layer MLP (numpy, SGD with
momentum). One step is one epoch. The objective is validation accuracy; test accuracy is
reported beside it for the member that wins. Checkpoints are ``.npz`` files holding the
weights and the momentum buffers, so an exploit hands over the optimizer state too; they
are loaded with ``allow_pickle=False``.

``main(optimizers=True)`` (``python -m pbtkit.examples.digits --optimizers``) searches
:data:`OPTIMIZER_SPACE` instead: a conditional choice between SGD with momentum and Adam
with its two betas. ``momentum`` exists only for SGD and ``beta1``/``beta2`` only for Adam,
so a member's hyperparameters hold one set or the other; an exploit or an explore that
switches the optimizer brings in the other set and drops the first. A switch starts the new
optimizer's state afresh, as building a new optimizer would.

Needs scikit-learn for the data only: ``pip install 'pbtkit[examples]'``.
"""

from __future__ import annotations

import argparse
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

import pbtkit as pk
from pbtkit.examples import run_in

HIDDEN = 64
BATCH = 32
NOISE = 0.3
SPACE = {
    "lr": pk.LogUniform(1e-4, 1.0),
    "momentum": pk.Uniform(0.0, 0.99),
    "l2": pk.LogUniform(1e-6, 0.1),
}
_OPTIMIZERS = ("sgd", "adam")
#: The conditional space: SGD with momentum, or Adam with its betas.
OPTIMIZER_SPACE = {
    "optimizer": pk.Choice(_OPTIMIZERS),
    "lr": pk.LogUniform(1e-4, 1.0),
    "momentum": pk.Uniform(0.0, 0.99, when={"optimizer": "sgd"}),
    "beta1": pk.Uniform(0.5, 0.999, when={"optimizer": "adam"}),
    "beta2": pk.Uniform(0.9, 0.9999, when={"optimizer": "adam"}),
    "l2": pk.LogUniform(1e-6, 0.1),
}
_PARAMS = ("w1", "b1", "w2", "b2")

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@cache
def load_data(seed: int = 0) -> Data:
    """Digits split 60/20/20 into train/validation/test, with 30% of train labels random."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise pk.ConfigError(
            "the digits example needs scikit-learn: pip install 'pbtkit[examples]'"
        ) from exc
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float64) / 16.0
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    n_train, n_val = int(0.6 * len(x)), int(0.2 * len(x))
    x_train, y_train = x[:n_train], y[:n_train].copy()
    noisy = rng.random(n_train) < NOISE
    y_train[noisy] = rng.integers(0, 10, noisy.sum())
    return (
        x_train,
        y_train,
        x[n_train : n_train + n_val],
        y[n_train : n_train + n_val],
        x[n_train + n_val :],
        y[n_train + n_val :],
    )


def init_params(rng: np.random.Generator, n_in: int = 64, n_out: int = 10) -> dict[str, np.ndarray]:
    """Glorot-initialised weights and zero momentum buffers."""
    params = {
        "w1": rng.normal(0, np.sqrt(2.0 / (n_in + HIDDEN)), (n_in, HIDDEN)),
        "b1": np.zeros(HIDDEN),
        "w2": rng.normal(0, np.sqrt(2.0 / (HIDDEN + n_out)), (HIDDEN, n_out)),
        "b2": np.zeros(n_out),
    }
    params.update({f"v_{k}": np.zeros_like(params[k]) for k in _PARAMS})
    return params


def forward(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hidden activations and class probabilities."""
    hidden = np.tanh(x @ p["w1"] + p["b1"])
    logits = hidden @ p["w2"] + p["b2"]
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return hidden, probs


def accuracy(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of correct predictions."""
    return float(np.mean(forward(p, x)[1].argmax(axis=1) == y))


def use_optimizer(p: dict[str, np.ndarray], optimizer: str) -> None:
    """Start ``optimizer``'s state afresh unless the weights were last trained with it.

    SGD keeps momentum buffers ``v_*``; Adam its moments ``m_*``, ``s_*`` and a step count.
    """
    last = str(p["optimizer"]) if "optimizer" in p else "sgd"
    if optimizer == last and (optimizer == "sgd" or "adam_t" in p):
        return
    for k in _PARAMS:
        if optimizer == "sgd":
            p[f"v_{k}"] = np.zeros_like(p[k])
        else:
            p[f"m_{k}"] = np.zeros_like(p[k])
            p[f"s_{k}"] = np.zeros_like(p[k])
    if optimizer == "adam":
        p["adam_t"] = np.zeros(())
    p["optimizer"] = np.array(optimizer)


def epoch(
    p: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    hp: dict[str, Any],
    rng: np.random.Generator,
) -> float:
    """One epoch of minibatch SGD with momentum (or Adam, when ``hp["optimizer"]`` says so)
    and L2; returns the mean training loss."""
    adam = hp.get("optimizer", "sgd") == "adam"
    lr, l2 = float(hp["lr"]), float(hp["l2"])
    losses = []
    order = rng.permutation(len(x))
    for start in range(0, len(x), BATCH):
        batch = order[start : start + BATCH]
        xb, yb = x[batch], y[batch]
        hidden, probs = forward(p, xb)
        losses.append(float(-np.mean(np.log(probs[np.arange(len(yb)), yb] + 1e-12))))
        delta = probs.copy()
        delta[np.arange(len(yb)), yb] -= 1.0
        delta /= len(yb)
        grads = {"w2": hidden.T @ delta, "b2": delta.sum(axis=0)}
        back = (delta @ p["w2"].T) * (1.0 - hidden**2)
        grads["w1"] = xb.T @ back
        grads["b1"] = back.sum(axis=0)
        if adam:
            p["adam_t"] = p["adam_t"] + 1.0
        for k in _PARAMS:
            g = grads[k] + (l2 * p[k] if k.startswith("w") else 0.0)
            if adam:
                b1, b2, t = float(hp["beta1"]), float(hp["beta2"]), float(p["adam_t"])
                p[f"m_{k}"] = b1 * p[f"m_{k}"] + (1.0 - b1) * g
                p[f"s_{k}"] = b2 * p[f"s_{k}"] + (1.0 - b2) * g**2
                step = (p[f"m_{k}"] / (1.0 - b1**t)) / (np.sqrt(p[f"s_{k}"] / (1.0 - b2**t)) + 1e-8)
                p[k] = p[k] - lr * step
            else:
                p[f"v_{k}"] = float(hp["momentum"]) * p[f"v_{k}"] - lr * g
                p[k] = p[k] + p[f"v_{k}"]
    return float(np.mean(losses))


def train(trial: pk.Trial) -> None:
    """Train the trial's epochs from the parent checkpoint; report loss and accuracies."""
    x_train, y_train, x_val, y_val, x_test, y_test = load_data()
    if trial.parent_checkpoint is not None:
        with np.load(trial.parent_checkpoint / "model.npz", allow_pickle=False) as saved:
            # as saved, or shrunk and perturbed after an exploit with ShrinkPerturb
            params = trial.inherited({k: saved[k] for k in saved.files})
    else:
        params = init_params(np.random.default_rng(trial.member))
    hp = dict(trial.hparams)  # momentum, or beta1 and beta2: only the active ones are there
    if "optimizer" in hp:
        use_optimizer(params, str(hp["optimizer"]))
    for step in trial.steps():
        rng = np.random.default_rng([trial.member, step])
        loss = epoch(params, x_train, y_train, hp, rng)
        trial.report(step, loss=loss)
    trial.report(
        trial.last_step,
        accuracy=accuracy(params, x_val, y_val),
        test_accuracy=accuracy(params, x_test, y_test),
    )
    np.savez(trial.checkpoint_dir / "model.npz", **params)


def main(
    directory: str | Path = "pbt-demo", *, progress: bool | None = None, **overrides: object
) -> pk.Result:
    """8 members x 16 epochs, ready every 2 epochs, as in docs/benchmarks.md, item 3.

    Args:
        directory: Where the database and the checkpoints go.
        progress: Show progress (None: when the output is a terminal).
        overrides: Settings of :func:`pbtkit.run` that replace the example's; and
            ``optimizers=True`` to search :data:`OPTIMIZER_SPACE` (SGD with momentum or
            Adam with its betas) instead of :data:`SPACE`, as the experiment
            ``digits-optimizers``.
    """
    optimizers = bool(overrides.pop("optimizers", False))
    if optimizers:
        overrides = {"name": "digits-optimizers", **overrides}
    return run_in(
        directory,
        train,
        overrides,
        space=OPTIMIZER_SPACE if optimizers else SPACE,
        metric="accuracy",
        mode="max",
        population=8,
        workers=2,
        ready_every=2,
        total_steps=16,
        exploit=pk.Truncation(0.25),
        name="digits",
        progress=progress,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--optimizers", action="store_true", help="choose SGD (momentum) or Adam (betas) too"
    )
    result = main(optimizers=parser.parse_args().optimizers)
    print(result.summary_text())
    print(f"test accuracy of the best member: {result.best.metrics['test_accuracy']:.3f}")
