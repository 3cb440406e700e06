"""Examples that ship with pbtkit; ``pbtkit demo`` runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pbtkit as pk

__all__ = ["run_in"]


def run_in(
    directory: str | Path, train: pk.worker.TrainFn, overrides: dict[str, Any], **settings: Any
) -> pk.Result:
    """Run an example with its state and checkpoints in ``directory``; ``overrides`` win."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    settings["storage"] = f"sqlite:///{directory / 'pbt.db'}"
    settings["checkpoint_dir"] = directory / "checkpoints"
    settings.update(overrides)
    return pk.run(train, **settings)
