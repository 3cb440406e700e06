"""pbtkit's own cost per trial, by phase, with 2 local worker processes on SQLite.

The toy of docs/benchmarks.md item 1 (population 8, 100 steps, ready every 10, a report
every step), run by ``--workers`` processes of ``pbtkit worker --storage`` on one SQLite
file, started as ``pk.run`` starts them. Inside each worker the phases are timed by
wrapping the methods that do them:

- ``lease``: asking for a trial (none when a finish handed the next one back),
- ``load``: fetching and verifying the parent checkpoint,
- ``train``: the user's function (the toy's own work: the floor),
- ``commit``: sealing the checkpoint (files, manifest, fsyncs, rename),
- ``finish``: recording the trial and the policy's decision (and the next lease),
- ``gap``: everything between the end of one training call and the start of the next in
  the same worker: pbtkit's whole cost per trial, whatever phase it falls in.

One JSON line per phase: the median (p50) and p90 in milliseconds over every trial of
every repeat; then one line with the run's wall time and each worker's start-up (from the
moment its process is started to the end of its first lease). With ``--step-ms`` each
step also sleeps that long (a stand-in for real training): the line then gives the
efficiency, time inside the user's function / (workers x wall from the workers' start to
the last one's exit).

Usage: python benchmarks/trial_cycle.py [--repeats 3] [--workers 2] [--step-ms 0]
                                        [--src src --src /older/checkout/src]
With several ``--src`` the versions run in turn, repeat by repeat, under the same load.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("lease", "load", "train", "commit", "finish")


def _timed(log: list[tuple[str, float, float]], phase: str, fn: Callable[..., Any]) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            log.append((phase, started, time.time()))

    return wrapper


_LOG: list[tuple[str, float, float]] = []


def _instrument() -> None:
    """Time the phases in this worker process (``pbtkit worker`` imports this module, the
    target, before it makes its controller) and write them out when it exits."""
    import atexit

    from pbtkit.checkpoints._local import LocalCheckpoints
    from pbtkit.controller import Controller

    for name in ("lease", "finish", "finish_and_lease"):
        if hasattr(Controller, name):
            phase = "lease" if name == "lease" else "finish"
            setattr(Controller, name, _timed(_LOG, phase, getattr(Controller, name)))
    LocalCheckpoints.fetch = _timed(_LOG, "load", LocalCheckpoints.fetch)  # type: ignore[method-assign]
    LocalCheckpoints.commit = _timed(_LOG, "commit", LocalCheckpoints.commit)  # type: ignore[method-assign]
    out = Path(os.environ["PBTKIT_BENCH_OUT"]) / f"{os.getpid()}.json"
    atexit.register(lambda: out.write_text(json.dumps({"log": _LOG, "ended": time.time()})))


if os.environ.get("PBTKIT_BENCH_OUT"):
    _instrument()


def train(trial: Any) -> None:
    """The toy's training, timed; with ``PBTKIT_BENCH_STEP_MS`` each step also sleeps."""
    from pbtkit.examples import toy

    begun = time.time()
    toy.train(trial)
    step_ms = float(os.environ.get("PBTKIT_BENCH_STEP_MS", "0"))
    if step_ms:
        time.sleep(step_ms / 1000 * len(trial.steps()))
    _LOG.append(("train", begun, time.time()))


def _create(url: str, checkpoint_root: str, seed: int) -> None:
    """The experiment, created by the pbtkit under test (run in a process of its own)."""
    import pbtkit as pk
    from pbtkit.controller import Controller
    from pbtkit.examples import toy
    from pbtkit.spec import ExperimentSpec
    from pbtkit.store import open_store

    spec = ExperimentSpec(
        space=pk.SearchSpace(toy.SPACE),
        policy=pk.PBT(
            objective=pk.Objective("score", "max"),
            ready_every=10,
            total_steps=100,
            exploit=pk.Truncation(0.25),
            explore=pk.Perturb((0.8, 1.2), resample_probability=0.25),
        ),
        population=8,
        checkpoint_root=checkpoint_root,
        seed=seed,
    )
    store = open_store(url)
    Controller(store).create("cycle", spec)
    store.close()


def one_run(src: Path, workers: int, step_ms: float, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'pbt.db'}"
        out = Path(tmp) / "out"
        out.mkdir()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join((str(ROOT), str(src))),
            "PBTKIT_BENCH_STEP_MS": str(step_ms),
        }
        create = f"from benchmarks.trial_cycle import _create; _create({url!r}, {tmp!r}, {seed})"
        subprocess.run([sys.executable, "-c", create], env=env, check=True)
        env["PBTKIT_BENCH_OUT"] = str(out)
        command = [sys.executable, "-m", "pbtkit", "worker", "benchmarks.trial_cycle:train"]
        started = time.time()
        processes = [
            subprocess.Popen(
                [*command, "--storage", url, "--experiment", "cycle", "--label", f"b{i}"],
                env=env,
            )
            for i in range(workers)
        ]
        for process in processes:
            process.wait()
        results = [json.loads(p.read_text()) for p in sorted(out.iterdir())]
    ended = max(r["ended"] for r in results)
    wall = ended - started
    train_total = sum(e - s for r in results for phase, s, e in r["log"] if phase == "train")
    first = [min(e for phase, _, e in r["log"] if phase == "lease") - started for r in results]
    return {
        "results": results,
        "wall_s": wall,
        "efficiency": train_total / (workers * wall),
        "first_lease_s": first,
    }


def _gaps(log: list[list[Any]]) -> list[float]:
    trains = sorted((s, e) for phase, s, e in log if phase == "train")
    return [nxt[0] - prev[1] for prev, nxt in itertools.pairwise(trains)]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _report(src: Path, runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    per_phase: dict[str, list[float]] = {p: [] for p in (*PHASES, "gap")}
    trials = 0
    for run in runs:
        for result in run["results"]:
            for phase, s, e in result["log"]:
                per_phase[phase].append(1000 * (e - s))
            per_phase["gap"] += [1000 * g for g in _gaps(result["log"])]
            trials += sum(1 for phase, _, _ in result["log"] if phase == "train")
    common = {
        "benchmark": "trial_cycle",
        "src": str(src),
        "workers": args.workers,
        "step_ms": args.step_ms,
        "repeats": args.repeats,
    }
    for phase, values in per_phase.items():
        if values:
            line = {
                **common,
                "phase": phase,
                "calls": len(values),
                "p50_ms": round(statistics.median(values), 3),
                "p90_ms": round(_pct(values, 0.9), 3),
            }
            print(json.dumps(line), flush=True)
    first = [x for r in runs for x in r["first_lease_s"]]
    line = {
        **common,
        "trials": trials,
        "wall_s": round(statistics.median(r["wall_s"] for r in runs), 3),
        "efficiency": round(statistics.median(r["efficiency"] for r in runs), 4),
        "first_lease_s": round(statistics.median(first), 3),
        "first_lease_s_max": round(max(first), 3),
    }
    print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--step-ms", type=float, default=0.0)
    parser.add_argument("--src", action="append", type=Path, help="a src/ folder (repeatable)")
    args = parser.parse_args()
    sources = [src.resolve() for src in args.src or [ROOT / "src"]]
    runs: dict[Path, list[dict[str, Any]]] = {src: [] for src in sources}
    for seed in range(args.repeats):
        for src in sources:  # interleaved: each source sees the same load
            runs[src].append(one_run(src, args.workers, args.step_ms, seed))
    for src in sources:
        _report(src, runs[src], args)


if __name__ == "__main__":
    main()
