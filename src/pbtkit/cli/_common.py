"""What several commands share: argument types, the device options, the auth key."""

from __future__ import annotations

import argparse
import math
import os
from typing import Any

__all__ = ["add_device_options", "auth_key", "positive_seconds", "seconds", "short"]


def seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"wants a number of seconds >= 0, got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    value = seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("wants a number of seconds > 0")
    return value


def add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        metavar="G",
        help="GPUs per worker: 1, 0.5 (two workers share one), 2, or 0 for the CPU "
        "(default: one each when there are enough, else an equal share; none without GPUs)",
    )
    p.add_argument(
        "--devices",
        metavar="0,1",
        help="the GPUs to share (default: $CUDA_VISIBLE_DEVICES, else those nvidia-smi lists)",
    )


def short(value: Any) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def auth_key(args: argparse.Namespace) -> str | None:
    key = args.auth_key or os.environ.get("PBTKIT_AUTH_KEY")
    return key or None
