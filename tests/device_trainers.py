"""Training functions that record what each worker process sees: its GPUs, device,
index and threads. Module-level, so worker processes can import them."""

from __future__ import annotations

import json
import os

import pbtkit as pk


def record_placement(trial: pk.Trial) -> None:
    """Append one JSON line per trial to $PBTKIT_TEST_LOG: pid, worker, device, env."""
    import torch

    line = {
        "pid": os.getpid(),
        "trial": trial.trial_id,
        "worker": trial.worker,
        "device": trial.device,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "mkl": os.environ.get("MKL_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
    }
    with open(os.environ["PBTKIT_TEST_LOG"], "a") as f:
        f.write(json.dumps(line) + "\n")
    for step in trial.steps():
        trial.report(step, score=float(trial.hparams["x"]) * (step + 1))
