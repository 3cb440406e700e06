"""What the service tests share: the key, a small spec, and checks of error answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

import pbtkit as pk
from pbtkit.core.fitness import Objective
from pbtkit.core.policy import PBT
from pbtkit.spec import ExperimentSpec

KEY = "secret-key"


def small_spec(population: int = 1, **policy: Any) -> ExperimentSpec:
    """A one-hyperparameter experiment of 3 trials per member (10 steps each)."""
    return ExperimentSpec(
        space=pk.SearchSpace({"x": pk.Uniform(0.0, 1.0)}),
        policy=PBT(
            objective=Objective("score", "max"),
            exploit=policy.pop("exploit", pk.Truncation(0.25)),
            ready_every=10,
            total_steps=30,
            **policy,
        ),
        population=population,
        checkpoint_root="/tmp/pbtkit-test-unused",  # the server substitutes its own root
        max_attempts=3,
    )


def auth(key: str = KEY) -> dict[str, str]:
    """The header that carries a key."""
    return {"Authorization": f"Bearer {key}"}


def sqlite_url(directory: Path, name: str = "s.db") -> str:
    """A SQLite file in ``directory``."""
    return f"sqlite:///{directory / name}"


def check_error(
    response: httpx.Response, status: int, error: str, fragment: str = ""
) -> dict[str, Any]:
    """Assert an error response: its status, its JSON shape, its type and its message."""
    where = f"{response.request.method} {response.request.url.path}"
    assert response.status_code == status, f"{where}: {response.status_code} {response.text}"
    body = response.json()
    assert isinstance(body, dict), f"{where}: {response.text}"
    assert {"error", "message", "retryable"} <= body.keys(), f"{where}: {body}"
    assert body["error"] == error, f"{where}: {body}"
    assert fragment in body["message"], f"{where}: {fragment!r} not in {body['message']!r}"
    return body
