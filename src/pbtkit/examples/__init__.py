"""Examples that ship with pbtkit; ``pbtkit demo`` runs them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pbtkit as pk

__all__ = ["run_in"]


def run_in(
    directory: str | Path,
    train: Any,
    overrides: dict[str, Any],
    *,
    runner: Callable[..., pk.Result] | None = None,
    **settings: Any,
) -> pk.Result:
    """Run an example with its state and checkpoints in ``directory``; ``overrides`` win.

    ``runner(train, **settings)`` runs it: :func:`pbtkit.run` (default) with a training
    function, or :func:`pbtkit.torch.vectorized.run` with a trainer."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    settings["storage"] = f"sqlite:///{directory / 'pbt.db'}"
    settings["checkpoint_dir"] = directory / "checkpoints"
    settings.update(overrides)
    return (runner or pk.run)(train, **settings)
