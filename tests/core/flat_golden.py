"""The outputs of flat (unconditional) spaces, recorded before conditions existed.

``python -m tests.core.flat_golden`` writes ``tests/core/data/flat_golden.json``; the test
in ``test_conditions.py`` recomputes every entry and compares, so a flat space samples,
explores and stores exactly as it did (experiments stored before keep resuming the same).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pbtkit.core import (
    PB2,
    PBT,
    Choice,
    GaussianNoise,
    IntUniform,
    Keep,
    LogUniform,
    MemberView,
    Objective,
    Ordinal,
    Perturb,
    Population,
    Resample,
    SearchSpace,
    Truncation,
    Uniform,
)
from pbtkit.spec import ExperimentSpec

GOLDEN = Path(__file__).parent / "data" / "flat_golden.json"


def spaces() -> dict[str, SearchSpace]:
    """Flat spaces covering every domain type."""
    return {
        "mixed": SearchSpace(
            {
                "lr": LogUniform(1e-4, 1.0),
                "momentum": Uniform(0.0, 0.99),
                "layers": IntUniform(1, 8),
                "optimizer": Choice(["sgd", "adam", "rmsprop"]),
                "batch": Ordinal([16, 32, 64, 128]),
                "flag": Choice([True, False, None]),
            }
        ),
        "numeric": SearchSpace(
            {"x": Uniform(-1.0, 1.0), "y": LogUniform(1e-3, 10.0), "n": IntUniform(0, 1000)}
        ),
    }


def explorers() -> dict[str, Any]:
    """Every built-in explorer, some with settings."""
    return {
        "perturb": Perturb(),
        "perturb_custom": Perturb(
            factors=(0.5, 0.9, 1.1, 2.0),
            resample_probability=0.1,
            per_param={"lr": {"factors": (0.25, 4.0)}, "layers": {"integers": "scale"}},
            integers="step",
        ),
        "perturb_scale": Perturb(integers="scale", resample_probability=0.0),
        "resample": Resample(0.5),
        "gaussian": GaussianNoise(0.2),
        "keep": Keep(),
    }


def _pb2_population(space: SearchSpace) -> Population:
    rng = np.random.default_rng(123)
    recent = []
    for i in range(24):
        hparams = space.sample(rng)
        recent.append(
            MemberView(
                member=i % 6,
                trial_id=i,
                step=10 * (1 + i // 6),
                score=0.0,
                hparams=hparams,
                gain=float(rng.standard_normal()),
                generation=i // 6,
            )
        )
    latest = {view.member: view for view in recent}
    return Population.from_views(latest.values(), recent=lambda generations: recent)


def compute() -> dict[str, Any]:
    """Every recorded output, as JSON."""
    out: dict[str, Any] = {}
    for space_name, space in spaces().items():
        out[f"{space_name}/spec"] = space.to_dict()
        samples = [space.sample(np.random.default_rng(seed)) for seed in range(6)]
        out[f"{space_name}/sample"] = samples
        for name, explorer in explorers().items():
            per_field = explorer.per_param if isinstance(explorer, Perturb) else {}
            if any(key not in space for key in per_field):
                continue
            out[f"{space_name}/{name}"] = [
                explorer(values, space, np.random.default_rng([seed, 7]))
                for seed, values in enumerate(samples)
            ]
        pop = _pb2_population(space)
        pb2 = PB2(candidates=64)
        out[f"{space_name}/pb2"] = [
            pb2(
                values,
                space,
                np.random.default_rng([seed, 9]),
                population=pop,
                objective=Objective("acc", "max"),
            )
            for seed, values in enumerate(samples[:3])
        ]
        spec = ExperimentSpec(
            space=space,
            policy=PBT(
                Objective("acc", "max"),
                exploit=Truncation(0.25),
                explore=Perturb(),
                ready_every=5,
                total_steps=50,
            ),
            population=6,
            checkpoint_root="/tmp/ckpt",
            seed=11,
            initial=({next(iter(space)): samples[0][next(iter(space))]},),
        )
        out[f"{space_name}/experiment_spec"] = spec.to_dict()
        out[f"{space_name}/first_hparams"] = [
            spec.first_hparams(member, np.random.default_rng([11, 0, member]))
            for member in range(3)
        ]
    return out


def canonical(value: Any) -> str:
    """JSON that keeps float bits exactly (repr) and key order."""
    return json.dumps(value, indent=1)


if __name__ == "__main__":
    GOLDEN.write_text(canonical(compute()) + "\n")
    print(f"wrote {GOLDEN}")
