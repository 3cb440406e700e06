"""Checkpoints under an fsspec URL with no atomic rename (``s3://bucket/prefix``, ...): the
manifest is uploaded last and removed first, so it is the commit marker."""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from fsspec.core import split_protocol, url_to_fs  # type: ignore[import-untyped]

from pbtkit._exceptions import BadCheckpoint, CheckpointError
from pbtkit.checkpoints._base import CheckpointStore
from pbtkit.checkpoints._manifest import (
    MANIFEST,
    check_files,
    default_cache_dir,
    discard,
    is_remote,
    is_url,
    parse_manifest,
    safe_name,
    staged_files,
    staging_name,
    sweep_staging,
    write_manifest,
)

__all__ = ["ObjectCheckpoints"]


class ObjectCheckpoints(CheckpointStore):
    """Checkpoints under an fsspec URL with no atomic rename (``s3://bucket/prefix``, ...).

    Built by ``open_checkpoints(url)``; the same contract as a local directory. A checkpoint is the
    folder ``<root>/<experiment>/trial-<id>/``; its ``MANIFEST.json`` is written last and
    removed first, so a checkpoint without one is incomplete. Trials stage their files in
    a local directory, and :meth:`fetch` / :meth:`verify` return a local copy kept in
    ``cache_dir``, keyed by root, name and manifest hash (so workers sharing a cache never
    clash) and re-checked before each reuse.
    """

    remote = True

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        durable: bool = True,
        create: bool = True,
        storage_options: Mapping[str, Any] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        filesystem: Any = None,
    ) -> None:
        url = os.fspath(root).strip()
        if not is_remote(url):
            raise CheckpointError(
                f"checkpoint root {url!r} is not an object store URL; "
                "open_checkpoints(path) serves a local directory"
            )
        protocol, rest = split_protocol(url)
        if not rest.strip("/"):
            raise CheckpointError(
                f"checkpoint root {url!r} names no folder; give one, like s3://bucket/prefix"
            )
        self._url: str = url.rstrip("/")
        self._protocol: str = protocol
        self.root = self._url
        self.durable = durable
        self.storage_options = dict(storage_options or {})
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        # One folder per root in the cache: equal names under two roots never meet.
        self._key = hashlib.sha256(self._url.encode()).hexdigest()[:16]
        self._fs: Any = filesystem
        self._path = ""
        if filesystem is not None:
            self._path = str(filesystem._strip_protocol(self._url)).rstrip("/")
        if create:
            with self._errors(f"cannot create the checkpoint root {self._url}"):
                self.fs.makedirs(self._base, exist_ok=True)

    @property
    def fs(self) -> Any:
        """The fsspec filesystem of the root (opened on first use)."""
        return self._open()[0]

    @property
    def _base(self) -> str:
        """The root as the filesystem names it (``bucket/prefix`` for S3)."""
        return self._open()[1]

    def _open(self) -> tuple[Any, str]:
        if self._fs is None:
            try:
                fs, path = url_to_fs(self._url, **self.storage_options)
            except ImportError as exc:
                hint = (
                    "pip install 'pbtkit[s3]'"
                    if self._protocol in ("s3", "s3a")
                    else f"install the fsspec driver for {self._protocol}://"
                )
                raise CheckpointError(
                    f"cannot open the checkpoint root {self._url}: {exc}; {hint}"
                ) from exc
            self._fs, self._path = fs, str(path).rstrip("/")
        return self._fs, self._path

    def exists(self) -> bool:
        """Whether the root holds anything and can be reached from here (credentials,
        endpoint); False rather than an error when it cannot."""
        try:
            return bool(self.fs.exists(self._base))
        except Exception:
            return False

    # paths -------------------------------------------------------------------------
    def _name(self, relative: str) -> str:
        """A stored name made canonical, refused if it leaves the root."""
        if not relative or "\x00" in relative or relative.startswith(("/", "\\")):
            raise CheckpointError(
                f"checkpoint path {relative!r} must be relative to the checkpoint root {self._url}"
            )
        name = posixpath.normpath(relative)
        if name in (".", "..") or name.startswith("../"):
            raise CheckpointError(
                f"checkpoint path {relative!r} leaves the checkpoint root {self._url}; "
                "checkpoints must stay inside the root"
            )
        return name

    def _remote(self, name: str) -> str:
        return f"{self._base}/{name}"

    def resolve(self, relative: str) -> Path:
        """Refused: an object store has no local path (see :meth:`location`, :meth:`fetch`).

        Raises:
            CheckpointError: Always; saying so, or that the name leaves the root.
        """
        name = self._name(relative)
        raise CheckpointError(
            f"checkpoint {name!r} lives in an object store ({self.location(name)}), not in a "
            "local directory; use location(name) for its URL, or verify(name) for a checked "
            "local copy"
        )

    def location(self, relative: str) -> str:
        """The URL of a stored checkpoint.

        Raises:
            CheckpointError: The name leaves the root.
        """
        return f"{self._url}/{self._name(relative)}"

    def relative(self, path: str) -> str:
        """The stored name of a URL inside the root, or of a name relative to it.

        Raises:
            CheckpointError: Empty, a local absolute path, another store, or outside the root.
        """
        if not path or "\x00" in path:
            raise CheckpointError(f"checkpoint path {path!r} is empty or malformed")
        if not is_url(path):
            return self._name(path)
        inside = ""
        if split_protocol(path)[0] == self._protocol:
            stripped = str(self.fs._strip_protocol(path)).rstrip("/")
            if stripped.startswith(self._base + "/"):
                inside = stripped[len(self._base) + 1 :]
        if not inside:
            raise CheckpointError(
                f"checkpoint path {path!r} is outside the checkpoint root {self._url}; "
                "save checkpoints inside the root"
            )
        return self._name(inside)

    def staging_dir(self, experiment: str, trial_id: int) -> Path:
        """A new empty local directory (in the cache) where a trial writes its files."""
        path = self._staging_root() / staging_name(experiment, trial_id)
        path.mkdir(parents=True)
        return path

    # commit / verify ---------------------------------------------------------------
    def commit(
        self, staging: Path, experiment: str, trial_id: int, *, attempt: int = 1
    ) -> str | None:
        """Upload a staging directory's files, then its manifest (the commit marker).

        A checkpoint left by an earlier attempt of the trial is removed first (its
        manifest before its files). The staging directory is removed once committed.

        Returns:
            The checkpoint's relative name, or None if the trial wrote no files.

        Raises:
            CheckpointError: A symlink or reserved name in the staging directory, or the
                upload failed (the checkpoint then has no manifest: it does not exist).
        """
        files = staged_files(staging)
        if not files:
            shutil.rmtree(staging, ignore_errors=True)
            return None
        manifest = write_manifest(staging, files, trial_id, durable=False)
        name = self.name_for(experiment, trial_id, attempt)
        target = self._remote(name)
        with self._errors(f"cannot upload checkpoint {name!r} to {self.location(name)}"):
            # A previous attempt of this trial may have uploaded some or all of it.
            self._remove_remote(target)
            rels = [path.relative_to(staging).as_posix() for path in files]
            self.fs.put([str(p) for p in files], [f"{target}/{rel}" for rel in rels])
            # Last, and only once every file is in place: this object commits the checkpoint.
            self.fs.pipe_file(f"{target}/{MANIFEST}", manifest)
            self.fs.invalidate_cache(target)
        shutil.rmtree(staging, ignore_errors=True)
        return name

    def fetch(self, relative: str, *, verify: bool = True) -> Path:
        """A local, checked copy of a committed checkpoint, downloaded unless cached.

        A cached copy of the same manifest is reused after its files are checked again;
        one that no longer matches is discarded and downloaded anew.

        Args:
            relative: The checkpoint's stored name.
            verify: Check every file's SHA-256 (False: only presence and sizes).

        Raises:
            CheckpointError: No manifest (missing, deleted, or its upload never finished),
                a corrupt manifest, a missing file, or a file that does not match.
        """
        name = self._name(relative)
        target = self._remote(name)
        where = self.location(name)
        with self._errors(f"cannot read checkpoint {name!r} at {where}"):
            try:
                raw = bytes(self.fs.cat_file(f"{target}/{MANIFEST}"))
            except FileNotFoundError:
                raise BadCheckpoint(
                    f"checkpoint {name!r} is missing or incomplete (no {MANIFEST} at {where}); "
                    "it may have been deleted, or its upload never finished"
                ) from None
        entries = parse_manifest(name, raw)
        folder = self._cache_of(name) / hashlib.sha256(raw).hexdigest()[:16]
        if folder.is_dir():
            try:
                if (folder / MANIFEST).read_bytes() == raw:
                    check_files(folder, entries, name, hashes=verify)
                    return folder
            except (OSError, CheckpointError):
                pass  # changed or damaged since it was downloaded: fetch it again
            discard(folder)
        return self._download(name, target, raw, entries, folder, verify=verify)

    def _download(
        self,
        name: str,
        target: str,
        raw: bytes,
        entries: dict[str, dict[str, Any]],
        folder: Path,
        *,
        verify: bool,
    ) -> Path:
        folder.parent.mkdir(parents=True, exist_ok=True)
        temp = folder.parent / f".download-{uuid.uuid4().hex[:12]}"
        temp.mkdir()
        try:
            rels = sorted(entries)
            for rel in rels:
                (temp / rel).parent.mkdir(parents=True, exist_ok=True)
            with self._errors(f"cannot download checkpoint {name!r} from {self.location(name)}"):
                try:
                    self.fs.get([f"{target}/{rel}" for rel in rels], [str(temp / r) for r in rels])
                except FileNotFoundError:
                    self.fs.invalidate_cache(target)
                    gone = [rel for rel in rels if not self.fs.exists(f"{target}/{rel}")]
                    raise BadCheckpoint(
                        f"checkpoint {name!r} is missing its file "
                        f"{gone[0] if gone else 'one of its files'!r}"
                    ) from None
            check_files(temp, entries, name, hashes=verify)
            (temp / MANIFEST).write_bytes(raw)
            try:
                os.replace(temp, folder)
            except OSError:
                if not (folder / MANIFEST).is_file():
                    raise
                # Another process sharing the cache put its checked copy there first.
                shutil.rmtree(temp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        return folder

    # deletion ----------------------------------------------------------------------
    def delete(self, relative: str) -> None:
        """Remove a committed checkpoint, manifest first (no error if it is already gone),
        and this machine's cached copies of it."""
        name = self._name(relative)
        with self._errors(f"cannot delete checkpoint {name!r} at {self.location(name)}"):
            self._remove_remote(self._remote(name))
        discard(self._cache_of(name))

    def sweep(
        self, experiment: str, keep: Iterable[str], *, active_staging: Iterable[int] = ()
    ) -> int:
        """Delete an experiment's checkpoints not in ``keep`` (complete or not), its
        abandoned local staging dirs and the cached copies of what was deleted.

        Args:
            experiment: The experiment whose folder is swept.
            keep: Relative names of checkpoints that must stay.
            active_staging: Trial ids still running, whose staging dirs must stay.

        Returns:
            How many checkpoints and staging directories were removed.
        """
        keep_names = {self._name(k) for k in keep}
        keep_paths = {self._remote(k) for k in keep_names}
        folder = self._remote(safe_name(experiment))
        removed = 0
        with self._errors(f"cannot sweep {self._url}/{safe_name(experiment)}"):
            self.fs.invalidate_cache(folder)
            try:
                children = [str(c).rstrip("/") for c in self.fs.ls(folder, detail=False)]
            except FileNotFoundError:
                children = []
            for child in children:
                if child != folder and child not in keep_paths:
                    self._remove_remote(child)
                    removed += 1
        cached = self._cache_root() / safe_name(experiment)
        if cached.is_dir():
            for copy in cached.iterdir():
                if f"{safe_name(experiment)}/{copy.name}" not in keep_names:
                    discard(copy)
        return removed + sweep_staging(self._staging_root(), experiment, active_staging)

    # helpers -----------------------------------------------------------------------
    def _remove_remote(self, target: str) -> None:
        # The manifest goes first: from then on no reader takes the rest for a checkpoint.
        self.fs.invalidate_cache(target)
        try:
            found = {str(p) for p in self.fs.find(target)}
        except FileNotFoundError:
            found = set()
        manifest = f"{target}/{MANIFEST}"
        if manifest in found:
            self.fs.rm_file(manifest)
        if found:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(target, recursive=True)
        self.fs.invalidate_cache(target)

    def _cache_root(self) -> Path:
        return self.cache_dir / "checkpoints" / self._key

    def _cache_of(self, name: str) -> Path:
        return self._cache_root() / name

    def _staging_root(self) -> Path:
        return self.cache_dir / "staging" / self._key

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn a filesystem driver's errors into a CheckpointError that says what failed."""
        try:
            yield
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"{what}: {type(exc).__name__}: {exc}; check the URL, the credentials and the "
                "endpoint (AWS_ENDPOINT_URL for S3-compatible stores)"
            ) from exc

    def __repr__(self) -> str:
        return f"ObjectCheckpoints({self._url!r})"
