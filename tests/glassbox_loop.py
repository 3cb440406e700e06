"""One glass-box client process on the PBT paper's toy problem, for the end-to-end tests.

Run as ``python -m tests.glassbox_loop --url URL --config FILE --checkpoint-dir DIR
--steps N`` with the server's key in ``PBTKIT_AUTH_KEY``. theta starts at (0.9, 0.9); one
step is gradient ascent with learning rate 0.01 on ``1.2 - (h0 * t0**2 + h1 * t1**2)``
and the score is ``1.2 - |theta|**2``. Every step saves theta as a new ``.npy`` and calls
``save(path, score, loaded_from=donor)``, where ``donor`` is the member whose checkpoint
this trial started from (-1 for its own weights). The last line on stdout is JSON: the
member, every path saved, and every donor checkpoint loaded, so the test can check the
server's records against what the client really did.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from pbtkit.examples.toy import LEARNING_RATE, score
from pbtkit.service import PBTClient


def loop(url: str, config: str, checkpoint_dir: Path, steps: int) -> dict[str, Any]:
    """Train as one member until the server says done (or, as a guard, ``10 * steps`` saves:
    a member that copies a donor behind it trains some steps again)."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    saved: list[str] = []
    loaded: list[dict[str, Any]] = []
    with PBTClient(url, None, os.environ["PBTKIT_AUTH_KEY"], config) as client:
        theta = np.array([0.9, 0.9])
        hp = client.hyperparameters()
        loaded_from = -1
        step = 0
        while not client.done and step < 10 * steps:
            h = np.array([hp["h0"], hp["h1"]])
            theta = theta + LEARNING_RATE * (-2.0 * h * theta)
            step += 1
            path = checkpoint_dir / f"member-{client.member}-step-{step:03d}.npy"
            np.save(path, theta)
            client.save(path, score(theta), loaded_from=float(loaded_from))
            saved.append(str(path))
            loaded_from = -1
            if client.should_exploit():
                donor = client.exploit()
                donor_path = client.parameters_path()
                assert donor is not None
                assert donor_path is not None
                theta = np.load(donor_path, allow_pickle=False)
                hp = client.explore()
                loaded_from = donor
                loaded.append(
                    {"step": step, "donor": donor, "path": donor_path, "theta": theta.tolist()}
                )
        return {"member": client.member, "done": client.done, "saved": saved, "loaded": loaded}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint-dir", required=True, type=Path)
    parser.add_argument("--steps", required=True, type=int)
    args = parser.parse_args()
    print(json.dumps(loop(args.url, args.config, args.checkpoint_dir, args.steps)))


if __name__ == "__main__":
    main()
