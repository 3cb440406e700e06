"""GPUs and threads per worker: the plan, and what real worker processes see.

No GPU is needed: each worker records the CUDA_VISIBLE_DEVICES it was started with,
trial.device, trial.worker and its thread settings, and the tests check them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import pbtkit as pk
from pbtkit.api import _placement
from pbtkit.config import load_config, run_kwargs
from pbtkit.controller import Controller
from pbtkit.core.fitness import Objective
from pbtkit.core.policy import PBT
from pbtkit.devices import assign_gpus, plan_devices, single_worker_env, visible_gpus
from pbtkit.spec import ExperimentSpec
from pbtkit.store import open_store
from tests import device_trainers

ROOT = Path(__file__).resolve().parents[1]


# the plan --------------------------------------------------------------------------------
def test_whole_gpus_are_dealt_out_in_order() -> None:
    plan = plan_devices(2, 1, [3, 5], environ={}, cores=8)
    assert [plan.env(i)["CUDA_VISIBLE_DEVICES"] for i in range(2)] == ["3", "5"]
    assert plan.env(1)["PBTKIT_DEVICE"] == "cuda:0"
    assert plan.env(1)["PBTKIT_WORKER_INDEX"] == "1"
    assert plan.env(0)["OMP_NUM_THREADS"] == plan.env(0)["MKL_NUM_THREADS"] == "4"
    two = plan_devices(2, 2, "0,1,2,3", environ={}, cores=8)
    assert [two.env(i)["CUDA_VISIBLE_DEVICES"] for i in range(2)] == ["0,1", "2,3"]
    assert "2 GPUs each of 0,1,2,3" in two.describe()


def test_half_a_gpu_puts_two_workers_on_each() -> None:
    plan = plan_devices(4, 0.5, ["0", "1"], environ={}, cores=2)
    assert [plan.env(i)["CUDA_VISIBLE_DEVICES"] for i in range(4)] == ["0", "0", "1", "1"]
    assert plan.env(3)["OMP_NUM_THREADS"] == "1"  # never 0, even with more workers than cores
    assert [assign_gpus(i, 1 / 3, ("7",)) for i in range(3)] == [("7",)] * 3


def test_the_default_shares_the_visible_gpus_and_falls_back_to_the_cpu() -> None:
    assert plan_devices(2, environ={"CUDA_VISIBLE_DEVICES": "4,5,6"}).gpus_per_worker == 1
    shared = plan_devices(3, environ={"CUDA_VISIBLE_DEVICES": "4"})
    assert shared.gpus_per_worker == pytest.approx(1 / 3)
    assert shared.source == "CUDA_VISIBLE_DEVICES"
    cpu = plan_devices(2, environ={"CUDA_VISIBLE_DEVICES": ""}, cores=6)
    assert cpu.gpus_per_worker == 0
    assert cpu.env(0) == {
        "CUDA_VISIBLE_DEVICES": "",
        "PBTKIT_DEVICE": "cpu",
        "PBTKIT_WORKER_INDEX": "0",
        "OMP_NUM_THREADS": "3",
        "MKL_NUM_THREADS": "3",
    }
    assert "on the CPU, 3 CPU threads each" in cpu.describe()


def test_threads_set_by_the_user_are_left_alone() -> None:
    plan = plan_devices(2, 0, environ={"OMP_NUM_THREADS": "7"}, cores=8)
    assert plan.threads is None
    assert "OMP_NUM_THREADS" not in plan.env(0)


def test_visible_gpus_reads_cuda_visible_devices_as_cuda_does() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}) == (("2", "3"), "CUDA_VISIBLE_DEVICES")
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == ((), "CUDA_VISIBLE_DEVICES")
    # CUDA stops at the first invalid entry
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"})[0] == ("1",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpus_per_worker": 1, "devices": [0]}, "need more GPUs than the 1 there are"),
        ({"gpus_per_worker": 1.5, "devices": [0, 1]}, "above 1 a worker takes whole GPUs"),
        ({"gpus_per_worker": -1}, "must be >= 0"),
        ({"gpus_per_worker": "1"}, "must be a number"),
        ({"gpus_per_worker": 1, "devices": []}, "no GPU was found (devices is empty)"),
        ({"devices": [0, 0]}, "names a GPU twice"),
        ({"devices": [0.5]}, "GPU indices or UUIDs"),
    ],
)
def test_bad_device_settings_are_explained(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(pk.ConfigError, match=None) as info:
        plan_devices(2, environ={}, **kwargs)
    assert message in str(info.value)


def test_a_gpu_setting_without_gpus_says_how_to_fix_it() -> None:
    with pytest.raises(pk.ConfigError) as info:
        plan_devices(2, 1, environ={"CUDA_VISIBLE_DEVICES": ""})
    assert "CUDA_VISIBLE_DEVICES hides them all" in str(info.value)
    assert "gpus_per_worker=0" in str(info.value)


def test_ray_gets_gpus_per_worker_as_its_gpu_resource() -> None:
    plan, bundle = _placement("ray", (2, 0.5, None), None)
    assert plan is None
    assert bundle == {"CPU": 1, "GPU": 0.5}
    assert _placement("ray", (2, 1, None), {"CPU": 2})[1] == {"CPU": 2, "GPU": 1.0}
    with pytest.raises(pk.ConfigError, match="disagree"):
        _placement("ray", (2, 1, None), {"GPU": 0.5})
    with pytest.raises(pk.ConfigError, match="Ray chooses each actor's GPUs"):
        _placement("ray", (2, 1, [0]), None)
    with pytest.raises(pk.ConfigError, match="executor='thread'"):
        _placement("thread", (2, 0.5, None), None)


def test_a_config_file_takes_gpus_per_worker_and_devices(tmp_path: Path) -> None:
    path = tmp_path / "pbt.toml"
    path.write_text(
        'metric = "score"\nready_every = 1\ntotal_steps = 2\ngpus_per_worker = 0.5\n'
        'devices = [0, 1]\n[space]\nx = { type = "uniform", low = 0, high = 1 }\n'
    )
    kwargs = run_kwargs(load_config(path))
    assert kwargs["gpus_per_worker"] == 0.5
    assert kwargs["devices"] == [0, 1]


def test_a_hand_started_worker_takes_its_share_of_the_devices() -> None:
    env = single_worker_env(1, 1, "4,6")
    assert env["CUDA_VISIBLE_DEVICES"] == "6"
    assert env["PBTKIT_WORKER_INDEX"] == "1"
    assert "OMP_NUM_THREADS" not in env  # a hand-started worker's threads are the user's
    assert single_worker_env(3, 0.5, "4,6")["CUDA_VISIBLE_DEVICES"] == "6"
    assert single_worker_env(2, None, None) == {"PBTKIT_WORKER_INDEX": "2"}
    with pytest.raises(pk.ConfigError, match=r"worker 2 would need GPUs 3\.\.3"):
        single_worker_env(2, 1, "4,6")


# what real worker processes see ---------------------------------------------------------
def _placed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kw: Any
) -> tuple[pk.Result, list[dict[str, Any]]]:
    log = tmp_path / "placement.jsonl"
    monkeypatch.setenv("PBTKIT_TEST_LOG", str(log))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_DEVICE_ORDER"):
        monkeypatch.delenv(name, raising=False)
    result = pk.run(
        device_trainers.record_placement,
        space={"x": pk.Uniform(0.1, 1.0)},
        metric="score",
        population=4,
        ready_every=1,
        total_steps=3,
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        checkpoint_dir=tmp_path / "ckpt",
        progress=False,
        tensorboard=False,
        **kw,
    )
    return result, [json.loads(line) for line in log.read_text().splitlines()]


def _by_worker(lines: list[dict[str, Any]]) -> dict[int, set[tuple[Any, ...]]]:
    seen: dict[int, set[tuple[Any, ...]]] = defaultdict(set)
    for line in lines:
        seen[line["worker"]].add((line["pid"], line["cuda_visible_devices"], line["device"]))
    return seen


@pytest.mark.slow
@pytest.mark.parametrize(
    ("gpus_per_worker", "devices", "expected"),
    [(1, [3, 5], {0: "3", 1: "5"}), (0.5, ["2"], {0: "2", 1: "2"})],
)
def test_each_worker_process_sees_the_gpus_it_was_given(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    gpus_per_worker: float,
    devices: list[Any],
    expected: dict[int, str],
) -> None:
    result, lines = _placed_run(
        tmp_path, monkeypatch, workers=2, gpus_per_worker=gpus_per_worker, devices=devices
    )
    assert all(m.status == "done" for m in result.members)
    assert len(lines) == 12  # 4 members x 3 trials, each recorded by the process that ran it
    seen = _by_worker(lines)
    assert set(seen) == {0, 1}
    for worker, records in seen.items():
        pids = {pid for pid, _, _ in records}
        assert len(pids) == 1, "one persistent process per worker index"
        assert {(cuda, device) for _, cuda, device in records} == {(expected[worker], "cuda:0")}
    # the two workers are different processes
    assert len({pid for records in seen.values() for pid, _, _ in records}) == 2


@pytest.mark.slow
def test_cpu_workers_split_the_cores_and_torch_uses_that_many_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # as on a machine without GPUs
    _, lines = _placed_run(tmp_path, monkeypatch, workers=2)
    cores = len(os.sched_getaffinity(0))
    threads = str(max(1, cores // 2))
    assert {(x["device"], x["cuda_visible_devices"]) for x in lines} == {("cpu", "")}
    assert {(x["omp"], x["mkl"], x["torch_threads"]) for x in lines} == {
        (threads, threads, int(threads))
    }
    assert {x["worker"] for x in lines} == {0, 1}


@pytest.mark.slow
def test_threads_the_user_set_reach_the_workers_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "placement.jsonl"
    monkeypatch.setenv("PBTKIT_TEST_LOG", str(log))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    pk.run(
        device_trainers.record_placement,
        space={"x": pk.Uniform(0.1, 1.0)},
        metric="score",
        population=2,
        workers=1,
        ready_every=1,
        total_steps=1,
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        checkpoint_dir=tmp_path / "ckpt",
        progress=False,
        tensorboard=False,
    )
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert {(x["omp"], x["torch_threads"]) for x in lines} == {("1", 1)}  # not cores // 1


def test_thread_workers_are_numbered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "placement.jsonl"
    monkeypatch.setenv("PBTKIT_TEST_LOG", str(log))
    monkeypatch.delenv("PBTKIT_DEVICE", raising=False)
    pk.run(
        device_trainers.record_placement,
        space={"x": pk.Uniform(0.1, 1.0)},
        metric="score",
        population=4,
        workers=2,
        ready_every=1,
        total_steps=2,
        storage="memory://",
        executor="thread",
        progress=False,
        tensorboard=False,
    )
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert {x["worker"] for x in lines} <= {0, 1}
    assert {x["device"] for x in lines} <= {"cpu", "cuda:0"}  # what torch sees here


@pytest.mark.slow
def test_pbtkit_worker_applies_its_devices_before_importing_the_function(
    tmp_path: Path,
) -> None:
    store_url = f"sqlite:///{tmp_path / 'pbt.db'}"
    with open_store(store_url) as store:
        Controller(store).create(
            "hand",
            ExperimentSpec(
                space=pk.SearchSpace({"x": pk.Uniform(0.1, 1.0)}),
                policy=PBT(objective=Objective("score"), ready_every=1, total_steps=1),
                population=1,
                checkpoint_root=str(tmp_path / "ckpt"),
            ),
        )
    log = tmp_path / "placement.jsonl"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
        "PBTKIT_TEST_LOG": str(log),
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pbtkit",
            "worker",
            "tests.device_trainers:record_placement",
            "--storage",
            store_url,
            "--experiment",
            "hand",
            "--devices",
            "4,6",
            "--gpus-per-worker",
            "1",
            "--worker-index",
            "1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    (line,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert (line["cuda_visible_devices"], line["device"], line["worker"]) == ("6", "cuda:0", 1)


def test_a_replacement_worker_takes_the_free_index() -> None:
    from pbtkit.executors import _free_slot

    assert _free_slot([]) == 0
    assert _free_slot([0, 2]) == 1
    assert _free_slot([1, 0]) == 2
