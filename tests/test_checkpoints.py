"""Checkpoints: atomic commit, manifest verification, confinement to the root, sweeping."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pbtkit import CheckpointError
from pbtkit.checkpoints import MANIFEST, CheckpointStore


def _write(store: CheckpointStore, trial_id: int, files: dict[str, bytes], exp: str = "exp") -> str:
    staging = store.staging_dir(exp, trial_id)
    for name, data in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(data)
    name = store.commit(staging, exp, trial_id)
    assert name is not None
    return name


def test_commit_writes_manifest_and_verifies(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    name = _write(store, 7, {"model.npz": b"weights", "sub/opt.bin": b"state"})
    path = store.verify(name)
    manifest = json.loads((path / MANIFEST).read_text())
    assert set(manifest["files"]) == {"model.npz", "sub/opt.bin"}
    assert (path / "sub" / "opt.bin").read_bytes() == b"state"
    assert not any((tmp_path / ".staging").iterdir())


def test_empty_checkpoint_is_none(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    staging = store.staging_dir("exp", 1)
    assert store.commit(staging, "exp", 1) is None
    assert not staging.exists()


def test_corrupt_file_is_detected(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    name = _write(store, 1, {"model.npz": b"weights"})
    (store.resolve(name) / "model.npz").write_bytes(b"weightz")
    with pytest.raises(CheckpointError, match="corrupt"):
        store.verify(name)


def test_missing_file_and_missing_manifest(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    name = _write(store, 1, {"a": b"1", "b": b"2"})
    (store.resolve(name) / "b").unlink()
    with pytest.raises(CheckpointError, match="missing its file 'b'"):
        store.verify(name)
    (store.resolve(name) / MANIFEST).unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        store.verify(name)


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
    store = CheckpointStore(tmp_path / "root")
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
    store = CheckpointStore(tmp_path / "root")
    with pytest.raises(CheckpointError, match="root"):
        store.resolve(bad)


def test_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "root")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "root" / "link")
    with pytest.raises(CheckpointError, match="outside the checkpoint root"):
        store.resolve("link")


def test_symlinks_inside_a_checkpoint_are_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    staging = store.staging_dir("exp", 3)
    os.symlink("/etc/passwd", staging / "passwd")
    with pytest.raises(CheckpointError, match="symlink"):
        store.commit(staging, "exp", 3)


def test_recommit_replaces_an_earlier_attempt(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    _write(store, 5, {"m": b"first"})
    name = _write(store, 5, {"m": b"second"})
    assert (store.verify(name) / "m").read_bytes() == b"second"


def test_sweep_keeps_only_what_is_named(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    keep = _write(store, 1, {"m": b"1"})
    gone = _write(store, 2, {"m": b"2"})
    other = _write(store, 3, {"m": b"3"}, exp="other")
    leftover = store.staging_dir("exp", 9)
    active = store.staging_dir("exp", 10)
    removed = store.sweep("exp", [keep], active_staging=[10])
    assert removed == 2
    assert store.resolve(keep).exists()
    assert not store.resolve(gone).exists()
    assert store.resolve(other).exists()
    assert not leftover.exists()
    assert active.exists()


def test_similar_experiment_names_do_not_share_a_folder(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    a = _write(store, 1, {"m": b"a"}, exp="a b")
    b = _write(store, 2, {"m": b"b"}, exp="a_b")
    store.sweep("a b", [a])
    assert store.resolve(b).exists()
    assert a.split("/")[0] != b.split("/")[0]
