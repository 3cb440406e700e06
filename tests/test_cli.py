"""The pbtkit command, run as a user runs it: a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import pbtkit as pk
from pbtkit.store import open_store

ROOT = Path(__file__).resolve().parent.parent


def pbtkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pbtkit", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        check=False,
    )


CONFIG = """
metric = "score"
population = 4
workers = 2
ready_every = 5
total_steps = 15
evolution = "generational"
storage = "run.db"
checkpoint_dir = "ckpt"

[space]
x = { type = "uniform", low = 0.1, high = 1.0 }

[exploit]
type = "truncation"
fraction = 0.25
"""


def test_version(tmp_path: Path) -> None:
    out = pbtkit("--version", cwd=tmp_path)
    assert out.returncode == 0
    assert out.stdout.strip() == f"pbtkit {pk.__version__}"


@pytest.mark.slow
def test_run_then_status(tmp_path: Path) -> None:
    (tmp_path / "pbt.toml").write_text(CONFIG)
    out = pbtkit(
        "run", "tests.trainers:climb", "--config", "pbt.toml", "--no-progress", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert "best member" in out.stdout
    assert "4 members done" in out.stdout
    status = pbtkit("status", "--storage", "run.db", "--experiment", "climb", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "finished" in status.stdout
    assert "60/60" in status.stdout
    listing = pbtkit("status", "--storage", "run.db", cwd=tmp_path)
    assert "climb" in listing.stdout
    # running it again resumes a finished experiment: nothing is trained twice
    again = pbtkit(
        "run", "tests.trainers:climb", "--config", "pbt.toml", "--no-progress", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert out.stdout.splitlines()[:2] == again.stdout.splitlines()[:2]


def test_yaml_config_and_bad_config(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('metric = "score"\npopulaton = 4\n')
    out = pbtkit("run", "tests.trainers:climb", "--config", "bad.toml", cwd=tmp_path)
    assert out.returncode == 2
    assert "unknown settings: populaton" in out.stderr
    (tmp_path / "range.yaml").write_text(
        "metric: score\nready_every: 5\ntotal_steps: 10\n"
        "space:\n  x: {type: uniform, low: 2, high: 1}\n"
    )
    out = pbtkit("run", "tests.trainers:climb", "--config", "range.yaml", cwd=tmp_path)
    assert out.returncode == 2
    assert "low must be below high" in out.stderr


def test_unknown_target_and_experiment(tmp_path: Path) -> None:
    (tmp_path / "pbt.toml").write_text(CONFIG)
    out = pbtkit("run", "tests.trainers:nope", "--config", "pbt.toml", cwd=tmp_path)
    assert out.returncode == 2
    assert "has no attribute 'nope'" in out.stderr
    out = pbtkit("status", "--storage", "empty.db", "--experiment", "ghost", cwd=tmp_path)
    assert out.returncode == 2
    assert "there is no database at" in out.stderr
    open_store(f"sqlite:///{tmp_path / 'empty.db'}").close()
    out = pbtkit("status", "--storage", "empty.db", "--experiment", "ghost", cwd=tmp_path)
    assert out.returncode == 2
    assert "no experiment named 'ghost'" in out.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("status",),
        ("status", "--experiment", "x"),
        ("db", "version"),
        ("best",),
        ("export",),
        ("plot",),
        ("replay", "--experiment", "x"),
    ],
)
def test_reading_commands_create_nothing_at_a_mistyped_path(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    out = pbtkit(*command, "--storage", "typo.db", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "no database at" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "typo.db").exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_demo_quick(tmp_path: Path) -> None:
    out = pbtkit("demo", "--quick", "--no-progress", "--dir", "d", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "toy problem" in out.stdout
    assert "test accuracy of the best member" in out.stdout
    assert (tmp_path / "d" / "pbt.db").exists()


def test_ray_resources_are_parsed_and_bad_ones_explained() -> None:
    from pbtkit.cli._train import _resources

    assert _resources("CPU=1, GPU=0.5,accelerator=2") == {
        "CPU": 1.0,
        "GPU": 0.5,
        "accelerator": 2.0,
    }
    for bad in ("CPU", "CPU=lots", "=1"):
        with pytest.raises(pk.ConfigError, match="NAME=NUMBER pairs"):
            _resources(bad)
