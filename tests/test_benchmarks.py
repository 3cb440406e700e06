"""The benchmarks still run: each in its smallest setting, its JSON lines parsed.

The figures in benchmarks/README.md come from these scripts; one that breaks when the
code under it changes would leave the figures unrepeatable without anyone noticing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str, cwd: Path) -> list[dict[str, object]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / args[0]), *args[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert lines, out.stdout
    return lines


@pytest.mark.slow
def test_the_store_benchmark_runs(tmp_path: Path) -> None:
    lines = _bench("store.py", "--populations", "10", "20", "--trials", "10", cwd=tmp_path)
    throughput = [line for line in lines if line["benchmark"] == "store_throughput"]
    assert [line["population"] for line in throughput] == [10, 20]
    assert all(float(line["trials_per_s"]) > 0 for line in throughput)  # type: ignore[arg-type]
    assert any(line["benchmark"] == "decision_growth" for line in lines)


@pytest.mark.slow
def test_the_conditional_cost_benchmark_runs(tmp_path: Path) -> None:
    lines = _bench("conditional.py", "--skip-quality", cwd=tmp_path)
    assert {"flat", "conditional"} <= {str(line.get("space")) for line in lines}, lines


@pytest.mark.slow
def test_the_startup_benchmark_runs(tmp_path: Path) -> None:
    lines = _bench("startup.py", "--repeats", "1", cwd=tmp_path)
    assert {str(line["command"]) for line in lines} >= {"import pbtkit", "pbtkit --help"}
    assert all(float(line["median_s"]) > 0 for line in lines)  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_trial_cycle_benchmark_runs(tmp_path: Path) -> None:
    lines = _bench("trial_cycle.py", "--repeats", "1", cwd=tmp_path)
    phases = {str(line["phase"]) for line in lines if "phase" in line}
    assert phases >= {"train", "commit", "finish", "gap"}
    (run,) = [line for line in lines if "trials" in line]
    # about 80 (8 members x 10 ready points), not exactly: steps follow the weights, so
    # a member that copies a donor behind or ahead of it trains more or fewer trials
    assert int(run["trials"]) >= 8  # type: ignore[call-overload]
    assert float(run["first_lease_s"]) > 0  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_report_batches_benchmark_runs(tmp_path: Path) -> None:
    lines = _bench(
        "report_batches.py", "--repeats", "1", "--seconds", "1", "--requests", "64",
        "--rate", "800", cwd=tmp_path,
    )  # fmt: skip
    kinds = {str(line["kind"]): line for line in lines}
    assert set(kinds) == {"health", "unbatched", "batched"}
    assert kinds["unbatched"]["stored_ok"] is True
    assert kinds["batched"]["stored_ok"] is True
    assert float(kinds["batched"]["reports_per_s"]) > 0  # type: ignore[arg-type]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["digits", "gan"])
def test_the_vectorized_versus_random_benchmark_runs(tmp_path: Path, task: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("scipy")
    steps = "100" if task == "digits" else "400"  # the GAN is ready every 200 iterations
    args = ("--versus-random", "2", "--population", "4", "--steps", steps, "--task", task)
    args += ("--workers", "1")  # one torch thread: two thrash on a loaded 2-core machine
    lines = _bench("vectorized.py", *args, cwd=tmp_path)
    runs = [line for line in lines if "method" in line]
    assert sorted((line["seed"], line["method"]) for line in runs) == [
        (0, "pbt"), (0, "random"), (1, "pbt"), (1, "random"),
    ]  # fmt: skip
    assert all(line["exploits"] == 0 for line in runs if line["method"] == "random")
    assert any(int(line["exploits"]) > 0 for line in runs if line["method"] == "pbt")  # type: ignore[call-overload]
    (summary,) = [line for line in lines if line.get("summary")]
    assert summary["seeds"] == 2
    saved = tmp_path / "out.jsonl"
    saved.write_text("\n".join(json.dumps(line) for line in runs))
    (again,) = _bench("vectorized.py", "--summarise", str(saved), "--task", task, cwd=tmp_path)
    assert again == summary
    assert summary["metric"] == ("test_accuracy" if task == "digits" else "test_mmd")


@pytest.mark.slow
def test_the_vectorized_speed_benchmark_runs_on_the_gan(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    args = ("--task", "gan", "--populations", "2", "--repeats", "1", "--steps", "20")
    lines = _bench("vectorized.py", *args, "--ready-every", "10", cwd=tmp_path)
    runs = {line["mode"]: line for line in lines if "mode" in line}
    assert set(runs) == {"vectorized", "process", "plain"}
    for mode in ("vectorized", "process"):
        assert 0.0 <= float(runs[mode]["best_mmd"]) < 2.0  # type: ignore[arg-type]
    (summary,) = [line for line in lines if line.get("summary")]
    assert summary["task"] == "gan"
    assert float(summary["speedup"]) > 0  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_toy_against_ray_benchmark_runs_its_pbtkit_side(tmp_path: Path) -> None:
    lines = _bench("toy_vs_ray.py", "--seeds", "1", "--ray-seeds", "0", cwd=tmp_path)
    runs = [line for line in lines if line["benchmark"] == "pbtkit_toy_pop8"]
    assert len(runs) == 1
    assert 0.3 < float(runs[0]["best_score"]) <= 1.2  # type: ignore[arg-type]
    assert lines[-1]["benchmark"] == "toy_pop8_pbtkit_vs_ray"


@pytest.mark.slow
def test_the_digits_floor_benchmark_runs(tmp_path: Path) -> None:
    lines = _bench("digits_floor.py", "--repeats", "1", cwd=tmp_path)
    modes = {str(line["mode"]): line for line in lines if "mode" in line}
    assert set(modes) == {"pbtkit", "floor"}
    assert int(modes["pbtkit"]["epochs"]) >= 8 * 16  # type: ignore[call-overload]
    assert float(lines[-1]["ratio_equal_work_median"]) > 0  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_vectorized_speed_benchmark_runs_every_mode_side_by_side(tmp_path: Path) -> None:
    lines = _bench(
        "vectorized.py", "--populations", "4", "--repeats", "1", "--steps", "20",
        "--ready-every", "10", cwd=tmp_path,
    )  # fmt: skip
    runs = {str(line["mode"]): line for line in lines if "mode" in line}
    assert set(runs) == {"vectorized", "process", "plain"}
    # The vectorized run is deterministic and finds a member; the floor trains no PBT.
    assert 0 < float(runs["vectorized"]["best_accuracy"]) <= 1  # type: ignore[arg-type]
    assert float(lines[-1]["speedup"]) > 0  # type: ignore[arg-type]
