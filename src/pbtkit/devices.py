"""Which GPUs and how many CPU threads each local worker process gets.

A run with ``workers`` local worker processes shares the machine's GPUs and cores among
them. :func:`plan_devices` decides once, in the driver, and :meth:`DevicePlan.env` gives
each worker (by its index, ``0 .. workers - 1``) the environment it starts with:

- ``CUDA_VISIBLE_DEVICES``: the GPU(s) of that worker, so ``cuda:0`` inside it is its own
  GPU. At ``gpus_per_worker=0.5`` two workers share one GPU; at ``2`` a worker sees two.
  At ``0`` it is empty: the worker sees no GPU and trains on the CPU.
- ``PBTKIT_DEVICE`` and ``PBTKIT_WORKER_INDEX``: read back as ``trial.device``
  (``"cuda:0"`` or ``"cpu"``) and ``trial.worker``.
- ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``: ``cores // workers`` (at least 1), unless
  they are set already, so that two workers do not fight over the same cores (PyTorch,
  numpy and scikit-learn all read them when they start).

The GPUs are found without importing PyTorch in the driver (importing it there would take
seconds and initialise CUDA in a process that trains nothing): ``CUDA_VISIBLE_DEVICES`` if
it is set, else ``nvidia-smi``'s list, else PyTorch's count when the driver has imported
it already; none on a machine without them. The GPUs are named by their index (or UUID)
as CUDA numbers them; when the list came from ``nvidia-smi``, which numbers them by PCI
bus, the workers also get ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` (unless it is set) so that the
two numberings agree.
"""

from __future__ import annotations

import math
import numbers
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pbtkit._exceptions import ConfigError

__all__ = [
    "DevicePlan",
    "assign_gpus",
    "available_cores",
    "check_gpus_per_worker",
    "current_device",
    "current_worker",
    "plan_devices",
    "single_worker_env",
    "visible_gpus",
]

DEVICE_VAR = "PBTKIT_DEVICE"
WORKER_VAR = "PBTKIT_WORKER_INDEX"
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers restrict)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _nvidia_smi() -> tuple[str, ...] | None:
    """GPU indices as ``nvidia-smi`` lists them, or None if it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return tuple(line.strip() for line in out.splitlines() if line.strip())


def visible_gpus(environ: Mapping[str, str] | None = None) -> tuple[tuple[str, ...], str]:
    """The GPUs this process may use, and how they were found.

    Args:
        environ: The environment to read (default: ``os.environ``).

    Returns:
        ``(ids, source)``: the CUDA ids (``"0"``, ``"1"`` or ``"GPU-<uuid>"``) and one of
        ``"CUDA_VISIBLE_DEVICES"``, ``"nvidia-smi"``, ``"torch"`` or ``"none"``.
    """
    env = os.environ if environ is None else environ
    declared = env.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        ids: list[str] = []
        for part in (p.strip() for p in declared.split(",")):
            # CUDA stops at the first invalid entry ("-1" is the usual way to hide all).
            if not part or part.startswith("-"):
                break
            ids.append(part)
        return tuple(ids), "CUDA_VISIBLE_DEVICES"
    found = _nvidia_smi()
    if found is not None:
        return found, "nvidia-smi"
    torch = sys.modules.get("torch")
    if torch is not None:  # only when the driver imported it already: it is slow to import
        try:
            count = int(torch.cuda.device_count())
        except Exception:  # pragma: no cover - a broken CUDA install counts as none
            count = 0
        return tuple(str(i) for i in range(count)), "torch"
    return (), "none"


def check_gpus_per_worker(value: Any) -> float:
    """``value`` as a number of GPUs per worker: 0, a fraction below 1, or a whole number.

    Raises:
        ConfigError: It is not a finite number >= 0, or a fraction above 1.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(
            f"gpus_per_worker must be a number >= 0 (1, 0.5, 2; 0 for the CPU), got {value!r}"
        )
    number = float(value)
    if number < 0:
        raise ConfigError(f"gpus_per_worker must be >= 0 (0 trains on the CPU), got {value!r}")
    if number > 1 and not number.is_integer():
        raise ConfigError(
            f"gpus_per_worker={value!r}: above 1 a worker takes whole GPUs; pass 2, 3, ... "
            "(or a fraction below 1 to share one GPU among workers)"
        )
    return number


def _device_ids(devices: Iterable[Any] | str) -> tuple[str, ...]:
    if isinstance(devices, str):
        items: list[Any] = [p for p in (s.strip() for s in devices.split(",")) if p]
    else:
        try:
            items = list(devices)
        except TypeError:
            raise ConfigError(
                f"devices must be a list of GPU ids such as [0, 1] or '0,1', got {devices!r}"
            ) from None
    ids: list[str] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | str) or str(item).strip() == "":
            raise ConfigError(
                f"devices must hold GPU indices or UUIDs such as 0, 1 or 'GPU-8f3e...', "
                f"got {item!r}"
            )
        text = str(item).strip()
        if text.startswith("cuda:"):  # a torch device name: its index is what CUDA wants
            text = text[len("cuda:") :]
        if text.startswith("-") or "," in text:
            raise ConfigError(f"devices: {item!r} is not a GPU index or UUID")
        ids.append(text)
    if len(set(ids)) != len(ids):
        raise ConfigError(f"devices names a GPU twice: {ids}")
    return tuple(ids)


def assign_gpus(index: int, gpus_per_worker: float, devices: tuple[str, ...]) -> tuple[str, ...]:
    """The GPUs worker ``index`` gets: ``gpus_per_worker`` of ``devices``, or a share of one.

    Whole GPUs are dealt out in order (worker 0 gets the first ``g``, worker 1 the next
    ``g``, ...); a fraction ``g < 1`` puts ``floor(1 / g)`` workers on each GPU (0 and 1 on
    the first at 0.5, 2 and 3 on the second, ...).

    Raises:
        ConfigError: Worker ``index`` would need a GPU beyond ``devices``.
    """
    if gpus_per_worker == 0:
        return ()
    if gpus_per_worker < 1:
        per_gpu = math.floor(1.0 / gpus_per_worker + 1e-9)
        slot = index // per_gpu
        if slot >= len(devices):
            raise ConfigError(
                f"worker {index} would need GPU number {slot + 1} at gpus_per_worker="
                f"{gpus_per_worker:g} ({per_gpu} workers per GPU), but devices lists "
                f"{len(devices)}: {', '.join(devices) or 'none'}"
            )
        return (devices[slot],)
    take = int(gpus_per_worker)
    first = index * take
    if first + take > len(devices):
        raise ConfigError(
            f"worker {index} would need GPUs {first + 1}..{first + take} at gpus_per_worker="
            f"{take}, but devices lists {len(devices)}: {', '.join(devices) or 'none'}"
        )
    return devices[first : first + take]


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """How the local workers of one run share the GPUs and the cores.

    Attributes:
        workers: How many workers share them.
        gpus_per_worker: GPUs per worker: 0 (CPU), a fraction below 1 (shared), or whole.
        devices: The GPUs shared out (CUDA ids).
        source: How ``devices`` was found: ``"devices"`` (given), ``"CUDA_VISIBLE_DEVICES"``,
            ``"nvidia-smi"``, ``"torch"`` or ``"none"``.
        threads: CPU threads per worker for ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``, or
            None where the user set them.
    """

    workers: int
    gpus_per_worker: float
    devices: tuple[str, ...]
    source: str
    threads: int | None

    def gpus(self, index: int) -> tuple[str, ...]:
        """The GPUs of worker ``index`` (empty on the CPU)."""
        return assign_gpus(index, self.gpus_per_worker, self.devices)

    def env(self, index: int) -> dict[str, str]:
        """The environment variables worker ``index`` starts with (see the module docs)."""
        gpus = self.gpus(index)
        env = {
            "CUDA_VISIBLE_DEVICES": ",".join(gpus),
            DEVICE_VAR: "cuda:0" if gpus else "cpu",
            WORKER_VAR: str(index),
        }
        if gpus and self.source == "nvidia-smi" and "CUDA_DEVICE_ORDER" not in os.environ:
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        if self.threads is not None:
            env.update(dict.fromkeys(_THREAD_VARS, str(self.threads)))
        return env

    def describe(self) -> str:
        """One line saying what each worker gets, for logs and ``pbtkit run``."""
        threads = (
            f"{self.threads} CPU thread{'s' if self.threads != 1 else ''} each"
            if self.threads is not None
            else "CPU threads as OMP_NUM_THREADS/MKL_NUM_THREADS say"
        )
        if self.gpus_per_worker == 0:
            where = "on the CPU" + (
                f" (GPUs {','.join(self.devices)} left unused)" if self.devices else ""
            )
        else:
            unit = "GPUs" if self.gpus_per_worker > 1 else "GPU"
            where = (
                f"{self.gpus_per_worker:g} {unit} each of {','.join(self.devices)} "
                f"(found by {self.source})"
            )
        return f"{self.workers} worker{'s' if self.workers != 1 else ''} {where}, {threads}"


def _how_none(source: str) -> str:
    if source == "devices":
        return "devices is empty"
    if source == "CUDA_VISIBLE_DEVICES":
        return "CUDA_VISIBLE_DEVICES hides them all"
    return "CUDA_VISIBLE_DEVICES is not set and nvidia-smi lists none"


def plan_devices(
    workers: int,
    gpus_per_worker: float | None = None,
    devices: Iterable[Any] | str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cores: int | None = None,
) -> DevicePlan:
    """Decide the GPUs and threads of ``workers`` local workers.

    Args:
        workers: How many local workers run at once.
        gpus_per_worker: GPUs per worker: ``1``, a fraction such as ``0.5`` (two workers
            per GPU), a whole number such as ``2``, or ``0`` (CPU only). None: one GPU per
            worker when there are enough, else an equal share (``1 / ceil(workers /
            gpus)``), and the CPU when there is no GPU.
        devices: The GPUs to use (indices or UUIDs, a list or ``"0,1"``); default: those
            :func:`visible_gpus` finds.
        environ: The environment to read (default: ``os.environ``).
        cores: Cores to share (default: :func:`available_cores`).

    Returns:
        The plan.

    Raises:
        ConfigError: A setting is malformed, or the GPUs asked for are not there.
    """
    env = os.environ if environ is None else environ
    if devices is not None:
        ids, source = _device_ids(devices), "devices"
    else:
        ids, source = visible_gpus(env)
    if gpus_per_worker is None:
        share = 0.0 if not ids else 1.0 / math.ceil(workers / len(ids))
    else:
        share = check_gpus_per_worker(gpus_per_worker)
    if share > 0 and not ids:
        raise ConfigError(
            f"gpus_per_worker={share:g} but no GPU was found ({_how_none(source)}): name "
            "them with devices=[0, 1] (--devices 0,1), or pass gpus_per_worker=0 to train "
            "on the CPU"
        )
    if share > 0:
        capacity = (
            len(ids) * math.floor(1.0 / share + 1e-9) if share < 1 else len(ids) // int(share)
        )
        if capacity < workers:
            raise ConfigError(
                f"{workers} workers at gpus_per_worker={share:g} need more GPUs than the "
                f"{len(ids)} there are ({', '.join(ids)}; found by {source}): lower "
                f"gpus_per_worker (0.5 puts two workers on a GPU), run fewer workers, or "
                f"name more devices"
            )
    user_set = any(name in env for name in _THREAD_VARS)
    threads = None if user_set else max(1, (cores or available_cores()) // max(workers, 1))
    return DevicePlan(workers, share, ids, source, threads)


def single_worker_env(
    index: int | None,
    gpus_per_worker: float | None,
    devices: Iterable[Any] | str | None,
) -> dict[str, str]:
    """The environment of one hand-started worker (``pbtkit worker --worker-index I
    --gpus-per-worker G --devices LIST``): the GPUs worker ``I`` would get in a run.

    Without ``gpus_per_worker`` and ``devices`` only the index is set; with either, the
    GPUs are those of :meth:`DevicePlan.env` (``gpus_per_worker`` defaults to 1 when
    there are GPUs). Threads are left to the user's environment.

    Raises:
        ConfigError: A setting is malformed, or worker ``index`` has no GPU left.
    """
    if index is not None and index < 0:
        raise ConfigError(f"--worker-index must be >= 0, got {index}")
    position = index or 0
    if gpus_per_worker is None and devices is None:
        return {} if index is None else {WORKER_VAR: str(position)}
    if devices is not None:
        ids, source = _device_ids(devices), "devices"
    else:
        ids, source = visible_gpus()
    share = (
        check_gpus_per_worker(gpus_per_worker) if gpus_per_worker is not None else float(bool(ids))
    )
    if share > 0 and not ids:
        raise ConfigError(
            f"--gpus-per-worker {share:g} but no GPU was found: name them with --devices 0,1"
        )
    return DevicePlan(position + 1, share, ids, source, None).env(position)


def current_device() -> str:
    """The torch device a worker should train on: what its executor set in
    ``PBTKIT_DEVICE``, else ``"cuda:0"`` when PyTorch sees a GPU, else ``"cpu"``."""
    declared = os.environ.get(DEVICE_VAR)
    if declared:
        return declared
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def current_worker() -> int | None:
    """This worker's index from ``PBTKIT_WORKER_INDEX``, or None when none was given."""
    text = os.environ.get(WORKER_VAR, "")
    return int(text) if text.isdigit() else None


def apply_to_environ(env: Mapping[str, str]) -> None:
    """Put a worker's device environment into this process (before CUDA is initialised).

    Used by ``pbtkit worker --devices/--gpus-per-worker`` before it imports the training
    function, so the GPUs it is given are the only ones PyTorch will see.
    """
    os.environ.update(env)
