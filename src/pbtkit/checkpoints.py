"""Checkpoint directories: one per trial, committed atomically, verified on load.

A trial writes its files into a private staging directory. :meth:`CheckpointStore.commit`
hashes every file, writes ``MANIFEST.json`` (SHA-256 and size of each file) last, fsyncs,
and renames the directory into place, so a reader sees a whole checkpoint or none.
Exploiting a donor copies no bytes: the next trial names the donor's checkpoint as its
parent. Paths stored in the database are relative to the root, and every path that comes
back from outside is checked to lie inside it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pbtkit._exceptions import CheckpointError

__all__ = ["MANIFEST", "CheckpointStore"]

MANIFEST = "MANIFEST.json"
_STAGING = ".staging"
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointStore:
    """The checkpoints of experiments under one root directory.

    Args:
        root: The directory; created if missing.
        durable: fsync files and directories on commit (turn off only for throwaway runs).
        create: Create the root if missing (False to only name paths inside it).
    """

    def __init__(
        self, root: str | os.PathLike[str], *, durable: bool = True, create: bool = True
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        self.durable = durable
        if not create:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(
                f"cannot create the checkpoint root {self.root}: {exc.strerror}; "
                "pass a writable checkpoint_dir"
            ) from exc

    # paths -------------------------------------------------------------------------
    def resolve(self, relative: str) -> Path:
        """The absolute path of a stored checkpoint name, refused if it leaves the root.

        Raises:
            CheckpointError: The name is absolute, contains ``..`` that escapes, or a
                symlink points outside the root.
        """
        if not relative or os.path.isabs(relative):
            raise CheckpointError(
                f"checkpoint path {relative!r} must be relative to the checkpoint root {self.root}"
            )
        path = (self.root / relative).resolve()
        if path != self.root and self.root not in path.parents:
            raise CheckpointError(
                f"checkpoint path {relative!r} resolves to {path}, outside the checkpoint root "
                f"{self.root}; checkpoints must stay inside the root"
            )
        return path

    def relative(self, path: str) -> str:
        """The stored name of a path given by a client: relative to the root, or absolute
        inside it. Raises CheckpointError for anything that leaves the root."""
        if not path or "\x00" in path:
            raise CheckpointError(f"checkpoint path {path!r} is empty or malformed")
        candidate = Path(path).expanduser()
        if not candidate.is_absolute():
            candidate = self.root / candidate
        resolved = candidate.resolve()
        if resolved == self.root or self.root not in resolved.parents:
            raise CheckpointError(
                f"checkpoint path {path!r} resolves to {resolved}, outside the checkpoint root "
                f"{self.root}; save checkpoints inside the root"
            )
        return resolved.relative_to(self.root).as_posix()

    def staging_dir(self, experiment: str, trial_id: int) -> Path:
        """A new empty directory where a trial writes its checkpoint files."""
        path = self.root / _STAGING / f"{_safe(experiment)}-trial-{trial_id}-{uuid.uuid4().hex[:8]}"
        path.mkdir(parents=True)
        return path

    @staticmethod
    def name_for(experiment: str, trial_id: int) -> str:
        """The stored (relative) name of a trial's committed checkpoint."""
        return f"{_safe(experiment)}/trial-{trial_id:06d}"

    # commit / verify ---------------------------------------------------------------
    def commit(self, staging: Path, experiment: str, trial_id: int) -> str | None:
        """Seal a staging directory and move it into place.

        Returns:
            The checkpoint's relative name, or None if the trial wrote no files (then the
            staging directory is removed and the trial has no checkpoint).

        Raises:
            CheckpointError: The staging directory holds a symlink or something that is
                not a regular file, or the files cannot be read.
        """
        files = self._files(staging)
        if not files:
            shutil.rmtree(staging, ignore_errors=True)
            return None
        entries: dict[str, dict[str, Any]] = {}
        for path in files:
            rel = path.relative_to(staging).as_posix()
            if rel == MANIFEST:
                raise CheckpointError(
                    f"{MANIFEST} is reserved for pbtkit; name your file otherwise"
                )
            if self.durable:
                with path.open("rb") as f:
                    os.fsync(f.fileno())
            entries[rel] = {"sha256": _sha256(path), "size": path.stat().st_size}
        manifest = staging / MANIFEST
        with manifest.open("w") as f:
            json.dump({"format": 1, "trial_id": trial_id, "files": entries}, f, indent=1)
            f.flush()
            if self.durable:
                os.fsync(f.fileno())
        name = self.name_for(experiment, trial_id)
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            # A previous attempt of this trial committed before its worker died.
            self._remove(target)
        os.replace(staging, target)
        if self.durable:
            _fsync_dir(target.parent)
        return name

    def verify(self, relative: str) -> Path:
        """Check a committed checkpoint against its manifest and return its directory.

        Raises:
            CheckpointError: The directory or manifest is missing, a file is missing, has
                another size, or another SHA-256 than when it was written.
        """
        path = self.resolve(relative)
        manifest = path / MANIFEST
        try:
            data = json.loads(manifest.read_text())
            entries: dict[str, dict[str, Any]] = data["files"]
        except FileNotFoundError:
            raise CheckpointError(
                f"checkpoint {relative!r} is missing or incomplete (no {MANIFEST} in {path}); "
                "it may have been deleted or never committed"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {relative!r} has a corrupt manifest: {exc}") from exc
        for rel, entry in entries.items():
            file = (path / rel).resolve()
            if path not in file.parents:
                raise CheckpointError(f"checkpoint {relative!r} lists {rel!r}, outside itself")
            if not file.is_file():
                raise CheckpointError(f"checkpoint {relative!r} is missing its file {rel!r}")
            if file.stat().st_size != entry["size"] or _sha256(file) != entry["sha256"]:
                raise CheckpointError(
                    f"checkpoint {relative!r} is corrupt: {rel!r} does not match the SHA-256 "
                    "recorded when it was written; the trial that needs it cannot start from it"
                )
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
            How many directories were removed.
        """
        keep_paths = {self.resolve(k) for k in keep}
        removed = 0
        folder = self.root / _safe(experiment)
        if folder.is_dir():
            for child in folder.iterdir():
                if child.resolve() not in keep_paths:
                    self._remove(child)
                    removed += 1
        staging = self.root / _STAGING
        prefix = f"{_safe(experiment)}-trial-"
        active = {f"{prefix}{t}-" for t in active_staging}
        if staging.is_dir():
            for child in staging.iterdir():
                if child.name.startswith(prefix) and not any(
                    child.name.startswith(a) for a in active
                ):
                    self._remove(child)
                    removed += 1
        return removed

    # helpers -----------------------------------------------------------------------
    @staticmethod
    def _files(staging: Path) -> list[Path]:
        out: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(staging):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                if path.is_symlink():
                    raise CheckpointError(
                        f"checkpoint file {path.relative_to(staging)} is a symlink; "
                        "write real files into trial.checkpoint_dir"
                    )
            out.extend(Path(dirpath) / name for name in filenames)
        return sorted(out)

    def _remove(self, path: Path) -> None:
        # Rename first so that no reader ever sees a half-deleted checkpoint with a manifest.
        trash = path.with_name(f".deleting-{path.name}-{uuid.uuid4().hex[:6]}")
        try:
            os.replace(path, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)


def _safe(name: str) -> str:
    """A directory name for an experiment, distinct for distinct names.

    A name of plain characters is used as it is; anything else is replaced and a short
    hash of the original is appended, so that "a b" and "a_b" never share a folder.
    """
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    if cleaned == name and name:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{cleaned or 'experiment'}-{digest}"
