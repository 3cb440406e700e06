"""What the security tests of the HTTP service share: a small spec, requests built by hand,
the routes of the app, and a server in a thread."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi.routing import APIRoute
from hypothesis import settings
from pydantic import BaseModel

import pbtkit as pk
from pbtkit.controller import Lease
from pbtkit.core.fitness import Objective
from pbtkit.core.policy import PBT
from pbtkit.service import RemoteController, create_app
from pbtkit.spec import ExperimentSpec
from pbtkit.store import Measurement, MemoryStore, TrialRecord

KEY = "secret-key"
INT64_MAX = 2**63 - 1
BIG = 2**70  # beyond what SQLite (and most databases) can store in an integer column
OUTSIDE = "outside the checkpoint root"
FUZZ = settings(max_examples=150, deadline=None)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _spec(population: int = 1) -> ExperimentSpec:
    return ExperimentSpec(
        space=pk.SearchSpace({"x": pk.Uniform(0.0, 1.0)}),
        policy=PBT(
            objective=Objective("score", "max"),
            exploit=pk.Truncation(0.25),
            ready_every=10,
            total_steps=30,
        ),
        population=population,
        checkpoint_root="/tmp/pbtkit-test-unused",  # the server substitutes its own root
        max_attempts=3,
    )


SPEC = _spec(population=2).to_dict()


def _auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _storage(directory: Path) -> str:
    return f"sqlite:///{directory / 's.db'}"


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


def _report(trial: TrialRecord, step: int, value: float) -> Measurement:
    return Measurement(step, {"score": value})


def _wire_report(step: int, value: float) -> dict[str, Any]:
    return {"step": step, "metrics": {"score": value}}


def _leased(remote: RemoteController, worker: str, name: str = "x") -> Lease:
    got = remote.lease(name, worker)
    assert isinstance(got, Lease), f"expected a lease, got {got!r}"
    return got


def _json_request(
    client: httpx.Client, method: str, path: str, body: Any = None, *, raw: bytes | None = None
) -> httpx.Response:
    """Send ``body`` as JSON text (Python's json, so Infinity is allowed) or ``raw`` bytes."""
    content = raw if raw is not None else None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"} if content is not None else {}
    return client.request(method, path, content=content, headers=headers)


_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
_PLAUSIBLE = {"name": "x", "trial_id": "1"}


def _fill(path: str, values: dict[str, str] = _PLAUSIBLE) -> str:
    """The path with its parameters replaced (by "1" where ``values`` names none)."""
    return _PARAM.sub(lambda match: values.get(match.group(1), "1"), path)


def _api_routes(directory: Path) -> list[APIRoute]:
    app = create_app(MemoryStore(), directory)
    routes = [r for r in app.app.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 10, "the app's routes could not be enumerated"
    return routes


def _other_routes(directory: Path) -> list[Any]:
    app = create_app(MemoryStore(), directory)
    return [r for r in app.app.routes if not isinstance(r, APIRoute)]


def _methods(route: APIRoute) -> list[str]:
    return sorted(route.methods or ())


def _body_model(route: APIRoute) -> type[BaseModel]:
    assert route.body_field is not None, route.path
    model = route.body_field.field_info.annotation
    assert isinstance(model, type), route.path
    assert issubclass(model, BaseModel), route.path
    return model


_PLAUSIBLE_FIELDS: dict[str, Any] = {
    "worker_id": "w",
    "name": "x",
    "spec": SPEC,
    "error": "Traceback: boom",
    "reason": "the worker is gone",
}


def _plausible_body(route: APIRoute) -> dict[str, Any]:
    model = _body_model(route)
    return {
        name: _PLAUSIBLE_FIELDS.get(name, 1)
        for name, field in model.model_fields.items()
        if field.is_required()
    }


@contextmanager
def _serving(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread; yields its base URL.

    The socket listens before uvicorn starts, so the first request simply waits in the
    backlog until the server takes it: nothing to poll for.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _env_without_key() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PBTKIT_AUTH_KEY"}
