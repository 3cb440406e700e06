"""What every checkpoint backend shares: the manifest that seals a checkpoint, the strict
check of a checkpoint against it, and the names of checkpoints and staging folders.

A checkpoint is a folder of files plus ``MANIFEST.json``, written last, with the SHA-256
and size of every file. A folder is a checkpoint exactly when its manifest lists every
file in it, no more, no symlink, and every file matches.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pbtkit._exceptions import BadCheckpoint, CheckpointError

__all__ = [
    "MANIFEST",
    "check_files",
    "default_cache_dir",
    "discard",
    "fsync_dir",
    "is_remote",
    "is_url",
    "local_path",
    "parse_manifest",
    "safe_name",
    "sha256",
    "split_protocol",
    "staged_files",
    "staging_name",
    "sweep_staging",
    "write_manifest",
]

MANIFEST = "MANIFEST.json"
STAGING = ".staging"
_CHUNK = 1 << 20
_LOCAL_PROTOCOLS = ("file", "local")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def split_protocol(text: str) -> tuple[str | None, str]:
    """fsspec's split of a URL into its protocol and path. fsspec (a fifth of a second to
    import) is loaded only here, for text that looks like a URL: a local root never pays."""
    from fsspec.core import split_protocol as split  # type: ignore[import-untyped]

    protocol, path = split(text)
    return protocol, path


def is_url(text: str) -> bool:
    # Only "scheme://" and chained "a::b://" count: a folder may be named "data:x".
    return ("://" in text or "::" in text) and split_protocol(text)[0] is not None


def is_remote(root: str | os.PathLike[str]) -> bool:
    """Whether a root names an object store (any fsspec URL but a local one)."""
    if not isinstance(root, str) or not is_url(root):
        return False
    return split_protocol(root)[0] not in _LOCAL_PROTOCOLS


def local_path(root: str | os.PathLike[str]) -> Path:
    """A local root as a path: ``file://`` and ``local://`` URLs lose their scheme."""
    text = os.fspath(root)
    if is_url(text):
        text = split_protocol(text)[1]
    return Path(text).expanduser().resolve()


def default_cache_dir() -> Path:
    if os.environ.get("PBTKIT_CACHE_DIR"):
        return Path(os.environ["PBTKIT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "pbtkit"


# shared helpers -----------------------------------------------------------------------
def staged_files(staging: Path) -> list[Path]:
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


def write_manifest(staging: Path, files: list[Path], trial_id: int, *, durable: bool) -> bytes:
    """The manifest of a staging directory's files: SHA-256 and size of each."""
    entries: dict[str, dict[str, Any]] = {}
    for path in files:
        rel = path.relative_to(staging).as_posix()
        if rel == MANIFEST:
            raise CheckpointError(f"{MANIFEST} is reserved for pbtkit; name your file otherwise")
        if durable:
            with path.open("rb") as f:
                os.fsync(f.fileno())
        entries[rel] = {"sha256": sha256(path), "size": path.stat().st_size}
    data = {"format": 1, "trial_id": trial_id, "files": entries}
    return json.dumps(data, separators=(",", ":")).encode()  # C encoder: indent would not be


def parse_manifest(name: str, raw: bytes) -> dict[str, dict[str, Any]]:
    try:
        entries = json.loads(raw)["files"]
        if not isinstance(entries, dict) or not all(
            isinstance(e, dict) and isinstance(e["sha256"], str) and isinstance(e["size"], int)
            for e in entries.values()
        ):
            raise TypeError("files must map each name to its sha256 and size")
    except (ValueError, KeyError, TypeError) as exc:
        raise BadCheckpoint(f"checkpoint {name!r} has a corrupt manifest: {exc}") from exc
    for rel in entries:
        # Checked before anything is read or downloaded: a listed name must stay inside.
        if (
            not isinstance(rel, str)
            or rel == MANIFEST
            or rel.startswith("/")
            or "\x00" in rel
            or posixpath.normpath(rel) != rel
            or rel == ".."
            or rel.startswith("../")
        ):
            raise BadCheckpoint(f"checkpoint {name!r} lists {rel!r}, which is not its file")
    return entries


def check_files(
    folder: Path, entries: dict[str, dict[str, Any]], name: str, *, hashes: bool
) -> None:
    """Check a local copy of a checkpoint against its manifest's entries.

    Strict: the folder must hold exactly the listed files and the manifest, all of them
    real files. Anything else (a file added after the commit, a symlink anywhere, even to
    a listed name) is refused, so a trial is handed only what was written and sealed.
    """
    base = folder.resolve()
    listed = set(entries)
    # every folder on the way to a listed file: "a/b/f" needs "a/b" and "a"
    needed_dirs = {
        "/".join(rel.split("/")[:depth]) for rel in listed for depth in range(1, rel.count("/") + 1)
    }
    for dirpath, dirnames, filenames in os.walk(base):
        for child in (*dirnames, *filenames):
            path = Path(dirpath) / child
            found = path.relative_to(base).as_posix()
            if path.is_symlink():
                raise BadCheckpoint(
                    f"checkpoint {name!r} holds a symlink {found!r} -> {os.readlink(path)!r}; "
                    "a checkpoint holds only the real files it was committed with, so it is "
                    "refused (it was changed after its commit)"
                )
            if child in dirnames:
                if found not in needed_dirs:
                    raise BadCheckpoint(
                        f"checkpoint {name!r} holds a folder {found!r} that its manifest does "
                        "not list; it was changed after its commit, so it is refused"
                    )
            elif found not in listed and found != MANIFEST:
                raise BadCheckpoint(
                    f"checkpoint {name!r} holds a file {found!r} that its manifest does not "
                    "list; it was changed after its commit, so it is refused"
                )
    for rel, entry in entries.items():
        file = (base / rel).resolve()
        if base not in file.parents or rel == MANIFEST:
            raise BadCheckpoint(f"checkpoint {name!r} lists {rel!r}, which is not its file")
        if not file.is_file():
            raise BadCheckpoint(f"checkpoint {name!r} is missing its file {rel!r}")
        if file.stat().st_size != entry["size"] or (hashes and sha256(file) != entry["sha256"]):
            raise BadCheckpoint(
                f"checkpoint {name!r} is corrupt: {rel!r} does not match the SHA-256 "
                "recorded when it was written; the trial that needs it cannot start from it"
            )


def staging_name(experiment: str, trial_id: int) -> str:
    return f"{safe_name(experiment)}-trial-{trial_id}-{uuid.uuid4().hex[:8]}"


def sweep_staging(staging: Path, experiment: str, active_staging: Iterable[int]) -> int:
    prefix = f"{safe_name(experiment)}-trial-"
    active = {f"{prefix}{t}-" for t in active_staging}
    removed = 0
    if staging.is_dir():
        for child in staging.iterdir():
            if child.name.startswith(prefix) and not any(child.name.startswith(a) for a in active):
                discard(child)
                removed += 1
    return removed


def discard(path: Path) -> None:
    # Rename first so that no reader ever sees a half-deleted checkpoint with a manifest.
    trash = path.with_name(f".deleting-{path.name}-{uuid.uuid4().hex[:6]}")
    try:
        os.replace(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def safe_name(name: str) -> str:
    """A directory name for an experiment, distinct for distinct names.

    A name of plain characters is used as it is; anything else is replaced and a short
    hash of the original is appended, so that "a b" and "a_b" never share a folder.
    """
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    if cleaned == name and name:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{cleaned or 'experiment'}-{digest}"
