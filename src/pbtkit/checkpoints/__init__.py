"""Checkpoints: one per trial, committed so that a reader sees all of it or none, verified on load.

A trial writes its files into a private local staging directory. ``commit`` hashes every
file and writes ``MANIFEST.json`` (SHA-256 and size of each file) last:

- under a local root (a path, or a ``file://`` URL: :class:`LocalCheckpoints`) it fsyncs
  and renames the directory into place, so a reader sees a whole checkpoint or none;
- under any other fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``memory://...``:
  :class:`ObjectCheckpoints`) there is no atomic rename: it uploads the files, then the
  manifest. The manifest's existence is the commit marker: a checkpoint without one is
  incomplete and is refused, and deletion removes the manifest first. Loading downloads
  the files into a local cache (``cache_dir``), checks each against the manifest, and
  hands the trial a local directory.

Exploiting a donor copies no bytes: the next trial names the donor's checkpoint as its
parent. Names stored in the database are relative to the root, and every name that comes
back from outside is checked to stay inside it. Nothing is unpickled.

Credentials and endpoints of an object store come from the environment, read by fsspec and
its driver as usual (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``,
``FSSPEC_S3_ENDPOINT_URL``, ...), or from ``storage_options``. Every backend passes the
shipped contract suite, :mod:`pbtkit.checkpoints.testing`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pbtkit.checkpoints._base import CheckpointStore
from pbtkit.checkpoints._local import LocalCheckpoints
from pbtkit.checkpoints._manifest import MANIFEST, is_remote
from pbtkit.checkpoints._object import ObjectCheckpoints

__all__ = [
    "MANIFEST",
    "CheckpointStore",
    "LocalCheckpoints",
    "ObjectCheckpoints",
    "open_checkpoints",
]


def open_checkpoints(
    root: str | os.PathLike[str],
    *,
    durable: bool = True,
    create: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    filesystem: Any = None,
) -> CheckpointStore:
    """The checkpoints under ``root``: the one place a root picks its backend.

    Args:
        root: A directory or ``file://`` URL (:class:`LocalCheckpoints`), or any other
            fsspec URL (:class:`ObjectCheckpoints`); created if missing.
        durable: fsync files and directories on commit (local roots; turn off only for
            throwaway runs).
        create: Create the root if missing (False to only name checkpoints inside it).
        storage_options: Options for the fsspec filesystem of a URL root (an endpoint,
            credentials); by default fsspec and its driver read them from the environment.
        cache_dir: Where a URL root's checkpoints are staged and downloaded to (default:
            ``$PBTKIT_CACHE_DIR``, else ``~/.cache/pbtkit``).
        filesystem: An fsspec filesystem to reach a URL root through, instead of the one
            fsspec opens for it (a client configured in code; a wrapper in tests).

    Raises:
        CheckpointError: The root cannot be created or reached.
    """
    if is_remote(root):
        return ObjectCheckpoints(
            root,
            create=create,
            storage_options=storage_options,
            cache_dir=cache_dir,
            filesystem=filesystem,
        )
    return LocalCheckpoints(root, durable=durable, create=create)
