"""Checkpoints in an object store: the same contract as a directory, without atomic rename.

Every contract test runs twice: on fsspec's in-memory filesystem (fast) and on S3 as served
by a real S3-compatible server (moto's server mode) started on loopback for this module.
The manifest is the commit marker, so these tests look at what happens around it: written
last, removed first, and a checkpoint without one refused.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

import pbtkit as pk
from pbtkit import CheckpointError
from pbtkit.checkpoints import MANIFEST, CheckpointStore, ObjectCheckpoints, open_checkpoints
from pbtkit.checkpoints.testing import CheckpointContract
from pbtkit.checkpoints.testing import commit_files as _write
from pbtkit.controller import Controller
from pbtkit.core.fitness import Objective
from pbtkit.core.policy import PBT
from pbtkit.result import Result
from pbtkit.spec import ExperimentSpec
from pbtkit.store import open_store
from pbtkit.worker import run_worker
from tests import trainers
from tests.conftest import BUCKET, need


@pytest.fixture(params=["memory", "s3"])
def root(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty checkpoint root URL on each kind of store."""
    folder = uuid.uuid4().hex[:12]
    if request.param == "s3":
        request.getfixturevalue("s3_endpoint")
        yield f"s3://{BUCKET}/{folder}"
        return
    url = f"memory://pbtkit-tests/{folder}"
    yield url
    with contextlib.suppress(FileNotFoundError):
        fsspec.filesystem("memory").rm(url, recursive=True)


@pytest.fixture
def store(root: str, tmp_path: Path) -> CheckpointStore:
    return open_checkpoints(root, cache_dir=tmp_path / "cache")


class TestObjectCheckpoints(CheckpointContract):
    """The shipped contract, on an object store: in memory and on S3 (moto)."""

    @pytest.fixture
    def checkpoints(self, store: CheckpointStore) -> CheckpointStore:
        assert isinstance(store, ObjectCheckpoints)
        return store

    def write_file(self, checkpoints: CheckpointStore, name: str, rel: str, data: bytes) -> None:
        _put(checkpoints, name, rel, data)

    def remove_file(self, checkpoints: CheckpointStore, name: str, rel: str) -> None:
        assert isinstance(checkpoints, ObjectCheckpoints)
        checkpoints.fs.rm_file(f"{checkpoints.location(name)}/{rel}")
        checkpoints.fs.invalidate_cache()


def _objects(store: CheckpointStore, under: str) -> set[str]:
    """What the object store holds under a name, relative to it."""
    store.fs.invalidate_cache()
    prefix = store.location(under)
    found = store.fs.find(prefix)
    stripped = str(store.fs._strip_protocol(prefix))
    return {str(p)[len(stripped) + 1 :] for p in found}


def _put(store: CheckpointStore, name: str, rel: str, data: bytes) -> None:
    """Write one object behind pbtkit's back."""
    store.fs.pipe_file(f"{store.location(name)}/{rel}", data)
    store.fs.invalidate_cache()


class Recorder:
    """Wraps an fsspec filesystem: records every write and removal, in order, once done.

    ``fail_writing`` names a file whose upload breaks (a worker dying mid-commit).
    """

    _WRITES = frozenset({"put", "put_file", "pipe", "pipe_file", "open", "cp_file", "copy"})
    _REMOVES = frozenset({"rm", "rm_file", "delete", "rmdir"})

    def __init__(self, fs: Any, fail_writing: str | None = None) -> None:
        self._fs = fs
        self.fail_writing = fail_writing
        self.events: list[tuple[str, str]] = []

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self._fs, attr)
        if attr not in self._WRITES | self._REMOVES:
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            if attr == "open" and "w" not in (
                args[1] if len(args) > 1 else kwargs.get("mode", "r")
            ):
                return target(*args, **kwargs)
            paths = _paths_of(attr, args, kwargs)
            kind = "write" if attr in self._WRITES else "remove"
            if (
                kind == "write"
                and self.fail_writing
                and any(p.endswith("/" + self.fail_writing) for p in paths)
            ):
                raise ConnectionResetError("the connection dropped (simulated)")
            out = target(*args, **kwargs)
            self.events.extend((kind, p.rsplit("/", 1)[-1]) for p in paths)
            return out

        return call

    def names(self, kind: str) -> list[str]:
        return [name for k, name in self.events if k == kind]


def _paths_of(method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    if method in ("put", "put_file", "cp_file", "copy"):
        where = args[1] if len(args) > 1 else kwargs.get("rpath", kwargs.get("path2"))
    else:
        where = args[0] if args else kwargs.get("path")
    if isinstance(where, dict):
        return [str(p) for p in where]
    if isinstance(where, (list, tuple)):
        return [str(p) for p in where]
    return [str(where)]


def _recorded(
    store: CheckpointStore, tmp_path: Path, **kw: Any
) -> tuple[CheckpointStore, Recorder]:
    spy = Recorder(store.fs, **kw)
    return open_checkpoints(store.root, cache_dir=tmp_path / "cache", filesystem=spy), spy


# the contract, on both stores -------------------------------------------------------------
def test_a_url_root_is_an_object_store_and_a_file_url_a_directory(tmp_path: Path) -> None:
    remote = open_checkpoints("memory://pbtkit-tests/kind", create=False)
    assert isinstance(remote, ObjectCheckpoints)
    assert remote.remote
    assert remote.root == "memory://pbtkit-tests/kind"
    local = open_checkpoints(f"file://{tmp_path}/ckpt")
    assert not local.remote
    assert local.root == tmp_path / "ckpt"
    assert (tmp_path / "ckpt").is_dir()
    with pytest.raises(CheckpointError, match="names no folder"):
        open_checkpoints("s3://")


def test_commit_uploads_and_verify_returns_a_local_copy(
    store: CheckpointStore, tmp_path: Path
) -> None:
    staging = store.staging_dir("exp", 7)
    assert tmp_path / "cache" in staging.parents  # the user's function writes locally
    (staging / "model.npz").write_bytes(b"weights")
    (staging / "sub").mkdir()
    (staging / "sub" / "opt.bin").write_bytes(b"state")
    name = store.commit(staging, "exp", 7)
    assert name == CheckpointStore.name_for("exp", 7)
    assert not staging.exists()
    assert _objects(store, name) == {MANIFEST, "model.npz", "sub/opt.bin"}
    assert store.location(name) == f"{store.root}/{name}"
    path = store.verify(name)
    assert tmp_path / "cache" in path.parents
    assert (path / "model.npz").read_bytes() == b"weights"
    assert (path / "sub" / "opt.bin").read_bytes() == b"state"
    manifest = json.loads((path / MANIFEST).read_text())
    assert set(manifest["files"]) == {"model.npz", "sub/opt.bin"}
    assert manifest["trial_id"] == 7


def test_an_empty_checkpoint_is_none_and_uploads_nothing(store: CheckpointStore) -> None:
    staging = store.staging_dir("exp", 1)
    assert store.commit(staging, "exp", 1) is None
    assert not staging.exists()
    assert _objects(store, "exp") == set()


def test_the_manifest_is_written_last_and_removed_first(
    store: CheckpointStore, tmp_path: Path
) -> None:
    spied, spy = _recorded(store, tmp_path)
    name = _write(spied, 3, {"a.bin": b"a", "b.bin": b"b", "c/d.bin": b"d"})
    written = spy.names("write")
    assert sorted(written) == sorted([MANIFEST, "a.bin", "b.bin", "d.bin"])
    assert written[-1] == MANIFEST
    spy.events.clear()
    spied.delete(name)
    assert spy.names("remove")[0] == MANIFEST
    assert spy.names("write") == []
    assert _objects(store, name) == set()


def test_an_upload_cut_short_leaves_no_checkpoint_and_a_retry_replaces_it(
    store: CheckpointStore, tmp_path: Path
) -> None:
    broken, _ = _recorded(store, tmp_path, fail_writing=MANIFEST)
    with pytest.raises(CheckpointError, match="cannot upload"):
        _write(broken, 5, {"m": b"first", "n": b"left over"})
    name = CheckpointStore.name_for("exp", 5)
    assert _objects(store, name) == {"m", "n"}  # half a checkpoint is there...
    with pytest.raises(CheckpointError, match="incomplete"):
        store.verify(name)  # ...and nobody takes it for one
    # the trial's next attempt commits over it: the leftovers of the first are gone
    _write(store, 5, {"m": b"second"})
    assert _objects(store, name) == {MANIFEST, "m"}
    assert (store.verify(name) / "m").read_bytes() == b"second"


def test_files_without_a_manifest_are_refused_as_incomplete(store: CheckpointStore) -> None:
    name = CheckpointStore.name_for("exp", 2)
    _put(store, name, "model.npz", b"weights")
    with pytest.raises(CheckpointError, match="missing or incomplete"):
        store.verify(name)
    with pytest.raises(CheckpointError, match="missing or incomplete"):
        store.fetch(name, verify=False)


def test_the_local_copy_is_reused_and_checked_again(store: CheckpointStore, tmp_path: Path) -> None:
    name = _write(store, 4, {"m": b"weights"})
    path = store.verify(name)
    inode = (path / "m").stat().st_ino
    # another worker sharing the cache finds the same copy, checked, not downloaded again
    other = open_checkpoints(store.root, cache_dir=tmp_path / "cache", create=False)
    assert other.verify(name) == path
    assert (path / "m").stat().st_ino == inode
    # a file added to the copy: it no longer is what was committed, so it is fetched anew
    (path / "marker").write_text("planted")
    assert not (store.verify(name) / "marker").exists()
    # damaged on this disk: found out, and fetched anew
    (path / "m").write_bytes(b"weightz")
    assert (store.verify(name) / "m").read_bytes() == b"weights"
    # re-committed in the store (a retried trial): the old copy is not used
    _write(store, 4, {"m": b"retrained"})
    assert (store.verify(name) / "m").read_bytes() == b"retrained"


def test_verify_false_checks_only_that_files_are_there(store: CheckpointStore) -> None:
    name = _write(store, 4, {"m": b"weights"})
    path = store.fetch(name, verify=False)
    assert (path / "m").read_bytes() == b"weights"
    (path / "m").write_bytes(b"weightz")  # same size: not read without verify
    assert store.fetch(name, verify=False) == path
    assert (store.fetch(name) / "m").read_bytes() == b"weights"


@pytest.mark.parametrize("bad", ["../outside", "/etc", "exp/../../outside", "..", ""])
def test_names_leaving_the_root_are_refused(store: CheckpointStore, bad: str) -> None:
    for use in (store.verify, store.delete, store.location, store.resolve, store.relative):
        with pytest.raises(CheckpointError, match=r"root|empty"):
            use(bad)


def test_relative_accepts_urls_inside_the_root_only(store: CheckpointStore) -> None:
    name = _write(store, 1, {"m": b"1"})
    assert store.relative(store.location(name)) == name
    assert store.relative(name) == name
    assert store.relative("exp/./trial-000001/") == name
    for outside in (
        f"{store.root}-sibling/exp/trial-000001",
        f"{store.root}/../elsewhere/x",
        "s3://another-bucket/exp/trial-000001",
        "gs://pbtkit/x",
        str(store.root),
        "/etc/passwd",
        "file:///etc/passwd",
    ):
        with pytest.raises(CheckpointError, match="root"):
            store.relative(outside)


def test_resolve_points_to_location_and_verify(store: CheckpointStore) -> None:
    name = _write(store, 1, {"m": b"1"})
    with pytest.raises(CheckpointError, match=r"location\(name\).*verify\(name\)"):
        store.resolve(name)


def test_delete_removes_the_checkpoint_and_its_local_copy(store: CheckpointStore) -> None:
    name = _write(store, 6, {"m": b"1"})
    copy = store.verify(name)
    store.delete(name)
    assert _objects(store, name) == set()
    assert not copy.exists()
    with pytest.raises(CheckpointError, match="missing or incomplete"):
        store.verify(name)
    store.delete(name)  # already gone: no error


def test_an_unreachable_store_says_what_to_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need("s3fs")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    options = {  # a port nothing listens on, tried once
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
        "skip_instance_cache": True,
    }
    remote = open_checkpoints(
        "s3://nowhere/run", create=False, storage_options=options, cache_dir=tmp_path
    )
    remote.fs.retries = 1  # s3fs's own retries would only make the test slower
    assert not remote.exists()
    with pytest.raises(CheckpointError, match="AWS_ENDPOINT_URL"):
        remote.verify("exp/trial-000001")


# the worker and the result, on an object store ---------------------------------------------
def test_workers_train_from_the_object_store_and_the_result_names_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PBTKIT_CACHE_DIR", str(tmp_path / "cache"))  # as a worker would
    root = f"memory://pbtkit-tests/{uuid.uuid4().hex[:12]}"
    db = open_store(str(tmp_path / "pbt.db"))
    controller = Controller(db)
    space = pk.SearchSpace({"x": pk.Uniform(0.1, 1.0)})
    policy = PBT(objective=Objective("score"), ready_every=5, total_steps=20)
    spec = ExperimentSpec(space=space, policy=policy, population=4, checkpoint_root=root)
    controller.create("w", spec)
    try:
        run_worker(controller, "w", trainers.climb, "w1")
        result = Result(controller, "w")
        store = open_checkpoints(root, create=False)
        assert result.exploits, "a population this spread out must exploit"
        _assert_targets_loaded_the_donors_weights(result, store, controller)
        for m in result.members:
            assert m.step == 20
            assert isinstance(m.checkpoint, str)
            assert m.checkpoint.startswith(root + "/")
            name = store.relative(m.checkpoint)
            assert MANIFEST in _objects(store, name)
        done = [t for t in result.trials if t.status == "done"]
        # what the controller released was deleted by the worker
        assert len(_objects(store, "w")) < 2 * len(done)
        assert result.best.checkpoint is not None
        assert str(result.best.checkpoint) in result.summary_text()
    finally:
        db.close()
        with contextlib.suppress(FileNotFoundError):
            fsspec.filesystem("memory").rm(root, recursive=True)


def _assert_targets_loaded_the_donors_weights(
    result: Result, store: CheckpointStore, controller: Any
) -> None:
    metrics: dict[int, dict[str, float]] = {}
    for r in controller.reports(result.name):
        metrics.setdefault(r.trial_id, {}).update(r.metrics)
    by_id = {t.id: t for t in result.trials}
    checked = 0
    for event in result.exploits:
        assert event.trial_id is not None
        assert event.donor_trial is not None
        trial, donor = by_id[event.trial_id], by_id[event.donor_trial]
        if trial.status != "done":
            continue
        reported = metrics[trial.id]
        # the checkpoint the new trial loaded was written by the donor's trial...
        assert reported["loaded_trial"] == donor.id
        assert reported["loaded_member"] == event.donor_member != trial.member
        # ...and holds the donor's weights, not the target's own
        assert reported["loaded_value"] == donor.score
        if donor.checkpoint and MANIFEST in _objects(store, donor.checkpoint):
            saved = json.loads((store.verify(donor.checkpoint) / "state.json").read_text())
            assert saved["value"] == donor.score
        checked += 1
    assert checked, "no exploit target finished training"


# end to end: worker processes, SQLite, an S3 checkpoint root ------------------------------
@pytest.mark.slow
def test_a_run_keeps_its_checkpoints_in_s3(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a mistaken local "s3:" folder would land
    monkeypatch.setenv("PBTKIT_CACHE_DIR", str(tmp_path / "cache"))  # inherited by workers
    root = f"s3://{BUCKET}/run-{uuid.uuid4().hex[:8]}"
    result = pk.run(
        trainers.climb,
        space={"x": pk.Uniform(0.1, 1.0)},
        metric="score",
        population=6,
        workers=2,
        ready_every=5,
        total_steps=20,
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        checkpoint_dir=root,
        exploit=pk.Truncation(0.25),
        evolution="generational",
        progress=False,
        name="e2e",
    )
    assert result.spec.checkpoint_root == root
    assert all(m.status == "done" and m.step == 20 for m in result.members)
    assert result.exploits, "a population this spread out must exploit"
    store = open_checkpoints(root, create=False)
    best = result.best.checkpoint
    assert isinstance(best, str)
    assert best.startswith(root + "/")
    assert MANIFEST in _objects(store, store.relative(best))
    # the run's sweep left exactly the members' latest checkpoints
    kept = {store.relative(str(m.checkpoint)) for m in result.members if m.checkpoint}
    assert {o.split("/")[0] for o in _objects(store, "e2e")} == {k.split("/")[1] for k in kept}
    controller = Controller(open_store(f"sqlite:///{tmp_path / 'pbt.db'}"))
    _assert_targets_loaded_the_donors_weights(result, store, controller)
