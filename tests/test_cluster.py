"""The whole many-machine setup on one machine: Ray actors, PostgreSQL, checkpoints on S3."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

import pbtkit as pk
from tests import trainers
from tests.conftest import BUCKET
from tests.test_ray import _check_full_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster_log(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local Ray cluster whose workers see the S3 server (started first)."""
    ray = pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")
    log = tmp_path_factory.mktemp("cluster") / "trials.log"
    env = {key: os.environ[key] for key in os.environ if key.startswith("AWS_")}
    env.update(PBTKIT_TEST_LOG=str(log), PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=100 * 1024**2,
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    try:
        yield log
    finally:
        ray.shutdown()


def test_population_of_8_on_ray_with_postgres_and_s3_checkpoints(
    cluster_log: Path, postgres_url: str
) -> None:
    result = pk.run(
        trainers.climb,
        space={"x": pk.Uniform(0.1, 1.0)},
        metric="score",
        population=8,
        workers=2,
        ready_every=5,
        total_steps=20,
        storage=postgres_url,
        checkpoint_dir=f"s3://{BUCKET}/cluster",
        exploit=pk.Truncation(0.25),
        executor="ray",
        ray_resources={"CPU": 1},
        progress=False,
        name="ray-e2e",
    )
    _check_full_run(result, cluster_log)
    s3 = fsspec.filesystem("s3")
    best = str(result.best.checkpoint)
    assert best.startswith(f"s3://{BUCKET}/cluster/")
    assert s3.exists(f"{best}/MANIFEST.json")
    assert s3.exists(f"{best}/state.json")
    # only the members' final checkpoints are left: the rest were released and deleted
    folders = s3.ls(f"{BUCKET}/cluster/ray-e2e")
    assert len(folders) == 8
