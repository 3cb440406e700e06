"""The contract of a checkpoint backend: :class:`CheckpointStore`.

One root holds the checkpoints of experiments, one folder per trial attempt, each
committed so that a reader sees all of it or none, and checked strictly before a trial
loads it. :mod:`pbtkit.checkpoints.testing` holds the suite every backend passes.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterable
from pathlib import Path

from pbtkit.checkpoints._manifest import safe_name

__all__ = ["CheckpointStore"]


class CheckpointStore(abc.ABC):
    """The checkpoints of experiments under one root; open one with
    :func:`~pbtkit.checkpoints.open_checkpoints`.

    Attributes:
        root: The root: an absolute :class:`~pathlib.Path` for a local root, the URL (a
            string) for an object store.
        remote: Whether the root is an object store (files go through a local cache).
        durable: Whether commits are flushed to disk (local roots).
    """

    root: Path | str
    remote: bool = False
    durable: bool = True

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the root can be seen from here (a server's root may not be)."""

    @abc.abstractmethod
    def resolve(self, relative: str) -> Path:
        """The local path of a stored checkpoint name, refused if it leaves the root (or
        if the root is not local).

        Raises:
            CheckpointError: The name leaves the root, or there is no local path.
        """

    @abc.abstractmethod
    def location(self, relative: str) -> str:
        """Where a stored checkpoint lives, for people to read: a path or a URL.

        Raises:
            CheckpointError: The name leaves the root.
        """

    @abc.abstractmethod
    def relative(self, path: str) -> str:
        """The stored name of a path or URL given by a client, inside the root.

        Raises:
            CheckpointError: It lies outside the root or is malformed.
        """

    @abc.abstractmethod
    def staging_dir(self, experiment: str, trial_id: int) -> Path:
        """A new empty local directory where a trial writes its checkpoint files."""

    @staticmethod
    def name_for(experiment: str, trial_id: int, attempt: int = 1) -> str:
        """The stored (relative) name of a trial's committed checkpoint.

        Each attempt has its own name, so a worker that lost its lease and commits late
        can never overwrite or delete the checkpoint of the attempt that replaced it.
        """
        suffix = "" if attempt <= 1 else f"-a{attempt}"
        return f"{safe_name(experiment)}/trial-{trial_id:06d}{suffix}"

    @abc.abstractmethod
    def commit(
        self, staging: Path, experiment: str, trial_id: int, *, attempt: int = 1
    ) -> str | None:
        """Seal a staging directory as the trial's checkpoint.

        Returns:
            The checkpoint's relative name, or None if the trial wrote no files.

        Raises:
            CheckpointError: A symlink or reserved name in the staging directory, or the
                files cannot be read or stored.
        """

    def verify(self, relative: str) -> Path:
        """A local directory holding the committed checkpoint, checked strictly against
        its manifest (see :meth:`fetch`)."""
        return self.fetch(relative, verify=True)

    @abc.abstractmethod
    def fetch(self, relative: str, *, verify: bool = True) -> Path:
        """A local directory holding exactly a committed checkpoint's files.

        Args:
            relative: The checkpoint's stored name.
            verify: Check every file's SHA-256 (False: presence and sizes only).

        Raises:
            BadCheckpoint: Missing, incomplete, corrupt, or changed since its commit.
            CheckpointError: It cannot be reached now (an object store's network).
        """

    @abc.abstractmethod
    def delete(self, relative: str) -> None:
        """Remove a committed checkpoint (no error if it is already gone)."""

    @abc.abstractmethod
    def sweep(
        self, experiment: str, keep: Iterable[str], *, active_staging: Iterable[int] = ()
    ) -> int:
        """Delete an experiment's checkpoints not in ``keep`` and its abandoned staging
        directories; returns how many were removed."""


PathLike = str | os.PathLike[str]
