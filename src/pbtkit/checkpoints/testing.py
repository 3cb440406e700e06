"""The contract every checkpoint backend must show, as a pytest suite shipped with pbtkit.

Subclass :class:`CheckpointContract`, give it a ``checkpoints`` fixture that opens an
empty root of your backend, and the hooks that change a committed checkpoint behind the
backend's back (as a crash, a full disk or an intruder would)::

    class TestMyCheckpoints(CheckpointContract):
        @pytest.fixture
        def checkpoints(self, tmp_path):
            return MyCheckpoints(tmp_path)

        def write_file(self, checkpoints, name, rel, data): ...
        def remove_file(self, checkpoints, name, rel): ...

The local directory and the object store (in memory and on S3) pass it in pbtkit's own
tests. It needs pytest.
"""

from __future__ import annotations

import abc
import json
from pathlib import Path
from typing import ClassVar

import pytest

from pbtkit._exceptions import BadCheckpoint, CheckpointError
from pbtkit.checkpoints._base import CheckpointStore
from pbtkit.checkpoints._manifest import MANIFEST

__all__ = ["CheckpointContract", "commit_files"]


def commit_files(
    checkpoints: CheckpointStore,
    trial_id: int,
    files: dict[str, bytes],
    experiment: str = "exp",
    *,
    attempt: int = 1,
) -> str:
    """Stage ``files`` as trial ``trial_id`` would and commit them; the stored name."""
    staging = checkpoints.staging_dir(experiment, trial_id)
    for rel, data in files.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(data)
    name = checkpoints.commit(staging, experiment, trial_id, attempt=attempt)
    assert name is not None
    return name


def _listing(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


class CheckpointContract(abc.ABC):
    """Behaviour every :class:`~pbtkit.checkpoints.CheckpointStore` must show."""

    FILES: ClassVar[dict[str, bytes]] = {
        "model.npz": b"weights",
        "optim/state.json": b'{"step": 3}',
    }

    @abc.abstractmethod
    def write_file(self, checkpoints: CheckpointStore, name: str, rel: str, data: bytes) -> None:
        """Write ``data`` to the file ``rel`` of the committed checkpoint ``name``, in the
        backend itself (not in a local copy)."""

    @abc.abstractmethod
    def remove_file(self, checkpoints: CheckpointStore, name: str, rel: str) -> None:
        """Remove the file ``rel`` of the committed checkpoint ``name``, in the backend."""

    # commit and fetch ---------------------------------------------------------------
    def test_a_commit_is_fetched_whole(self, checkpoints: CheckpointStore) -> None:
        name = commit_files(checkpoints, 7, self.FILES)
        folder = checkpoints.fetch(name)
        assert _listing(folder) == self.FILES
        manifest = json.loads((folder / MANIFEST).read_text())
        assert set(manifest["files"]) == set(self.FILES)
        assert checkpoints.verify(name) == folder
        assert checkpoints.relative(checkpoints.location(name)) == name

    def test_an_empty_checkpoint_is_none(self, checkpoints: CheckpointStore) -> None:
        staging = checkpoints.staging_dir("exp", 1)
        assert checkpoints.commit(staging, "exp", 1) is None
        assert not staging.exists()

    def test_each_attempt_has_its_own_name(self, checkpoints: CheckpointStore) -> None:
        first = commit_files(checkpoints, 4, {"m": b"one"})
        second = commit_files(checkpoints, 4, {"m": b"two"}, attempt=2)
        assert first != second
        assert _listing(checkpoints.fetch(first)) == {"m": b"one"}
        assert _listing(checkpoints.fetch(second)) == {"m": b"two"}
        again = commit_files(checkpoints, 4, {"m": b"three"})  # a re-commit replaces
        assert again == first
        assert _listing(checkpoints.fetch(first)) == {"m": b"three"}

    # damage is found ------------------------------------------------------------------
    @pytest.mark.parametrize("data", [b"weightz", b"other size"])
    def test_a_changed_file_is_refused(self, checkpoints: CheckpointStore, data: bytes) -> None:
        name = commit_files(checkpoints, 1, self.FILES)
        self.write_file(checkpoints, name, "model.npz", data)
        with pytest.raises(BadCheckpoint, match="corrupt"):
            checkpoints.fetch(name)

    def test_a_missing_file_is_refused(self, checkpoints: CheckpointStore) -> None:
        name = commit_files(checkpoints, 1, self.FILES)
        self.remove_file(checkpoints, name, "optim/state.json")
        with pytest.raises(BadCheckpoint, match=r"missing its file 'optim/state\.json'"):
            checkpoints.fetch(name)

    def test_a_checkpoint_without_its_manifest_is_incomplete(
        self, checkpoints: CheckpointStore
    ) -> None:
        name = commit_files(checkpoints, 1, self.FILES)
        self.remove_file(checkpoints, name, MANIFEST)
        with pytest.raises(BadCheckpoint, match="missing or incomplete"):
            checkpoints.fetch(name)

    def test_a_corrupt_manifest_is_refused(self, checkpoints: CheckpointStore) -> None:
        name = commit_files(checkpoints, 1, self.FILES)
        self.write_file(checkpoints, name, MANIFEST, b"{not json")
        with pytest.raises(BadCheckpoint, match="corrupt manifest"):
            checkpoints.fetch(name)
        escape = {"files": {"../../x": {"sha256": "", "size": 0}}}
        self.write_file(checkpoints, name, MANIFEST, json.dumps(escape).encode())
        with pytest.raises(BadCheckpoint, match="not its file"):
            checkpoints.fetch(name)

    def test_a_file_added_after_the_commit_never_reaches_a_trial(
        self, checkpoints: CheckpointStore
    ) -> None:
        name = commit_files(checkpoints, 1, self.FILES)
        self.write_file(checkpoints, name, "extra.npy", b"planted")
        refused: BadCheckpoint | None = None
        try:
            folder = checkpoints.fetch(name)
        except BadCheckpoint as error:
            refused = error
        if refused is not None:  # a local root refuses it, naming the file
            assert "extra.npy" in str(refused)
        else:  # an object store hands over a copy of what was committed, and only that
            assert _listing(folder) == self.FILES

    def test_a_deleted_checkpoint_is_refused(self, checkpoints: CheckpointStore) -> None:
        name = commit_files(checkpoints, 1, self.FILES)
        checkpoints.delete(name)
        checkpoints.delete(name)  # already gone: no error
        with pytest.raises(BadCheckpoint):
            checkpoints.fetch(name)

    # names stay inside the root ------------------------------------------------------------
    @pytest.mark.parametrize("bad", ["../outside", "/etc", "exp/../../outside", ""])
    def test_names_leaving_the_root_are_refused(
        self, checkpoints: CheckpointStore, bad: str
    ) -> None:
        with pytest.raises(CheckpointError):
            checkpoints.location(bad)
        with pytest.raises(CheckpointError):
            checkpoints.fetch(bad)

    # sweeping -----------------------------------------------------------------------------
    def test_sweep_keeps_only_what_is_named(self, checkpoints: CheckpointStore) -> None:
        keep = commit_files(checkpoints, 1, {"m": b"1"})
        drop = commit_files(checkpoints, 2, {"m": b"2"})
        other = commit_files(checkpoints, 3, {"m": b"3"}, experiment="other")
        checkpoints.staging_dir("exp", 9)  # an abandoned staging folder
        assert checkpoints.sweep("exp", [keep]) >= 2
        assert _listing(checkpoints.fetch(keep)) == {"m": b"1"}
        assert _listing(checkpoints.fetch(other)) == {"m": b"3"}
        with pytest.raises(BadCheckpoint):
            checkpoints.fetch(drop)

    def test_similar_experiment_names_do_not_share_a_folder(
        self, checkpoints: CheckpointStore
    ) -> None:
        a = commit_files(checkpoints, 1, {"m": b"a"}, experiment="a b")
        b = commit_files(checkpoints, 1, {"m": b"b"}, experiment="a_b")
        assert a.split("/")[0] != b.split("/")[0]
        checkpoints.sweep("a b", [])
        assert _listing(checkpoints.fetch(b)) == {"m": b"b"}
