"""The lean trial cycle: a finish hands back the worker's next lease in the same
transaction, one heartbeat thread serves all of a worker's trials, released checkpoints
are deleted off the trial's path, and a worker that stops gives back what it was handed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import pbtkit as pk
from pbtkit._exceptions import LeaseLost
from pbtkit.controller import Controller, Lease
from pbtkit.core.fitness import Objective
from pbtkit.core.policy import PBT
from pbtkit.spec import ExperimentSpec
from pbtkit.store import Measurement, Store, open_store
from pbtkit.worker import run_worker
from tests import trainers


def _setup(
    tmp_path: Path, population: int = 2, total_steps: int = 15, lease_seconds: float = 60.0
) -> tuple[Store, Controller]:
    store = open_store(str(tmp_path / "pbt.db"))
    controller = Controller(store, lease_seconds=lease_seconds)
    controller.create(
        "w",
        ExperimentSpec(
            space=pk.SearchSpace({"x": pk.Uniform(0.1, 1.0)}),
            policy=PBT(objective=Objective("score"), ready_every=5, total_steps=total_steps),
            population=population,
            checkpoint_root=str(tmp_path / "ckpt"),
        ),
    )
    return store, controller


def _trials(store: Store, status: str) -> list[pk.store.TrialRecord]:
    with store.read() as tx:
        experiment = tx.get_experiment("w")
        assert experiment is not None
        return tx.trials(experiment.id, statuses=(status,))


def test_a_finish_hands_back_the_next_lease(tmp_path: Path) -> None:
    store, controller = _setup(tmp_path)
    first = controller.lease("w", "w1")
    assert isinstance(first, Lease)
    released, following = controller.finish_and_lease(
        first.trial.id, "w1", [Measurement(4, {"score": 1.0})], None
    )
    assert released == []
    assert isinstance(following, Lease)
    assert following.trial.id != first.trial.id
    # Recorded, both of them: the finished trial is done, the next one is this worker's.
    (done,) = _trials(store, "done")
    assert done.id == first.trial.id
    assert done.score == 1.0
    (running,) = _trials(store, "running")
    assert running.id == following.trial.id
    assert running.lease_owner == "w1"
    assert running.attempt == 1
    assert following.lease_expires == running.lease_expires


def test_no_next_lease_when_nothing_is_pending(tmp_path: Path) -> None:
    store, controller = _setup(tmp_path, population=1, total_steps=5)
    only = controller.lease("w", "w1")
    assert isinstance(only, Lease)
    _, following = controller.finish_and_lease(
        only.trial.id, "w1", [Measurement(4, {"score": 1.0})], None
    )
    assert following is None  # the experiment is over: the worker asks lease() as usual
    assert controller.lease("w", "w1") == "finished"
    assert _trials(store, "running") == []


def test_a_lost_lease_writes_nothing_and_leases_nothing(tmp_path: Path) -> None:
    store, controller = _setup(tmp_path)
    mine = controller.lease("w", "w1")
    assert isinstance(mine, Lease)
    with pytest.raises(LeaseLost):
        controller.finish_and_lease(mine.trial.id, "intruder", [Measurement(4, {"score": 1.0})])
    assert _trials(store, "done") == []
    assert [t.lease_owner for t in _trials(store, "running")] == ["w1"]


def test_an_expired_lease_is_requeued_before_anything_is_handed_on(tmp_path: Path) -> None:
    now = [1000.0]
    store = open_store(str(tmp_path / "pbt.db"))
    controller = Controller(store, clock=lambda: now[0], lease_seconds=10)
    controller.create(
        "w",
        ExperimentSpec(
            space=pk.SearchSpace({"x": pk.Uniform(0.1, 1.0)}),
            policy=PBT(objective=Objective("score"), ready_every=5, total_steps=15),
            population=3,
            checkpoint_root=str(tmp_path / "ckpt"),
        ),
    )
    silent = controller.lease("w", "silent")
    busy = controller.lease("w", "busy")
    assert isinstance(silent, Lease)
    assert isinstance(busy, Lease)
    now[0] += 8
    controller.heartbeat(busy.trial.id, "busy")
    now[0] += 8  # the silent worker's lease is over, the busy one's is not
    _, following = controller.finish_and_lease(
        busy.trial.id, "busy", [Measurement(4, {"score": 1.0})], None
    )
    assert following is None  # lease() gives the dead worker's trial back first
    again = controller.lease("w", "busy")
    assert isinstance(again, Lease)
    assert silent.trial.id in {t.id for t in _trials(store, "pending")} | {again.trial.id}


def test_one_heartbeat_thread_serves_every_trial_of_a_worker(tmp_path: Path) -> None:
    store, controller = _setup(tmp_path, population=2, total_steps=20, lease_seconds=0.4)
    seen: list[list[threading.Thread]] = []
    # Workers of other tests in this process may still hold theirs (one abandoned by a
    # trial_timeout keeps its thread until its hung function returns): not counted.
    before = set(threading.enumerate())

    def beating() -> list[threading.Thread]:
        return [
            t for t in threading.enumerate() if t.name == "pbtkit-heartbeat" and t not in before
        ]

    def train(trial: pk.Trial) -> None:
        time.sleep(0.25)  # longer than a beat (0.1 s): the lease lives on beats alone
        seen.append(beating())
        trainers.climb_quietly(trial)

    ran = run_worker(controller, "w", train, "w1")
    assert ran >= 8  # 4 trials a member, and one more after each exploit of a laggard
    assert len(seen) == ran
    assert all(len(alive) == 1 for alive in seen)
    assert all(alive[0] is seen[0][0] for alive in seen)  # one thread object, kept alive
    assert beating() == []  # closed when the worker returned
    assert len(_trials(store, "done")) == ran
    assert all(t.attempt == 1 for t in _trials(store, "done"))  # no lease was lost


def test_released_checkpoints_are_gone_when_the_worker_returns(tmp_path: Path) -> None:
    store, controller = _setup(tmp_path, population=2, total_steps=20)
    run_worker(controller, "w", trainers.climb_quietly, "w1")
    kept = {t.checkpoint for t in _trials(store, "done") if not t.checkpoint_released}
    on_disk = {str(p.relative_to(tmp_path / "ckpt")) for p in (tmp_path / "ckpt" / "w").iterdir()}
    assert on_disk == kept
    assert len(on_disk) == 2  # each member's latest; every older one was deleted


def test_a_stopped_worker_gives_back_the_trial_it_was_handed(tmp_path: Path) -> None:
    store, controller = _setup(tmp_path, population=2, total_steps=20)
    stop = threading.Event()

    def train(trial: pk.Trial) -> None:
        trainers.climb_quietly(trial)
        stop.set()  # asked to stop while the finish already hands on the next trial

    assert run_worker(controller, "w", train, "w1", stop=stop) == 1
    assert _trials(store, "running") == []
    pending = _trials(store, "pending")
    assert len(pending) == 2
    assert all(t.lease_owner is None for t in pending)
