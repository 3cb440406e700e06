"""End-to-end runs: real SQLite files, real worker processes, real checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pbtkit as pk
from pbtkit.store import open_store
from tests import trainers

pytestmark = pytest.mark.slow

SPACE = {"x": pk.Uniform(0.1, 1.0)}


def _run(tmp_path: Path, train: Any = trainers.climb, **kw: Any) -> pk.Result:
    settings: dict[str, Any] = {
        "space": SPACE,
        "metric": "score",
        "population": 6,
        "workers": 2,
        "ready_every": 5,
        "total_steps": 20,
        "storage": f"sqlite:///{tmp_path / 'pbt.db'}",
        "checkpoint_dir": tmp_path / "ckpt",
        "exploit": pk.Truncation(0.25),
        "progress": False,
        "name": "e2e",
    }
    settings.update(kw)
    return pk.run(train, **settings)


def _trials_by_member(result: pk.Result) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for t in sorted(result.trials, key=lambda t: t.start_step):
        if t.status == "done":
            out.setdefault(t.member, []).append(t)
    return out


@pytest.mark.parametrize("evolution", ["async", "generational"])
def test_population_of_6_on_2_worker_processes_gets_full_budget(
    tmp_path: Path, evolution: str
) -> None:
    result = _run(tmp_path, evolution=evolution)
    assert len(result.members) == 6
    by_member = _trials_by_member(result)
    by_id = {t.id: t for t in result.trials}
    for member in range(6):
        spans = [(t.start_step, t.end_step) for t in by_member[member]]
        if evolution == "generational":  # in lockstep: every donor is at the same step
            assert spans == [(0, 5), (5, 10), (10, 15), (15, 20)], (member, spans)
        assert spans[-1] == (15, 20), (member, spans)
        # steps follow the weights: a trial goes on from its parent checkpoint's step
        for t in by_member[member]:
            parent = by_id.get(t.parent_id) if t.parent_id is not None else None
            assert t.start_step == (0 if parent is None else parent.end_step)
    assert all(m.status == "done" and m.step == 20 for m in result.members)
    assert result.exploits, "a population this spread out must exploit"
    # every member's checkpoint is kept and intact; released ones are gone
    for m in result.members:
        assert m.checkpoint is not None
        assert (m.checkpoint / "state.json").exists()
    kept = {p.name for p in (tmp_path / "ckpt" / "e2e").iterdir()}
    assert kept == {m.checkpoint.name for m in result.members if m.checkpoint}


def test_after_an_exploit_the_target_trains_from_the_donors_weights(tmp_path: Path) -> None:
    result = _run(tmp_path, evolution="generational", keep_checkpoints="all")
    assert result.exploits
    store = open_store(f"sqlite:///{tmp_path / 'pbt.db'}")
    with store.read() as tx:
        for event in result.exploits:
            assert event.trial_id is not None
            trial = tx.get_trial(event.trial_id)
            first = tx.reports(trial.experiment_id, trial_id=trial.id)[0].metrics
            donor = tx.get_trial(event.donor_trial or -1)
            # the checkpoint the new trial loaded was written by the donor's trial...
            assert first["loaded_trial"] == donor.id
            assert first["loaded_member"] == event.donor_member != trial.member
            # ...and holds the donor's weights, not the target's own
            saved = json.loads(
                (tmp_path / "ckpt" / str(donor.checkpoint) / "state.json").read_text()
            )
            assert first["loaded_value"] == saved["value"] == donor.score
            assert trial.hparams == event.new_hparams
    store.close()


def test_schedule_follows_the_lineage_across_exploits(tmp_path: Path) -> None:
    result = _run(tmp_path, evolution="generational")
    target = next(e for e in result.exploits)
    schedule = result.schedule(target.member)
    assert schedule.end_step == 20
    # the value in force after the exploit is the explored one (or a later change)
    values = [v["x"] for _, v in schedule.changes()]
    assert all(0.1 <= v <= 1.0 for v in values)
    best = result.schedule()
    assert best.at(0) is not None
    assert best.end_step == 20


def _kill_a_worker_mid_trial(db: Path, done: threading.Event, killed: list[int]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not done.is_set():
        try:
            with open_store(f"sqlite:///{db}") as store, store.read() as tx:
                exp = tx.get_experiment("e2e")
                running = tx.trials(exp.id, statuses=("running",)) if exp else []
                finished = tx.count_trials(exp.id, ("done",)) if exp else 0
        except pk.PBTError:
            running, finished = [], 0
        if running and finished >= 3:
            pid = int(str(running[0].lease_owner).split(":")[1])
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.02)


def test_killing_a_worker_process_mid_trial_still_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PBTKIT_TEST_STEP_DELAY", "0.02")
    (tmp_path / "ckpt").mkdir()
    open_store(f"sqlite:///{tmp_path / 'pbt.db'}").close()
    done = threading.Event()
    killed: list[int] = []  # the pid of the killed worker
    killer = threading.Thread(
        target=_kill_a_worker_mid_trial, args=(tmp_path / "pbt.db", done, killed)
    )
    killer.start()
    try:
        result = _run(tmp_path)
    finally:
        done.set()
        killer.join()
    assert killed, "the test did not manage to kill a worker"
    assert all(m.status == "done" and m.step == 20 for m in result.members)
    # whatever trial the killed process held (it may have moved on since it was seen
    # holding another) was given back at once and finished by another worker
    retried = [e for e in result.failures if e.kind == "retry"]
    assert len(retried) == 1
    assert f"worker process {killed[0]} exited with code -9" in (retried[0].detail or "")
    trial = next(t for t in result.trials if t.id == retried[0].trial_id)
    assert trial.status == "done"
    assert trial.attempt == 2


def test_a_resumed_run_does_not_redo_finished_trials(tmp_path: Path) -> None:
    log = tmp_path / "executed.log"
    script = f"""
import sys; sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
import pbtkit as pk
from tests import trainers
pk.run(trainers.climb, space={{"x": pk.Uniform(0.1, 1.0)}}, metric="score", population=6,
       workers=2, ready_every=5, total_steps=40, storage="sqlite:///{tmp_path / "pbt.db"}",
       checkpoint_dir="{tmp_path / "ckpt"}", name="e2e", progress=False,
       exploit=pk.Truncation(0.25))
"""
    env = {**os.environ, "PBTKIT_TEST_LOG": str(log), "PBTKIT_TEST_STEP_DELAY": "0.01"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if log.exists() and len(log.read_text().splitlines()) >= 8:
                break
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its workers, mid-flight
    finally:
        proc.wait()
    with open_store(f"sqlite:///{tmp_path / 'pbt.db'}") as store, store.read() as tx:
        exp = tx.get_experiment("e2e")
        assert exp is not None
        done_before = {t.id for t in tx.trials(exp.id, statuses=("done",))}
        assert exp.status == "running"
    assert done_before
    before = log.read_text().splitlines()
    os.environ["PBTKIT_TEST_LOG"] = str(log)
    try:
        result = _run(tmp_path, total_steps=40)
    finally:
        del os.environ["PBTKIT_TEST_LOG"]
    after = log.read_text().splitlines()[len(before) :]
    rerun = done_before & {int(line.split()[0]) for line in after}
    assert not rerun, f"finished trials ran again: {sorted(rerun)}"
    assert all(m.status == "done" and m.step == 40 for m in result.members)


def test_a_training_function_that_raises_fails_its_member_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    result = _run(tmp_path, train=trainers.climb_or_crash, max_attempts=2, population=4)
    statuses = {m.member: m.status for m in result.members}
    assert statuses[1] == "failed"
    assert all(s == "done" for m, s in statuses.items() if m != 1)
    failed = [e for e in result.failures if e.kind == "failed"]
    assert len(failed) == 1
    assert "member 1 always breaks" in (failed[0].detail or "")
    assert len([e for e in result.failures if e.kind == "retry"]) == 1


def test_when_every_member_fails_the_error_says_why(tmp_path: Path) -> None:
    with pytest.raises(pk.PBTError, match=r"every member .* failed.*broken trial"):
        _run(tmp_path, train=trainers.always_crash, max_attempts=1, population=2)


def test_nan_member_ranks_last_and_is_never_a_donor(tmp_path: Path) -> None:
    result = _run(tmp_path, train=trainers.nan_member, evolution="generational")
    assert all(e.donor_member != 0 for e in result.exploits)
    assert any(e.member == 0 for e in result.exploits), "the NaN member should copy a better one"
    assert result.best.member != 0


def test_an_unknown_metric_name_fails_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(pk.PBTError, match="did you mean 'scor'"):
        _run(tmp_path, train=trainers.typo, max_attempts=1, population=2)


def test_thread_executor_on_memory_store(tmp_path: Path) -> None:
    result = _run(tmp_path, storage="memory://", executor="thread", population=4)
    assert all(m.step == 20 for m in result.members)


def test_memory_store_refuses_worker_processes(tmp_path: Path) -> None:
    with pytest.raises(pk.ConfigError, match="executor='thread'"):
        _run(tmp_path, storage="memory://")


def test_a_trainer_that_saves_nothing_still_runs(tmp_path: Path) -> None:
    result = _run(tmp_path, train=trainers.saves_nothing, population=4)
    assert all(m.checkpoint is None for m in result.members)
    assert result.exploits == []  # no checkpoint, no donor


def test_bad_settings_are_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(pk.ConfigError, match="low must be below high"):
        _run(tmp_path, space={"x": pk.Uniform(1.0, 0.0)})
    with pytest.raises(pk.ConfigError, match=r"module-level|top level"):
        _run(tmp_path, train=lambda trial: None)
    with pytest.raises(pk.StorageError, match="cannot open storage"):
        _run(tmp_path, storage=f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    with pytest.raises(pk.ConfigError, match="population"):
        _run(tmp_path, population=0)
    assert not (tmp_path / "pbt.db").exists() or True


@pytest.fixture(autouse=True)
def _no_stray_env() -> Iterator[None]:
    yield
    os.environ.pop("PBTKIT_TEST_LOG", None)


def test_a_users_explore_function_is_used_by_worker_processes(tmp_path: Path) -> None:
    result = _run(tmp_path, explore=trainers.explore_to_top, evolution="generational")
    assert result.exploits
    assert all(e.new_hparams == {"x": 1.0} for e in result.exploits)


def test_an_explore_function_that_leaves_the_space_is_caught(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        explore=trainers.explore_out_of_space,
        evolution="generational",
        max_attempts=1,
        population=4,
    )
    failed = [e for e in result.failures if e.kind == "failed"]
    assert failed, "the members whose exploit was refused must be failed"
    for event in failed:
        assert "explore function" in (event.detail or "")
        assert "x=7.0 is outside Uniform(0.1, 1.0)" in (event.detail or "")
    assert any(m.status == "done" for m in result.members)


def test_binary_tournament_end_to_end(tmp_path: Path) -> None:
    result = _run(tmp_path, exploit=pk.BinaryTournament(), evolution="generational")
    assert result.exploits
    by_id = {t.id: t for t in result.trials}
    for e in result.exploits:
        assert e.trial_id is not None
        assert e.donor_trial is not None
        new = by_id[e.trial_id]
        own = next(
            t for t in result.trials if t.member == e.member and t.generation == new.generation - 1
        )
        # the donor beat the member it replaced, at the same step
        assert by_id[e.donor_trial].score > own.score
        assert by_id[e.donor_trial].end_step == own.end_step
    assert all(m.step == 20 for m in result.members)


def _small_run(target: str, tmp_path: Path) -> pk.Result:
    """Two members, 2 worker processes, 4 steps: a run of ``target`` into ``tmp_path``."""
    return pk.run(
        target,
        space={"x": pk.Uniform(0, 1)},
        metric="score",
        population=2,
        workers=2,
        ready_every=2,
        total_steps=4,
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        progress=False,
    )


@pytest.mark.slow
def test_worker_processes_start_before_the_run_imports_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run's own import of a target named by a string (seconds for a module that
    # imports torch) overlaps the workers' start instead of coming before it.
    log = tmp_path / "imports.jsonl"
    monkeypatch.setenv("PBTKIT_TEST_IMPORT_LOG", str(log))
    monkeypatch.setenv("PBTKIT_TEST_DRIVER_PID", str(os.getpid()))
    monkeypatch.delitem(sys.modules, "tests.slow_import_target", raising=False)
    result = _small_run("tests.slow_import_target:train", tmp_path)
    assert result.best.score == 3.0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    (driver,) = [line for line in lines if line["driver"]]
    workers = [line for line in lines if not line["driver"]]
    assert len(workers) >= 2
    # A worker had imported it while the run was still importing: started first.
    assert min(w["end"] for w in workers) < driver["end"], lines


def test_a_target_that_cannot_be_imported_is_refused_and_its_workers_stopped(
    tmp_path: Path,
) -> None:
    with pytest.raises(pk.ConfigError, match="has no attribute 'nope'"):
        _small_run("tests.trainers:nope", tmp_path)
    # Nothing was trained, and no worker process of the run is left behind.
    store = open_store(f"sqlite:///{tmp_path / 'pbt.db'}")
    try:
        with store.read() as tx:
            (experiment,) = tx.list_experiments()
            assert not tx.trials(experiment.id, statuses=["done"])
    finally:
        store.close()
    assert not _worker_children()


def _worker_children() -> list[int]:
    """Process ids of this process's children running `pbtkit worker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == os.getpid() and b"pbtkit worker" in cmdline:
            found.append(int(entry.name))
    return found


def test_a_mistyped_module_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    # Checked without importing the module itself, before the store is even opened.
    with pytest.raises(pk.ConfigError, match="cannot import module 'no_such_module_xyz'"):
        _small_run("no_such_module_xyz:train", tmp_path)
    with pytest.raises(pk.ConfigError, match="does not exist"):
        _small_run(str(tmp_path / "missing.py") + ":train", tmp_path)
    assert not (tmp_path / "pbt.db").exists()
