"""Checkpoints: one per trial, committed so that a reader sees all of it or none, verified on load.

A trial writes its files into a private local staging directory. :meth:`CheckpointStore.commit`
hashes every file and writes ``MANIFEST.json`` (SHA-256 and size of each file) last:

- under a local root (a path, or a ``file://`` URL) it fsyncs and renames the directory
  into place, so a reader sees a whole checkpoint or none;
- under any other fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``memory://...``) there is
  no atomic rename: it uploads the files, then the manifest. The manifest's existence is
  the commit marker: a checkpoint without one is incomplete and is refused, and deletion
  removes the manifest first. Loading downloads the files into a local cache
  (``cache_dir``), checks each against the manifest, and hands the trial a local directory.

Exploiting a donor copies no bytes: the next trial names the donor's checkpoint as its
parent. Names stored in the database are relative to the root, and every name that comes
back from outside is checked to stay inside it. Nothing is unpickled.

Credentials and endpoints of an object store come from the environment, read by fsspec and
its driver as usual (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``,
``FSSPEC_S3_ENDPOINT_URL``, ...), or from ``storage_options``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from fsspec.core import split_protocol, url_to_fs  # type: ignore[import-untyped]

from pbtkit._exceptions import BadCheckpoint, CheckpointError

__all__ = ["MANIFEST", "CheckpointStore", "ObjectCheckpointStore"]

MANIFEST = "MANIFEST.json"
_STAGING = ".staging"
_CHUNK = 1 << 20
_LOCAL_PROTOCOLS = ("file", "local")


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


def _is_url(text: str) -> bool:
    # Only "scheme://" and chained "a::b://" count: a folder may be named "data:x".
    return ("://" in text or "::" in text) and split_protocol(text)[0] is not None


def _is_remote(root: str | os.PathLike[str]) -> bool:
    """Whether a root names an object store (any fsspec URL but a local one)."""
    if not isinstance(root, str) or not _is_url(root):
        return False
    return split_protocol(root)[0] not in _LOCAL_PROTOCOLS


def _local_path(root: str | os.PathLike[str]) -> Path:
    """A local root as a path: ``file://`` and ``local://`` URLs lose their scheme."""
    text = os.fspath(root)
    if _is_url(text):
        text = split_protocol(text)[1]
    return Path(text).expanduser().resolve()


def _default_cache_dir() -> Path:
    if os.environ.get("PBTKIT_CACHE_DIR"):
        return Path(os.environ["PBTKIT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "pbtkit"


class CheckpointStore:
    """The checkpoints of experiments under one root: a directory or an fsspec URL.

    A plain path or a ``file://`` URL is a local directory (commit by atomic rename). Any
    other URL (``s3://bucket/prefix``, ``memory://name``) gives an
    :class:`ObjectCheckpointStore`, which uploads on commit and downloads on load; both
    keep the same contract.

    Args:
        root: The directory or URL; created if missing.
        durable: fsync files and directories on commit (turn off only for throwaway runs;
            an object store has its own durability, so this is for local roots).
        create: Create the root if missing (False to only name checkpoints inside it).
        storage_options: Options for the fsspec filesystem of a URL root (an endpoint,
            credentials); by default fsspec and its driver read them from the environment.
        cache_dir: Where a URL root's checkpoints are staged and downloaded to (default:
            ``$PBTKIT_CACHE_DIR``, else ``~/.cache/pbtkit``). Unused by local roots.
        filesystem: An fsspec filesystem to reach a URL root through, instead of the one
            fsspec opens for it (a client configured in code; a wrapper in tests).

    Attributes:
        root: The root: an absolute :class:`~pathlib.Path` for a local root, the URL (a
            string) for an object store.
        remote: Whether the root is an object store.
    """

    root: Path | str
    remote: bool = False

    def __new__(cls, *args: Any, **kwargs: Any) -> CheckpointStore:
        root = args[0] if args else kwargs.get("root")
        if cls is CheckpointStore and root is not None and _is_remote(root):
            return super().__new__(ObjectCheckpointStore)
        return super().__new__(cls)

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
        self._dir = _local_path(root)
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
        if _is_url(path):
            if _is_remote(path):
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
        path = self._dir / _STAGING / _staging_name(experiment, trial_id)
        path.mkdir(parents=True)
        return path

    @staticmethod
    def name_for(experiment: str, trial_id: int, attempt: int = 1) -> str:
        """The stored (relative) name of a trial's committed checkpoint.

        Each attempt has its own name, so a worker that lost its lease and commits late
        can never overwrite or delete the checkpoint of the attempt that replaced it.
        """
        suffix = "" if attempt <= 1 else f"-a{attempt}"
        return f"{_safe(experiment)}/trial-{trial_id:06d}{suffix}"

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
        files = _files(staging)
        if not files:
            shutil.rmtree(staging, ignore_errors=True)
            return None
        manifest = _manifest(staging, files, trial_id, durable=self.durable)
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
            _fsync_dir(target.parent)
        return name

    def verify(self, relative: str) -> Path:
        """Check a committed checkpoint against its manifest and return a local directory
        holding it (under an object store: a verified copy in the local cache).

        Raises:
            CheckpointError: The checkpoint or its manifest is missing, a file is missing,
                has another size, or another SHA-256 than when it was written.
        """
        return self.fetch(relative, verify=True)

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
        _check_files(path, _parse_manifest(relative, raw), relative, hashes=True)
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
        folder = self._dir / _safe(experiment)
        if folder.is_dir():
            for child in folder.iterdir():
                if child.resolve() not in keep_paths:
                    self._remove(child)
                    removed += 1
        return removed + _sweep_staging(self._dir / _STAGING, experiment, active_staging)

    # helpers -----------------------------------------------------------------------
    def _remove(self, path: Path) -> None:
        _discard(path)


class ObjectCheckpointStore(CheckpointStore):
    """Checkpoints under an fsspec URL with no atomic rename (``s3://bucket/prefix``, ...).

    Built by ``CheckpointStore(url)``; same arguments, same contract. A checkpoint is the
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
        if not _is_remote(url):
            raise CheckpointError(
                f"checkpoint root {url!r} is not an object store URL; "
                "CheckpointStore(path) serves a local directory"
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
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else _default_cache_dir()
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
        if not _is_url(path):
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
        path = self._staging_root() / _staging_name(experiment, trial_id)
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
        files = _files(staging)
        if not files:
            shutil.rmtree(staging, ignore_errors=True)
            return None
        manifest = _manifest(staging, files, trial_id, durable=False)
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
        entries = _parse_manifest(name, raw)
        folder = self._cache_of(name) / hashlib.sha256(raw).hexdigest()[:16]
        if folder.is_dir():
            try:
                if (folder / MANIFEST).read_bytes() == raw:
                    _check_files(folder, entries, name, hashes=verify)
                    return folder
            except (OSError, CheckpointError):
                pass  # changed or damaged since it was downloaded: fetch it again
            _discard(folder)
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
            _check_files(temp, entries, name, hashes=verify)
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
        _discard(self._cache_of(name))

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
        folder = self._remote(_safe(experiment))
        removed = 0
        with self._errors(f"cannot sweep {self._url}/{_safe(experiment)}"):
            self.fs.invalidate_cache(folder)
            try:
                children = [str(c).rstrip("/") for c in self.fs.ls(folder, detail=False)]
            except FileNotFoundError:
                children = []
            for child in children:
                if child != folder and child not in keep_paths:
                    self._remove_remote(child)
                    removed += 1
        cached = self._cache_root() / _safe(experiment)
        if cached.is_dir():
            for copy in cached.iterdir():
                if f"{_safe(experiment)}/{copy.name}" not in keep_names:
                    _discard(copy)
        return removed + _sweep_staging(self._staging_root(), experiment, active_staging)

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
        return f"CheckpointStore({self._url!r})"


# shared helpers -----------------------------------------------------------------------
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


def _manifest(staging: Path, files: list[Path], trial_id: int, *, durable: bool) -> bytes:
    """The manifest of a staging directory's files: SHA-256 and size of each."""
    entries: dict[str, dict[str, Any]] = {}
    for path in files:
        rel = path.relative_to(staging).as_posix()
        if rel == MANIFEST:
            raise CheckpointError(f"{MANIFEST} is reserved for pbtkit; name your file otherwise")
        if durable:
            with path.open("rb") as f:
                os.fsync(f.fileno())
        entries[rel] = {"sha256": _sha256(path), "size": path.stat().st_size}
    data = {"format": 1, "trial_id": trial_id, "files": entries}
    return json.dumps(data, indent=1).encode()


def _parse_manifest(name: str, raw: bytes) -> dict[str, dict[str, Any]]:
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


def _check_files(
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
        if file.stat().st_size != entry["size"] or (hashes and _sha256(file) != entry["sha256"]):
            raise BadCheckpoint(
                f"checkpoint {name!r} is corrupt: {rel!r} does not match the SHA-256 "
                "recorded when it was written; the trial that needs it cannot start from it"
            )


def _staging_name(experiment: str, trial_id: int) -> str:
    return f"{_safe(experiment)}-trial-{trial_id}-{uuid.uuid4().hex[:8]}"


def _sweep_staging(staging: Path, experiment: str, active_staging: Iterable[int]) -> int:
    prefix = f"{_safe(experiment)}-trial-"
    active = {f"{prefix}{t}-" for t in active_staging}
    removed = 0
    if staging.is_dir():
        for child in staging.iterdir():
            if child.name.startswith(prefix) and not any(child.name.startswith(a) for a in active):
                _discard(child)
                removed += 1
    return removed


def _discard(path: Path) -> None:
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
