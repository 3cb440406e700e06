"""The worker loop against a real SQLite store, one trial at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

import pbtkit as pk
import pbtkit.controller
import pbtkit.store
from pbtkit.controller import Controller
from pbtkit.core.fitness import Objective
from pbtkit.core.policy import PBT
from pbtkit.spec import ExperimentSpec
from pbtkit.store import Store, open_store
from pbtkit.worker import run_worker
from tests import trainers


def _setup(tmp_path: Path, population: int = 1, max_attempts: int = 2) -> tuple[Store, Controller]:
    store = open_store(str(tmp_path / "pbt.db"))
    controller = Controller(store)
    controller.create(
        "w",
        ExperimentSpec(
            space=pk.SearchSpace({"x": pk.Uniform(0.1, 1.0)}),
            policy=PBT(objective=Objective("score"), ready_every=5, total_steps=15),
            population=population,
            checkpoint_root=str(tmp_path / "ckpt"),
            max_attempts=max_attempts,
        ),
    )
    return store, controller


def _events(store: Store, kind: str) -> list[pk.store.EventRecord]:
    with store.read() as tx:
        exp = tx.get_experiment("w")
        assert exp is not None
        return tx.events(exp.id, kind=kind)


def test_a_corrupt_parent_checkpoint_fails_the_trial_with_a_clear_error(tmp_path: Path) -> None:
    store, controller = _setup(tmp_path)
    assert run_worker(controller, "w", trainers.climb, "w1", max_trials=1) == 1
    with store.read() as tx:
        exp = tx.get_experiment("w")
        assert exp is not None
        first = tx.trials(exp.id, statuses=("done",))[0]
    state = tmp_path / "ckpt" / str(first.checkpoint) / "state.json"
    state.write_text(state.read_text().replace("value", "VALUE"))
    run_worker(controller, "w", trainers.climb, "w1")
    failed = _events(store, "failed")
    assert len(failed) == 1
    assert "corrupt" in (failed[0].detail or "")
    assert "state.json" in (failed[0].detail or "")
    with store.read() as tx:
        exp = tx.get_experiment("w")
        assert exp is not None
        assert tx.members(exp.id)[0].status == "failed"
        # the corrupt checkpoint is still there to be looked at: nothing was lost
        assert state.exists()


def test_a_metric_that_is_not_a_number_fails_the_trial(tmp_path: Path) -> None:
    store, controller = _setup(tmp_path, max_attempts=1)
    run_worker(controller, "w", trainers.reports_text, "w1")
    detail = _events(store, "failed")[0].detail or ""
    assert "metric 'score' must be a real number, got str 'high'" in detail


def test_a_report_outside_the_trial_is_refused(tmp_path: Path) -> None:
    store, controller = _setup(tmp_path, max_attempts=1)
    run_worker(controller, "w", trainers.reports_outside, "w1")
    assert "outside this trial's steps [0, 5)" in (_events(store, "failed")[0].detail or "")


def test_numpy_values_are_accepted(tmp_path: Path) -> None:
    import numpy as np

    _, controller = _setup(tmp_path)
    lease = controller.lease("w", "w1")
    assert isinstance(lease, pk.controller.Lease)
    trial = pk.Trial(lease, tmp_path, None)
    trial.report(0, score=np.float32(0.5), loss=np.array(1.5))
    with pytest.raises(pk.MetricError, match="at least one metric"):
        trial.report(0)
    with pytest.raises(pk.MetricError, match="must be an integer"):
        trial.report(0.5, score=1.0)  # type: ignore[arg-type]
    assert [r.metrics for r in trial._take_reports()] == [{"score": 0.5, "loss": 1.5}]


def test_a_worker_that_lost_its_lease_cannot_touch_the_retry_s_checkpoint(
    tmp_path: Path,
) -> None:
    from pbtkit.checkpoints import CheckpointStore, open_checkpoints
    from pbtkit.worker import _run_trial

    now = [1000.0]
    store = open_store(str(tmp_path / "pbt.db"))
    controller = Controller(store, clock=lambda: now[0], lease_seconds=10)
    controller.create(
        "w",
        ExperimentSpec(
            space=pk.SearchSpace({"x": pk.Uniform(0.1, 1.0)}),
            policy=PBT(objective=Objective("score"), ready_every=5, total_steps=15),
            population=1,
            checkpoint_root=str(tmp_path / "ckpt"),
        ),
    )
    checkpoints = open_checkpoints(tmp_path / "ckpt")
    slow = controller.lease("w", "slow")
    assert isinstance(slow, pk.controller.Lease)
    now[0] += 60  # the slow worker falls silent; its lease expires
    fast = controller.lease("w", "fast")
    assert isinstance(fast, pk.controller.Lease)
    assert fast.trial.id == slow.trial.id
    _run_trial(controller, checkpoints, fast, trainers.climb, "fast", 5.0, True)
    with store.read() as tx:
        kept = tx.get_trial(fast.trial.id).checkpoint
    assert kept is not None
    # the slow worker now finishes the same trial, commits late, and is told it lost
    _run_trial(controller, checkpoints, slow, trainers.climb, "slow", 5.0, True)
    assert (checkpoints.verify(kept) / "state.json").exists()
    late = CheckpointStore.name_for("w", slow.trial.id, slow.trial.attempt)
    assert late != kept
    assert not (tmp_path / "ckpt" / late).exists()  # its own late commit was removed
