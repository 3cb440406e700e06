"""Checkpoints in a local directory (or on a filesystem every machine mounts): commit is
an atomic rename of a flushed staging directory."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from fsspec.core import split_protocol  # type: ignore[import-untyped]

from pbtkit._exceptions import BadCheckpoint, CheckpointError
from pbtkit.checkpoints._base import CheckpointStore
from pbtkit.checkpoints._manifest import (
    MANIFEST,
    STAGING,
    check_files,
    discard,
    fsync_dir,
    is_remote,
    is_url,
    local_path,
    parse_manifest,
    safe_name,
    staged_files,
    staging_name,
    sweep_staging,
    write_manifest,
)

__all__ = ["LocalCheckpoints"]


class LocalCheckpoints(CheckpointStore):
    """The checkpoints of experiments under a local directory.

    Args:
        root: The directory, or a ``file://`` URL; created if missing.
        durable: fsync files and directories on commit (turn off only for throwaway runs).
        create: Create the root if missing (False to only name checkpoints inside it).
    """

    remote = False

    def __init__(
        self, root: str | os.PathLike[str], *, durable: bool = True, create: bool = True
    ) -> None:
        self._dir = local_path(root)
        self.root = self._dir
        self.durable = durable
        if not create:
            return
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(
                f"cannot create the checkpoint root {self._dir}: {exc.strerror}; "
                "pass a writable checkpoint_dir"
            ) from exc

    def exists(self) -> bool:
        """Whether the root can be seen from here (a server's root may not be)."""
        return self._dir.is_dir()

    # paths -------------------------------------------------------------------------
    def resolve(self, relative: str) -> Path:
        """The absolute path of a stored checkpoint name, refused if it leaves the root.

        Raises:
            CheckpointError: The name is absolute, contains ``..`` that escapes, or a
                symlink points outside the root; or the root is an object store (use
                :meth:`location` or :meth:`verify` there).
        """
        if not relative or os.path.isabs(relative):
            raise CheckpointError(
                f"checkpoint path {relative!r} must be relative to the checkpoint root {self._dir}"
            )
        path = (self._dir / relative).resolve()
        if path != self._dir and self._dir not in path.parents:
            raise CheckpointError(
                f"checkpoint path {relative!r} resolves to {path}, outside the checkpoint root "
                f"{self._dir}; checkpoints must stay inside the root"
            )
        return path

    def location(self, relative: str) -> str:
        """Where a stored checkpoint lives, for people to read: a path or a URL.

        Raises:
            CheckpointError: The name leaves the root.
        """
        return str(self.resolve(relative))

    def relative(self, path: str) -> str:
        """The stored name of a path given by a client: relative to the root, or absolute
        inside it (a ``file://`` URL too). Raises CheckpointError for anything that leaves
        the root."""
        if not path or "\x00" in path:
            raise CheckpointError(f"checkpoint path {path!r} is empty or malformed")
        if is_url(path):
            if is_remote(path):
                raise CheckpointError(
                    f"checkpoint path {path!r} is a URL, outside the checkpoint root "
                    f"{self._dir}; save checkpoints inside the root"
                )
            path = split_protocol(path)[1]
        candidate = Path(path).expanduser()
        if not candidate.is_absolute():
            candidate = self._dir / candidate
        resolved = candidate.resolve()
        if resolved == self._dir or self._dir not in resolved.parents:
            raise CheckpointError(
                f"checkpoint path {path!r} resolves to {resolved}, outside the checkpoint root "
                f"{self._dir}; save checkpoints inside the root"
            )
        return resolved.relative_to(self._dir).as_posix()

    def staging_dir(self, experiment: str, trial_id: int) -> Path:
        """A new empty local directory where a trial writes its checkpoint files."""
        path = self._dir / STAGING / staging_name(experiment, trial_id)
        path.mkdir(parents=True)
        return path

    # commit / verify ---------------------------------------------------------------
    def commit(
        self, staging: Path, experiment: str, trial_id: int, *, attempt: int = 1
    ) -> str | None:
        """Seal a staging directory and move it into place.

        Returns:
            The checkpoint's relative name, or None if the trial wrote no files (then the
            staging directory is removed and the trial has no checkpoint).

        Raises:
            CheckpointError: The staging directory holds a symlink or something that is
                not a regular file, the files cannot be read, or (object stores) uploaded.
        """
        files = staged_files(staging)
        if not files:
            shutil.rmtree(staging, ignore_errors=True)
            return None
        manifest = write_manifest(staging, files, trial_id, durable=self.durable)
        with (staging / MANIFEST).open("wb") as f:
            f.write(manifest)
            f.flush()
            if self.durable:
                os.fsync(f.fileno())
        name = self.name_for(experiment, trial_id, attempt)
        target = self._dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            # A previous attempt of this trial committed before its worker died.
            self._remove(target)
        os.replace(staging, target)
        if self.durable:
            fsync_dir(target.parent)
        return name

    def fetch(self, relative: str, *, verify: bool = True) -> Path:
        """A local directory holding a committed checkpoint, for a trial to load from.

        Args:
            relative: The checkpoint's stored name.
            verify: Check every file's SHA-256 against the manifest (False: only that
                the checkpoint exists; its files are not read).

        Raises:
            CheckpointError: As :meth:`verify`.
        """
        path = self.resolve(relative)
        if not verify:
            return path
        try:
            raw = (path / MANIFEST).read_bytes()
        except FileNotFoundError:
            raise BadCheckpoint(
                f"checkpoint {relative!r} is missing or incomplete (no {MANIFEST} in {path}); "
                "it may have been deleted or never committed"
            ) from None
        check_files(path, parse_manifest(relative, raw), relative, hashes=True)
        return path

    # deletion ----------------------------------------------------------------------
    def delete(self, relative: str) -> None:
        """Remove a committed checkpoint (no error if it is already gone)."""
        path = self.resolve(relative)
        if path.exists():
            self._remove(path)

    def sweep(
        self, experiment: str, keep: Iterable[str], *, active_staging: Iterable[int] = ()
    ) -> int:
        """Delete an experiment's checkpoints not in ``keep`` and its abandoned staging dirs.

        Args:
            experiment: The experiment whose directory is swept.
            keep: Relative names of checkpoints that must stay.
            active_staging: Trial ids still running, whose staging dirs must stay.

        Returns:
            How many checkpoints and staging directories were removed.
        """
        keep_paths = {self.resolve(k) for k in keep}
        removed = 0
        folder = self._dir / safe_name(experiment)
        if folder.is_dir():
            for child in folder.iterdir():
                if child.resolve() not in keep_paths:
                    self._remove(child)
                    removed += 1
        return removed + sweep_staging(self._dir / STAGING, experiment, active_staging)

    # helpers -----------------------------------------------------------------------
    def _remove(self, path: Path) -> None:
        discard(path)

    def __repr__(self) -> str:
        return f"LocalCheckpoints({str(self._dir)!r})"
