"""Checkpoints: atomic commit, manifest verification, confinement to the root, sweeping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pbtkit import CheckpointError
from pbtkit.checkpoints import CheckpointStore, LocalCheckpoints, open_checkpoints
from pbtkit.checkpoints.testing import CheckpointContract
from pbtkit.checkpoints.testing import commit_files as _write


class TestLocalCheckpoints(CheckpointContract):
    """The shipped contract, on a local directory."""

    @pytest.fixture
    def checkpoints(self, tmp_path: Path) -> CheckpointStore:
        store = open_checkpoints(tmp_path / "root")
        assert isinstance(store, LocalCheckpoints)
        return store

    def write_file(self, checkpoints: CheckpointStore, name: str, rel: str, data: bytes) -> None:
        (checkpoints.resolve(name) / rel).write_bytes(data)

    def remove_file(self, checkpoints: CheckpointStore, name: str, rel: str) -> None:
        (checkpoints.resolve(name) / rel).unlink()


def _plant_symlink_extra(folder: Path) -> str:
    os.symlink("/etc/passwd", folder / "extra.npy")
    return "symlink 'extra.npy' -> '/etc/passwd'"


def _plant_symlink_over_listed(folder: Path) -> str:
    (folder / "theta.npy").unlink()
    os.symlink("/etc/passwd", folder / "theta.npy")
    return "symlink 'theta.npy'"


def _plant_file(folder: Path) -> str:
    (folder / "extra.npy").write_bytes(b"planted")
    return "file 'extra.npy' that its manifest does not list"


def _plant_folder(folder: Path) -> str:
    (folder / "sub").mkdir()
    return "folder 'sub' that its manifest does not list"


def _plant_symlinked_folder(folder: Path) -> str:
    os.symlink("/etc", folder / "etc")
    return "symlink 'etc' -> '/etc'"


@pytest.mark.parametrize(
    "plant",
    [
        _plant_symlink_extra,
        _plant_symlink_over_listed,
        _plant_file,
        _plant_folder,
        _plant_symlinked_folder,
    ],
)
def test_verify_refuses_anything_the_manifest_does_not_list(tmp_path: Path, plant: object) -> None:
    store = open_checkpoints(tmp_path / "root")
    name = _write(store, 1, {"theta.npy": b"weights"})
    assert callable(plant)
    expected = plant(store.resolve(name))
    with pytest.raises(CheckpointError) as error:
        store.verify(name)
    message = str(error.value)
    assert expected in message, message
    assert "changed after its commit" in message or "refused" in message


@pytest.mark.parametrize("bad", ["../outside", "/etc", "exp/../../outside"])
def test_paths_outside_the_root_are_refused(tmp_path: Path, bad: str) -> None:
    store = open_checkpoints(tmp_path / "root")
    with pytest.raises(CheckpointError, match="root"):
        store.resolve(bad)


def test_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    store = open_checkpoints(tmp_path / "root")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "root" / "link")
    with pytest.raises(CheckpointError, match="outside the checkpoint root"):
        store.resolve("link")


def test_symlinks_inside_a_checkpoint_are_refused(tmp_path: Path) -> None:
    store = open_checkpoints(tmp_path)
    staging = store.staging_dir("exp", 3)
    os.symlink("/etc/passwd", staging / "passwd")
    with pytest.raises(CheckpointError, match="symlink"):
        store.commit(staging, "exp", 3)
