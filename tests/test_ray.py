"""End-to-end runs with executor="ray": a real local Ray cluster, real actors, real stores."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pbtkit as pk
from pbtkit.executors import RayExecutor
from pbtkit.store import open_store
from tests import ray_helpers, trainers

pytestmark = pytest.mark.slow

SPACE = {"x": pk.Uniform(0.1, 1.0)}


@pytest.fixture(scope="module")
def ray_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local Ray cluster for this module; yields the file its workers log trials to.

    ``tests.trainers.climb`` appends ``trial_id pid`` to ``$PBTKIT_TEST_LOG``; the variable
    reaches the actors through the job's runtime environment.
    """
    try:
        import ray
    except ImportError:
        message = "Ray is not installed: pip install 'pbtkit[ray]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    log = tmp_path_factory.mktemp("ray") / "trials.log"
    root = str(Path(__file__).resolve().parent.parent)
    ray.init(
        num_cpus=4,
        include_dashboard=False,
        object_store_memory=100 * 1024**2,
        log_to_driver=False,
        runtime_env={"env_vars": {"PBTKIT_TEST_LOG": str(log), "PYTHONPATH": root}},
    )
    try:
        yield log
    finally:
        ray.shutdown()


@pytest.fixture
def starts(ray_log: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every ``RayExecutor.start(count)`` of the test, in order; the trial log emptied."""
    ray_log.write_text("")
    ray_log.with_name("holding").unlink(missing_ok=True)
    calls: list[int] = []
    original = RayExecutor.start

    def start(self: RayExecutor, count: int) -> None:
        calls.append(count)
        original(self, count)

    monkeypatch.setattr(RayExecutor, "start", start)
    return calls


def _run(storage: str, tmp_path: Path, train: Any = trainers.climb, **kw: Any) -> pk.Result:
    settings: dict[str, Any] = {
        "space": SPACE,
        "metric": "score",
        "population": 8,
        "workers": 2,
        "ready_every": 5,
        "total_steps": 20,
        "storage": storage,
        "checkpoint_dir": tmp_path / "ckpt",
        "exploit": pk.Truncation(0.25),
        "progress": False,
        "name": "ray-e2e",
        "executor": "ray",
        "ray_resources": {"CPU": 1},
    }
    settings.update(kw)
    return pk.run(train, **settings)


def _logged(log: Path) -> list[tuple[int, int]]:
    """(trial id, pid) of every trial the workers finished."""
    return [(int(t), int(p)) for t, p in (line.split() for line in log.read_text().splitlines())]


def _check_full_run(result: pk.Result, log: Path) -> None:
    assert len(result.members) == 8
    assert all(m.status == "done" and m.step == 20 for m in result.members)
    assert result.exploits, "a population this spread out must exploit"
    done = sorted(t.id for t in result.trials if t.status == "done")
    # 4 trials a member without exploits; a member that copies a donor goes on from the
    # donor's step (steps follow the weights), so the count varies around 8 * 4
    assert len(done) >= 8
    assert all(t.end_step <= 20 for t in result.trials)
    logged = _logged(log)
    # every finished trial ran once, in a persistent worker process that is not this one
    assert sorted(t for t, _ in logged) == done
    pids = {p for _, p in logged}
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_population_of_8_on_2_ray_actors_gets_full_budget(
    backend: str, tmp_path: Path, ray_log: Path, starts: list[int], request: pytest.FixtureRequest
) -> None:
    storage = (
        f"sqlite:///{tmp_path / 'pbt.db'}"
        if backend == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    result = _run(storage, tmp_path)
    _check_full_run(result, ray_log)
    assert starts == [2]  # two actors did all the work; none died


def _kill_the_holder(
    db: Path, marker: Path, done: threading.Event, killed: list[tuple[int, str]]
) -> None:
    """Wait for the stalled trial, find its lease owner in the store, ray.kill that actor."""
    import ray

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not done.is_set():
        if marker.exists() and marker.read_text():
            trial_id = int(marker.read_text())
            with open_store(f"sqlite:///{db}") as store, store.read() as tx:
                owner = tx.get_trial(trial_id).lease_owner
            assert owner is not None, "the stalled trial has no lease owner"
            label = owner.split(":")[2]  # host:pid:ray-xxxxxxxx
            ray.kill(ray.get_actor(f"pbtkit-{label}"), no_restart=True)
            killed.append((trial_id, owner))
            return
        time.sleep(0.02)


def test_a_ray_worker_lost_mid_trial_has_its_trial_run_again(
    tmp_path: Path, ray_log: Path, starts: list[int]
) -> None:
    db = tmp_path / "pbt.db"
    done = threading.Event()
    killed: list[tuple[int, str]] = []
    killer = threading.Thread(
        target=_kill_the_holder, args=(db, ray_log.with_name("holding"), done, killed)
    )
    killer.start()
    try:
        # A short lease, so that were the death missed, the trial would come back (late,
        # as "lease expired") and the assertions below would say so within the test's time.
        result = _run(
            f"sqlite:///{db}", tmp_path, train=ray_helpers.climb_until_killed, lease_seconds=15
        )
    finally:
        done.set()
        killer.join()
    assert killed, "the test did not manage to kill the worker"
    trial_id, owner = killed[0]
    assert all(m.status == "done" and m.step == 20 for m in result.members)
    # the dead actor's trial was given back at once (not after its lease expired)...
    retried = [e for e in result.failures if e.kind == "retry"]
    assert [e.trial_id for e in retried] == [trial_id]
    detail = retried[0].detail or ""
    assert f"Ray actor pbtkit-{owner.split(':')[2]} died" in detail
    assert "ray.kill" in detail
    # ...and ran again, to the end, in another worker
    trial = next(t for t in result.trials if t.id == trial_id)
    assert trial.status == "done"
    assert trial.attempt == 1, "a lost Ray worker must not use up one of the trial's attempts"
    ran = [pid for t, pid in _logged(ray_log) if t == trial_id]
    assert len(ran) == 1
    assert ran[0] != int(owner.split(":")[1])
    assert starts == [2, 1], "drive must start one replacement worker"


def test_without_ray_the_error_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(pk.ConfigError, match=r"pip install 'pbtkit\[ray\]'"):
        _run(f"sqlite:///{tmp_path / 'pbt.db'}", tmp_path)
    assert not (tmp_path / "pbt.db").exists(), "nothing is created before Ray is found missing"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"storage": "memory://"}, "lives inside one process"),
        ({"ray_resources": {"GPU": -1}}, "non-negative numbers"),
        ({"ray_resources": {"CPU": "one"}}, "non-negative numbers"),
        ({"executor": "process", "ray_address": "auto"}, "settings of executor='ray'"),
        ({"executor": "dask"}, "'process', 'thread' or 'ray'"),
    ],
)
def test_ray_settings_are_checked_before_anything_starts(
    tmp_path: Path, settings: dict[str, Any], message: str
) -> None:
    settings = {"storage": f"sqlite:///{tmp_path / 'pbt.db'}", **settings}
    with pytest.raises(pk.ConfigError, match=message):
        _run(train=trainers.climb, tmp_path=tmp_path, **settings)


def test_a_function_the_cluster_cannot_import_stops_the_run_with_the_reason(
    tmp_path: Path, ray_log: Path, starts: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module only this process can import: the actors, started elsewhere, cannot.
    (tmp_path / "only_here.py").write_text("def train(trial):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_here  # type: ignore[import-not-found]

    with pytest.raises(pk.PBTError, match=r"keep dying .*cannot import module 'only_here'"):
        _run(
            f"sqlite:///{tmp_path / 'pbt.db'}",
            tmp_path,
            train=only_here.train,
            population=2,
            workers=1,
            max_attempts=1,
        )
    assert sum(starts) > 1, "drive replaces a worker that dies before giving up"
