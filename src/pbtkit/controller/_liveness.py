"""Who holds a lease, and whether that worker is still alive.

A lease owner is named ``host:pid[:label]`` (:func:`worker_identity`), so a controller on
the same host can tell a worker that died (its pid gone, a zombie, or reused by a younger
process) from one that is only slow, and give its trial back at once (``reclaim_orphans``).
Workers on other hosts lose their trials when their leases expire (:func:`lease_over`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pbtkit.store._base import TrialRecord

__all__ = ["dead_local_owner", "lease_over", "worker_identity"]


def worker_identity(label: str = "", pid: int | None = None) -> str:
    """A lease-owner name that says where the worker runs: ``host:pid[:label]``."""
    base = f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"
    return f"{base}:{label}" if label else base


def lease_over(trial: TrialRecord, now: float) -> bool:
    """Whether a running trial's lease has expired."""
    return trial.lease_expires is not None and trial.lease_expires < now


def dead_local_owner(owner: str | None, host: str, since: float | None = None) -> bool:
    """Whether a lease owner ``host:pid:...`` is a process of this host that is gone.

    A zombie (a killed worker nobody reaped) is gone; so is an owner whose pid now
    belongs to a process that started after the lease was taken (the pid was reused).
    """
    if not owner:
        return True
    parts = owner.split(":")
    if len(parts) < 2 or parts[0] != host:
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _zombie_or_younger(pid, since)


def _zombie_or_younger(pid: int, since: float | None) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            return True
        if since is None:
            return False
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return False  # no /proc (not Linux): trust the pid
    return started > since + 1.0
