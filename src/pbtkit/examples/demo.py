"""``pbtkit demo``: the PBT paper's toy problem, then digits with noisy labels."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from pbtkit._extras import missing
from pbtkit.result import Result

__all__ = ["command", "main"]


def command() -> str:
    """How to call ``pbtkit`` from this shell: ``pbtkit`` when that is this installation's,
    else its path (``.venv/bin/pbtkit`` after ``make demo`` in a shell without the venv)."""
    mine = Path(sys.executable).parent / "pbtkit"
    found = shutil.which("pbtkit")
    if found and Path(found).resolve() == mine.resolve():
        return "pbtkit"
    try:
        return os.path.relpath(mine)
    except ValueError:  # another drive (Windows)
        return str(mine)


def _shown(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _report(title: str, result: Result, seconds: float) -> None:
    print(f"\n== {title} ({seconds:.1f} s) ==")
    print(result.summary_text())
    print("hyperparameter schedule of the best member (step: values):")
    for step, values in result.schedule().changes():
        shown = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
        )
        print(f"  {step:>4}: {shown}")


def main(
    directory: str | Path = "pbt-demo", *, quick: bool = False, progress: bool | None = None
) -> int:
    """Run both examples into ``directory``; running it again shows the stored results."""
    from pbtkit.examples import digits, toy

    directory = Path(directory)
    suffix = "-quick" if quick else ""
    started = time.perf_counter()
    tensorboard = not missing("tensorboard")  # written when tensorboardX is installed
    result = toy.main(
        directory,
        progress=progress,
        tensorboard=tensorboard,
        name=f"toy{suffix}",
        **({"population": 4, "total_steps": 40} if quick else {}),
    )
    _report(
        "toy problem of the PBT paper: maximise Q = 1.2 - |theta|^2",
        result,
        time.perf_counter() - started,
    )
    initial = [t.hparams for t in result.trials if t.generation == 0]
    print(
        f"the same members without PBT (each keeps its own h) reach at best Q = "
        f"{toy.without_pbt(initial, result.spec.policy.total_steps):.4f}"
    )
    started = time.perf_counter()
    result = digits.main(
        directory,
        progress=progress,
        tensorboard=tensorboard,
        name=f"digits{suffix}",
        **({"population": 4, "total_steps": 4} if quick else {}),
    )
    _report(
        "digits, 30% noisy labels, MLP: maximise validation accuracy",
        result,
        time.perf_counter() - started,
    )
    print(f"test accuracy of the best member: {result.best.metrics['test_accuracy']:.3f}")
    pbtkit = command()
    db = _shown(directory / "pbt.db")
    print(f"\nstate and checkpoints are in {directory.resolve()}; look at them with")
    print(f"  {pbtkit} status --storage {db} --experiment digits{suffix}")
    print(f"  {pbtkit} best --storage {db} --experiment digits{suffix}")
    print(f"  {pbtkit} replay --storage {db} --experiment digits{suffix}   # the winning schedule")
    paths = "--paths theta0,theta1"
    if missing("plot"):
        print("  (for plots: pip install 'pbtkit[plot]')")
    else:
        print(f"  {pbtkit} plot --storage {db} --experiment toy{suffix} --out plots {paths}")
    if missing("dashboard"):
        print("  (for the live dashboard: pip install 'pbtkit[dashboard]')")
    else:
        print(f"  {pbtkit} dashboard --storage {db}   # then open http://127.0.0.1:8766/dashboard")
    if (directory / "tensorboard").is_dir():
        print(f"  tensorboard --logdir {_shown(directory / 'tensorboard')}")
    else:
        print("  (for TensorBoard files: pip install 'pbtkit[tensorboard]' tensorboard, run the")
        print(
            "   demo again, then: tensorboard --logdir " + _shown(directory / "tensorboard") + ")"
        )
    return 0
