"""Controller throughput on each store (docs/benchmarks.md, item 2, in process).

For each store and population size: create the experiment, mark its first generation
finished in bulk (so every measured decision sees the whole population), then lease and
finish ``--trials`` trials one after another through the in-process controller and
report finished trials per second and the median cost of one lease and one finish
(the finish holds the decision). One JSON line per result.

PostgreSQL is measured when ``--postgres URL`` is given (an empty database you own).

Usage: python benchmarks/store.py [--populations 1000 10000] [--trials 300]
       [--postgres postgresql+psycopg://user@127.0.0.1:5432/db]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import pbtkit as pk
from pbtkit.controller import Controller, Lease
from pbtkit.core.fitness import Objective
from pbtkit.core.policy import PBT
from pbtkit.spec import ExperimentSpec
from pbtkit.store import Measurement, Store, open_store


def _spec(population: int) -> ExperimentSpec:
    return ExperimentSpec(
        space=pk.SearchSpace({"lr": pk.LogUniform(1e-4, 1e-1), "m": pk.Uniform(0.0, 0.99)}),
        policy=PBT(
            objective=Objective("score"),
            exploit=pk.Truncation(0.2),
            ready_every=10,
            total_steps=1_000,
        ),
        population=population,
        checkpoint_root="/tmp/pbtkit-bench-unused",
    )


def _finish_first_generation(store: Store, name: str) -> None:
    """Mark every first trial done with a score, as if the population had trained once."""
    with store.transaction() as tx:
        experiment = tx.get_experiment(name)
        assert experiment is not None
        members = {m.member: m for m in tx.members(experiment.id)}
        for trial in tx.trials(experiment.id, generation=0):
            score = (trial.member * 7919 % 1000) / 1000.0
            done = dataclasses.replace(
                trial, status="done", score=score, metrics={"score": score}, checkpoint="c"
            )
            tx.update_trial(done, expect_status="pending")
            members[trial.member] = dataclasses.replace(
                members[trial.member],
                latest_trial_id=trial.id,
                step=trial.end_step,
                score=score,
                checkpoint="c",
            )
        tx.put_members(members.values())
    # the next generation, as the controller would have written it
    controller = Controller(store)
    with store.transaction() as tx:
        experiment = tx.get_experiment(name)
        assert experiment is not None
        spec = controller.spec(name)
        cache = controller._population(tx, experiment.id, spec)
        controller._decide(tx, spec, cache, list(cache.records), time.time())


def measure(store_name: str, url: str, population: int, trials: int) -> dict[str, object]:
    store = open_store(url)
    controller = Controller(store)
    name = f"bench-{population}"
    started = time.perf_counter()
    controller.create(name, _spec(population))
    _finish_first_generation(store, name)
    setup = time.perf_counter() - started
    lease_s: list[float] = []
    finish_s: list[float] = []
    started = time.perf_counter()
    for i in range(trials):
        t0 = time.perf_counter()
        lease = controller.lease(name, "bench")
        t1 = time.perf_counter()
        assert isinstance(lease, Lease)
        report = Measurement(lease.trial.end_step - 1, {"score": (i * 31 % 997) / 997.0})
        controller.finish(lease.trial.id, "bench", [report], "c")
        t2 = time.perf_counter()
        lease_s.append(t1 - t0)
        finish_s.append(t2 - t1)
    wall = time.perf_counter() - started
    store.close()
    return {
        "benchmark": "store_throughput",
        "store": store_name,
        "population": population,
        "trials": trials,
        "trials_per_s": round(trials / wall, 1),
        "lease_ms_p50": round(1000 * statistics.median(lease_s), 3),
        "finish_and_decide_ms_p50": round(1000 * statistics.median(finish_s), 3),
        "setup_s": round(setup, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--populations", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--postgres", help="an empty PostgreSQL database to measure too")
    args = parser.parse_args()
    results: dict[str, list[dict[str, object]]] = {"sqlite": [], "postgres": []}
    with tempfile.TemporaryDirectory() as tmp:
        for population in args.populations:
            url = f"sqlite:///{Path(tmp) / f'p{population}.db'}"
            results["sqlite"].append(measure("sqlite", url, population, args.trials))
            print(json.dumps(results["sqlite"][-1]), flush=True)
            if args.postgres:
                results["postgres"].append(
                    measure("postgres", args.postgres, population, args.trials)
                )
                print(json.dumps(results["postgres"][-1]), flush=True)
    for store_name, rows in results.items():
        if len(rows) >= 2:
            print(json.dumps(_growth(store_name, rows)), flush=True)


def _growth(store_name: str, rows: list[dict[str, object]]) -> dict[str, object]:
    """How the cost of one decision grows with the population: the exponent b of
    cost ~ population^b between the smallest and the largest population (1 is linear)."""
    first, last = rows[0], rows[-1]
    n0, n1 = float(first["population"]), float(last["population"])  # type: ignore[arg-type]
    c0 = float(first["finish_and_decide_ms_p50"])  # type: ignore[arg-type]
    c1 = float(last["finish_and_decide_ms_p50"])  # type: ignore[arg-type]
    return {
        "benchmark": "decision_growth",
        "store": store_name,
        "populations": [r["population"] for r in rows],
        "finish_and_decide_ms_p50": [r["finish_and_decide_ms_p50"] for r in rows],
        "cost_ratio": round(c1 / c0, 2),
        "population_ratio": round(n1 / n0, 2),
        "exponent": round(math.log(c1 / c0) / math.log(n1 / n0), 2),
    }


if __name__ == "__main__":
    main()
