"""gpus_per_worker with executor="ray": each actor asks Ray for that many GPUs, and sees
the one Ray gives it. The local Ray cluster declares one (logical) GPU, so this runs on a
machine without any: Ray sets each actor's CUDA_VISIBLE_DEVICES as it would on a real one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import pbtkit as pk
from tests import device_trainers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local Ray cluster with 2 CPUs and 1 GPU; yields the file the workers log to."""
    try:
        import ray
    except ImportError:
        message = "Ray is not installed: pip install 'pbtkit[ray]'"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    log = tmp_path_factory.mktemp("ray-gpu") / "placement.jsonl"
    root = str(Path(__file__).resolve().parent.parent)
    src = str(Path(root) / "src")
    ray.init(
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        object_store_memory=100 * 1024**2,
        log_to_driver=False,
        runtime_env={
            "env_vars": {"PBTKIT_TEST_LOG": str(log), "PYTHONPATH": os.pathsep.join([src, root])}
        },
    )
    try:
        yield log
    finally:
        ray.shutdown()


def test_two_ray_workers_share_a_gpu_at_half_a_gpu_each(ray_log: Path, tmp_path: Path) -> None:
    result = pk.run(
        device_trainers.record_placement,
        space={"x": pk.Uniform(0.1, 1.0)},
        metric="score",
        population=4,
        workers=2,
        ready_every=1,
        total_steps=2,
        storage=f"sqlite:///{tmp_path / 'pbt.db'}",
        checkpoint_dir=tmp_path / "ckpt",
        executor="ray",
        gpus_per_worker=0.5,
        progress=False,
        tensorboard=False,
    )
    assert all(m.status == "done" for m in result.members)
    lines = [json.loads(line) for line in ray_log.read_text().splitlines()]
    assert len(lines) == 8
    # Ray put both actors on its one GPU (both fit at 0.5), and each knows its index
    assert {(x["cuda_visible_devices"], x["device"]) for x in lines} == {("0", "cuda:0")}
    assert {x["worker"] for x in lines} == {0, 1}
    assert len({x["pid"] for x in lines}) == 2
