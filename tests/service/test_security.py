"""Security of the HTTP service, checked against a real server on 127.0.0.1.

Authentication on every route, no open listening without a key, checkpoint paths kept
inside the root, the body size limit, malformed requests (never a 500), late reports after
a lease expired, nothing unpickled anywhere, and the one place that maps errors to
statuses. Each of the bugs these tests once found has a test of its own here.
"""

from __future__ import annotations

import ast
import itertools
import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from fastapi.routing import APIRoute
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import pbtkit as pk
from pbtkit.controller import Lease
from pbtkit.core.fitness import Objective
from pbtkit.core.policy import PBT
from pbtkit.service import PBTServer, RemoteController, create_app
from pbtkit.service._http import STATUS, _status_of, check_exposure
from pbtkit.spec import ExperimentSpec
from pbtkit.store import Measurement, MemoryStore, TrialRecord
from tests.helpers import free_port as _free_port

KEY = "secret-key"
INT64_MAX = 2**63 - 1
BIG = 2**70  # beyond what SQLite (and most databases) can store in an integer column
OUTSIDE = "outside the checkpoint root"
FUZZ = settings(max_examples=150, deadline=None)


# helpers ---------------------------------------------------------------------------
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


# fixtures --------------------------------------------------------------------------
class _TracebackWithoutCarets(logging.Filter):
    """Render a logged exception as plain text, without Python 3.11's ``^^^^`` lines.

    Drawing the carets calls ``ast.parse``, and CPython 3.11 keeps the parser's recursion
    counter in state shared by every thread: a server thread logging a 500 while pytest
    draws a failure in the main thread kills the run with "SystemError: AST constructor
    recursion depth mismatch" instead of reporting the failure.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            frames = "".join(
                f'\n  File "{frame.f_code.co_filename}", line {line}, in {frame.f_code.co_name}'
                for frame, line in traceback.walk_tb(error.__traceback__)
            )
            record.msg = (
                f"{record.getMessage()}\nTraceback (most recent call last):{frames}\n"
                f"{type(error).__name__}: {error}"
            )
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


@pytest.fixture(autouse=True, scope="module")
def _server_tracebacks_without_carets() -> Iterator[None]:
    plain = _TracebackWithoutCarets()
    loggers = [logging.getLogger(name) for name in ("pbtkit.service", "uvicorn.error")]
    for logger in loggers:
        logger.addFilter(plain)
    yield
    for logger in loggers:
        logger.removeFilter(plain)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PBTServer]:
    with PBTServer(
        0, KEY, storage=_storage(tmp_path), checkpoint_root=tmp_path / "ckpt"
    ) as running:
        yield running


@pytest.fixture
def http(server: PBTServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=_auth(), timeout=30) as client:
        yield client


@pytest.fixture
def remote(server: PBTServer) -> Iterator[RemoteController]:
    with RemoteController(server.url, KEY, max_outage=0) as controller:
        yield controller


@pytest.fixture(scope="module")
def api_routes(tmp_path_factory: pytest.TempPathFactory) -> list[APIRoute]:
    return _api_routes(tmp_path_factory.mktemp("routes"))


@pytest.fixture(scope="module")
def post_routes(api_routes: list[APIRoute]) -> list[APIRoute]:
    return [r for r in api_routes if "POST" in _methods(r)]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """One server for the many malformed requests, with experiment "x" in it.

    ``Connection: close``: uvicorn drops a connection after a 500, and a reused one would
    then fail with a reset that hides the status.
    """
    directory = tmp_path_factory.mktemp("shared")
    with PBTServer(
        0, KEY, storage=_storage(directory), checkpoint_root=directory / "ckpt"
    ) as running:
        with RemoteController(running.url, KEY, max_outage=0) as remote:
            remote.create("x", _spec(population=4))
        headers = {**_auth(), "Connection": "close"}
        with httpx.Client(base_url=running.url, headers=headers, timeout=30) as client:
            yield client


# authentication ----------------------------------------------------------------------
BAD_AUTHORIZATION = {
    "no header": None,
    "wrong key": "Bearer wrong-key",
    "scheme without key": "Bearer",
    "basic scheme": "Basic secret-key",
    "token scheme": "Token secret-key",
    "key without scheme": "secret-key",
    "no space after scheme": "Bearersecret-key",
    "prefix of the key": "Bearer secret",
    "key plus a suffix": "Bearer secret-key-and-more",
    "suffix of the key": "Bearer key",
    "key after a prefix": "Bearer my-secret-key",
    "key in upper case": "Bearer SECRET-KEY",
}


def _ask(
    client: httpx.Client, route: APIRoute, method: str, headers: dict[str, str]
) -> httpx.Response:
    # An invalid body for POST routes: the key must be checked before the body is read.
    body: dict[str, Any] | None = {} if method == "POST" else None
    return client.request(method, _fill(route.path), json=body, headers=headers)


@pytest.mark.parametrize("authorization", BAD_AUTHORIZATION.values(), ids=BAD_AUTHORIZATION)
def test_every_api_route_but_health_refuses_a_missing_or_wrong_key(
    server: PBTServer, api_routes: list[APIRoute], authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    checked, wrong = [], []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for route in api_routes:
            if route.path == "/health":
                continue
            for method in _methods(route):
                response = _ask(client, route, method, headers)
                checked.append(f"{method} {route.path}")
                body = response.json()
                if (
                    response.status_code != 401
                    or body.get("error") != "Unauthorized"
                    or "Authorization: Bearer" not in body.get("message", "")
                    or response.headers.get("www-authenticate") != "Bearer"
                ):
                    wrong.append(f"{method} {route.path} -> {response.status_code} {body}")
    assert len(checked) >= 13
    assert wrong == []


def test_the_right_key_opens_every_api_route(
    server: PBTServer, http: httpx.Client, api_routes: list[APIRoute]
) -> None:
    # The counterpart of the test above: its 401s come from the key, not from the route.
    refused = [
        f"{method} {route.path}"
        for route in api_routes
        for method in _methods(route)
        if _ask(http, route, method, {}).status_code == 401
    ]
    assert refused == []


def test_health_needs_no_key(server: PBTServer) -> None:
    response = httpx.get(f"{server.url}/health", timeout=30)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_the_documentation_routes_need_the_key_too(server: PBTServer, tmp_path: Path) -> None:
    open_routes = []
    for route in _other_routes(tmp_path / "routes"):
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            response = httpx.request(method, f"{server.url}{route.path}", timeout=30)
            if response.status_code != 401:
                open_routes.append(f"{method} {route.path} -> {response.status_code}")
    assert open_routes == []


def test_a_server_without_a_key_on_loopback_needs_no_header(tmp_path: Path) -> None:
    with PBTServer(0, None, storage=_storage(tmp_path), checkpoint_root=tmp_path / "c") as srv:
        info = httpx.get(f"{srv.url}/v1/info", timeout=30)
        listed = httpx.get(f"{srv.url}/v1/experiments", timeout=30)
    assert info.status_code == 200
    assert info.json()["checkpoint_root"] == str((tmp_path / "c").resolve())
    assert listed.status_code == 200
    assert listed.json() == []


def test_listening_beyond_loopback_without_a_key_is_refused() -> None:
    with pytest.raises(pk.ConfigError, match="--auth-key") as raised:
        check_exposure("0.0.0.0", None)
    assert "refusing to listen on 0.0.0.0" in str(raised.value)
    with pytest.raises(pk.ConfigError, match="--auth-key"):
        check_exposure("192.168.1.20", "")


@pytest.mark.parametrize(
    ("host", "key"), [("0.0.0.0", "k"), ("127.0.0.1", None), ("::1", None), ("localhost", None)]
)
def test_a_key_or_a_loopback_address_may_listen(host: str, key: str | None) -> None:
    check_exposure(host, key)


def test_pbtkit_serve_refuses_to_listen_openly_without_a_key(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "pbtkit", "serve", "--host", "0.0.0.0",
        "--port", str(_free_port()), "--storage", _storage(tmp_path),
        "--checkpoint-root", str(tmp_path / "ckpt"),
    ]  # fmt: skip
    done = subprocess.run(
        command,
        env=_env_without_key(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "refusing to listen" in done.stderr
    assert "--auth-key" in done.stderr
    assert not (tmp_path / "s.db").exists(), "the storage was opened before the refusal"


# checkpoint paths ------------------------------------------------------------------
ESCAPES: dict[str, Callable[[Path, Path], str]] = {
    "parent": lambda root, tmp: "../outside",
    "etc-passwd": lambda root, tmp: "/etc/passwd",
    "nested-parent": lambda root, tmp: "a/../../x",
    "absolute-outside": lambda root, tmp: str(tmp / "elsewhere" / "trial-1"),
    "the-root-itself": lambda root, tmp: str(root),
    "symlink-out": lambda root, tmp: "escape/trial-1",
    "absolute-through-symlink": lambda root, tmp: str(root / "escape" / "trial-1"),
}


@pytest.mark.parametrize("make_path", ESCAPES.values(), ids=ESCAPES)
def test_a_checkpoint_outside_the_root_is_refused_and_nothing_is_written(
    remote: RemoteController,
    http: httpx.Client,
    tmp_path: Path,
    make_path: Callable[[Path, Path], str],
) -> None:
    remote.create("x", _spec(population=1))
    root = Path(remote.info["checkpoint_root"])
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "escape")
    lease = _leased(remote, "w")
    trial = lease.trial
    checkpoint = make_path(root, tmp_path)

    response = http.post(
        f"/v1/trials/{trial.id}/finish",
        json={"worker_id": "w", "reports": [_wire_report(9, 1.0)], "checkpoint": checkpoint},
    )
    check_error(response, 400, "CheckpointError", OUTSIDE)
    with pytest.raises(pk.CheckpointError, match=OUTSIDE):
        remote.finish(trial.id, "w", [_report(trial, 9, 1.0)], checkpoint)

    stored = http.get(f"/v1/trials/{trial.id}").json()
    assert stored["status"] == "running"
    assert stored["lease_owner"] == "w"
    assert stored["checkpoint"] is None
    assert http.get("/v1/experiments/x/reports").json() == []
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_checkpoints_inside_the_root_are_stored_relative_to_it(
    remote: RemoteController, http: httpx.Client
) -> None:
    remote.create("x", _spec(population=3))
    root = Path(remote.info["checkpoint_root"])
    sent = {
        "absolute": (str(root / "x" / "trial-a"), "x/trial-a"),
        "relative": ("x/trial-b", "x/trial-b"),
        "roundabout": ("./x/../x/trial-c", "x/trial-c"),
    }
    stored = {}
    for label, (path, _) in sent.items():
        trial = _leased(remote, "w").trial
        remote.finish(trial.id, "w", [_report(trial, 9, 0.5)], path)
        stored[label] = http.get(f"/v1/trials/{trial.id}").json()["checkpoint"]
    assert stored == {label: expected for label, (_, expected) in sent.items()}


# size limit ------------------------------------------------------------------------
@pytest.fixture
def small(tmp_path: Path) -> Iterator[httpx.Client]:
    """A server whose bodies are limited to 4096 bytes."""
    app = create_app(_storage(tmp_path), tmp_path / "ckpt", auth_key=KEY, max_body=4096)
    with _serving(app) as url, httpx.Client(base_url=url, headers=_auth(), timeout=30) as client:
        yield client


def _big_lease_body(size: int) -> bytes:
    return json.dumps({"worker_id": "w" * size}).encode()


@pytest.mark.parametrize("path", ["/v1/lease", "/v1/experiments", "/v1/trials/1/finish"])
def test_a_body_over_the_limit_is_refused_by_its_content_length(
    small: httpx.Client, path: str
) -> None:
    body = _big_lease_body(5000)
    response = small.post(path, content=body, headers={"content-type": "application/json"})
    assert response.request.headers["content-length"] == str(len(body))
    check_error(response, 413, "RequestTooLarge", "4096 bytes")


def test_a_body_under_the_limit_is_read(small: httpx.Client) -> None:
    body = _big_lease_body(4000)
    response = small.post("/v1/lease", content=body, headers={"content-type": "application/json"})
    # Read and validated (a worker id longer than 256), not refused for its size.
    check_error(response, 422, "InvalidRequest", "worker_id")


def test_a_small_chunked_body_is_read(small: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"worker_id": '
        yield b'"w"}'

    response = small.post(
        "/v1/lease", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "wait"}


def test_a_chunked_body_over_the_limit_is_refused(small: httpx.Client) -> None:
    body = _big_lease_body(5000)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = small.post(
        "/v1/lease", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    check_error(response, 413, "RequestTooLarge", "4096 bytes")


# malformed requests ----------------------------------------------------------------
def _assert_answered_well(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path[:120]}"
    assert response.status_code < 500, f"{where} -> {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict), f"{where} -> {response.text[:500]}"
        assert isinstance(body.get("error"), str), f"{where} -> {body}"
        assert isinstance(body.get("message"), str), f"{where} -> {body}"


MALFORMED: dict[str, tuple[str, Any, str]] = {
    "invalid JSON text": ("/v1/experiments/x/lease", b'{"worker_id": ', "JSON"),
    "wrong type": ("/v1/experiments/x/lease", {"worker_id": 5}, "worker_id"),
    "extra field": ("/v1/experiments/x/lease", {"worker_id": "w", "colour": "red"}, "colour"),
    "negative member": ("/v1/experiments/x/lease", {"worker_id": "w", "member": -1}, "member"),
    "missing field": ("/v1/experiments/x/lease", {}, "worker_id"),
    "missing spec": ("/v1/experiments", {"name": "n"}, "spec"),
    "missing error": ("/v1/trials/1/fail", {"worker_id": "w"}, "error"),
    "not an object": ("/v1/lease", [1, 2], "body"),
    "empty metrics": (
        "/v1/trials/1/heartbeat",
        {"worker_id": "w", "reports": [{"step": 1, "metrics": {}}]},
        "reports.0.metrics",
    ),
    "metric is a word": (
        "/v1/trials/1/heartbeat",
        {"worker_id": "w", "reports": [{"step": 1, "metrics": {"score": "banana"}}]},
        "reports.0.metrics.score",
    ),
    "negative step": (
        "/v1/trials/1/heartbeat",
        {"worker_id": "w", "reports": [{"step": -1, "metrics": {"score": 1.0}}]},
        "reports.0.step",
    ),
    "empty checkpoint": ("/v1/trials/1/finish", {"worker_id": "w", "checkpoint": ""}, "checkpoint"),
    "trial id not a number": ("/v1/trials/first/heartbeat", {"worker_id": "w"}, "trial_id"),
}


@pytest.mark.parametrize(("path", "body", "field"), MALFORMED.values(), ids=MALFORMED)
def test_a_malformed_request_is_422_naming_the_field(
    shared: httpx.Client, path: str, body: Any, field: str
) -> None:
    raw = body if isinstance(body, bytes) else None
    response = _json_request(shared, "POST", path, None if raw else body, raw=raw)
    check_error(response, 422, "InvalidRequest", field)


def _scalars(ints: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    return st.none() | st.booleans() | ints | st.floats(allow_nan=False) | st.text(max_size=20)


def _json_values(ints: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    return st.recursive(
        _scalars(ints),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=12), children, max_size=4)
        ),
        max_leaves=16,
    )


JSON_VALUES = _json_values(st.integers())
# Integers of any size: those beyond 64 bits must be refused, never reach the database.
JSON_STORABLE = JSON_VALUES
STORABLE_INTS = st.integers()
SCALARS_STORABLE = _scalars(STORABLE_INTS)
EDGE_INTS = [-INT64_MAX - 1, -1, 0, 1, 2**31, 2**32, INT64_MAX]


PATH_SEGMENTS = st.sampled_from(
    ["x", "1", "0", "-1", "..", ".", "%00", "%2e%2e", "%2F", "%ff", "%20", "a" * 10_000, "n" * 300]
) | st.text(min_size=1, max_size=40).map(lambda s: quote(s, safe=""))


@FUZZ
@given(data=st.data(), body=JSON_VALUES)
def test_random_json_bodies_never_crash_the_server(
    shared: httpx.Client, post_routes: list[APIRoute], data: st.DataObject, body: Any
) -> None:
    route = data.draw(st.sampled_from(post_routes), label="route")
    _assert_answered_well(_json_request(shared, "POST", _fill(route.path), body))


@FUZZ
@given(data=st.data(), raw=st.binary(max_size=300))
def test_random_bytes_never_crash_the_server(
    shared: httpx.Client, post_routes: list[APIRoute], data: st.DataObject, raw: bytes
) -> None:
    route = data.draw(st.sampled_from(post_routes), label="route")
    _assert_answered_well(_json_request(shared, "POST", _fill(route.path), raw=raw))


@FUZZ
@given(data=st.data())
def test_random_path_parameters_never_crash_the_server(
    shared: httpx.Client, api_routes: list[APIRoute], data: st.DataObject
) -> None:
    route = data.draw(st.sampled_from([r for r in api_routes if r.param_convertors]))
    values = {name: data.draw(PATH_SEGMENTS, label=name) for name in route.param_convertors}
    method = data.draw(st.sampled_from(_methods(route)))
    body = _plausible_body(route) if method == "POST" else None
    _assert_answered_well(_json_request(shared, method, _fill(route.path, values), body))


_STORABLE_METRIC = st.floats() | st.sampled_from(["nan", "inf", "-inf", "banana"])
_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "worker_id": st.one_of(
        st.sampled_from(["w", "v"]),  # twice: workers that may hold a trial, most often
        st.sampled_from(["w", "v"]),
        st.sampled_from(["", "w" * 257]),
        st.text(max_size=300),
    ),
    "member": st.integers(-2, 5) | st.sampled_from(EDGE_INTS) | STORABLE_INTS,
    "generation": st.integers(-2, 5) | st.sampled_from(EDGE_INTS) | STORABLE_INTS,
    "reports": st.lists(
        st.fixed_dictionaries(
            {
                "step": st.integers(-2, 40) | st.sampled_from(EDGE_INTS) | STORABLE_INTS,
                "metrics": st.dictionaries(
                    st.sampled_from(["score", "loss"]) | st.text(max_size=8),
                    _STORABLE_METRIC,
                    max_size=3,
                ),
            }
        ),
        max_size=3,
    ),
    "checkpoint": st.sampled_from(["x/t", "../x", "/etc/passwd", ".", "a/../../b", "\x00"])
    | st.text(max_size=30),
    "name": st.sampled_from(["x", "y"]) | st.text(max_size=300),
    "spec": st.just(SPEC),
    "resume": st.booleans(),
    "error": st.text(max_size=50),
    "penalize": st.booleans(),
    "reason": st.text(max_size=50),
}


def _mostly(specific: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Values of the field's own kind three times in four, anything else the fourth."""
    return st.one_of(specific, specific, specific, JSON_STORABLE)


@FUZZ
@given(data=st.data())
def test_bodies_of_the_right_shape_with_random_values_never_crash_the_server(
    shared: httpx.Client, post_routes: list[APIRoute], data: st.DataObject
) -> None:
    # These reach the controller: leases are taken, reports stored, trials finished.
    route = data.draw(st.sampled_from(post_routes), label="route")
    fields = _body_model(route).model_fields
    chosen = [name for name, field in fields.items() if field.is_required()]
    optional = sorted(name for name, field in fields.items() if not field.is_required())
    if optional:
        chosen += data.draw(st.lists(st.sampled_from(optional), unique=True), label="optional")
    if data.draw(st.integers(0, 9), label="drop one") == 0:
        chosen.remove(data.draw(st.sampled_from(chosen), label="dropped"))
    body = {
        name: data.draw(_mostly(_FIELD_VALUES.get(name, JSON_STORABLE)), label=name)
        for name in chosen
    }
    if data.draw(st.integers(0, 3), label="extra field") == 0:
        body[data.draw(st.text(max_size=8), label="extra name")] = 1
    trial_id = data.draw(st.integers(-1, 12), label="trial_id")
    path = _fill(route.path, {"name": "x", "trial_id": str(trial_id)})
    _assert_answered_well(_json_request(shared, "POST", path, body))


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(tree, dict):
        items: list[tuple[Any, Any]] = list(tree.items())
    elif isinstance(tree, list):
        items = list(enumerate(tree))
    else:
        return []
    out = []
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_paths(value, (*prefix, key)))
    return out


def _replaced(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    if isinstance(tree, dict):
        return {**tree, path[0]: _replaced(tree.get(path[0]), path[1:], value)}
    if isinstance(tree, list) and isinstance(path[0], int) and path[0] < len(tree):
        copy = list(tree)
        copy[path[0]] = _replaced(copy[path[0]], path[1:], value)
        return copy
    return tree


def _not_costly(path: tuple[Any, ...], value: Any) -> bool:
    # A large population is valid but slow to create; the limit has its own test
    # (test_a_huge_population_is_refused).
    if path == ("population",) and isinstance(value, int) and not isinstance(value, bool):
        return value <= 50
    return True


_experiment_numbers = itertools.count()


@FUZZ
@given(
    changes=st.lists(
        st.tuples(st.sampled_from(_paths(SPEC)), _mostly(SCALARS_STORABLE)), min_size=1, max_size=2
    ),
    resume=st.booleans(),
)
def test_specs_with_random_settings_never_crash_the_server(
    shared: httpx.Client, changes: list[tuple[tuple[Any, ...], Any]], resume: bool
) -> None:
    for path, value in changes:
        assume(_not_costly(path, value))
    spec: Any = SPEC
    for path, value in changes:
        spec = _replaced(spec, path, value)
    name = f"spec-{next(_experiment_numbers)}"
    response = _json_request(
        shared, "POST", "/v1/experiments", {"name": name, "spec": spec, "resume": resume}
    )
    _assert_answered_well(response)
    if response.status_code == 200:
        # What was accepted can be read back, and leased.
        assert shared.get(f"/v1/experiments/{name}").status_code == 200
        _assert_answered_well(shared.post(f"/v1/experiments/{name}/lease", json={"worker_id": "w"}))


def _infinite(field: str) -> bytes:
    # json.dumps writes Infinity, which Python's json (and so the server) reads back.
    return json.dumps({"name": f"inf-{field}", "spec": {**SPEC, field: math.inf}}).encode()


OVERFLOWS: dict[str, tuple[str, str, Any]] = {
    "lease member": ("POST", "/v1/experiments/x/lease", {"worker_id": "v", "member": BIG}),
    "lease generation": ("POST", "/v1/experiments/x/lease", {"worker_id": "v", "generation": BIG}),
    "reports of member": ("GET", f"/v1/experiments/x/reports?member={BIG}", None),
    "trial id": ("GET", f"/v1/trials/{BIG}", None),
    "heartbeat trial id": ("POST", f"/v1/trials/{BIG}/heartbeat", {"worker_id": "w"}),
    "finish trial id": ("POST", f"/v1/trials/{BIG}/finish", {"worker_id": "w"}),
    "fail trial id": ("POST", f"/v1/trials/{BIG}/fail", {"worker_id": "w", "error": "e"}),
    "heartbeat step": (
        "POST",
        "/v1/trials/{held}/heartbeat",
        {"worker_id": "w", "reports": [_wire_report(BIG, 1.0)]},
    ),
    "finish step": (
        "POST",
        "/v1/trials/{held}/finish",
        {"worker_id": "w", "reports": [_wire_report(BIG, 1.0)]},
    ),
    "steps of a spec": (
        "POST",
        "/v1/experiments",
        {
            "name": "long",
            "spec": {**SPEC, "policy": {**SPEC["policy"], "ready_every": BIG, "total_steps": BIG}},
        },
    ),
    "infinite population": ("POST", "/v1/experiments", _infinite("population")),
    "infinite seed": ("POST", "/v1/experiments", _infinite("seed")),
    "infinite max_attempts": ("POST", "/v1/experiments", _infinite("max_attempts")),
    "negative seed": ("POST", "/v1/experiments", {"name": "neg", "spec": {**SPEC, "seed": -1}}),
}


@pytest.mark.parametrize(("method", "path", "body"), OVERFLOWS.values(), ids=OVERFLOWS)
def test_numbers_the_server_cannot_use_are_refused(
    remote: RemoteController, method: str, path: str, body: Any
) -> None:
    remote.create("x", _spec(population=1))
    held = _leased(remote, "w").trial.id
    client = httpx.Client(base_url=remote.url, headers={**_auth(), "Connection": "close"})
    with client:
        raw = body if isinstance(body, bytes) else None
        response = _json_request(
            client, method, path.replace("{held}", str(held)), None if raw else body, raw=raw
        )
    assert 400 <= response.status_code < 500, f"{response.status_code} {response.text}"
    _assert_answered_well(response)


LONE_SURROGATE = "\ud800"
POISONS: dict[str, tuple[str, dict[str, Any], str]] = {
    "in a spec": (
        "/v1/experiments",
        {
            "name": "poison",
            "spec": {**SPEC, "space": {LONE_SURROGATE: {"type": "uniform", "low": 0, "high": 1}}},
        },
        "/v1/experiments",
    ),
    "as a metric name": (
        "/v1/trials/{held}/heartbeat",
        {"worker_id": "w", "reports": [{"step": 1, "metrics": {LONE_SURROGATE: 1.0}}]},
        "/v1/experiments/x/reports",
    ),
}


@pytest.mark.parametrize(("path", "body", "read"), POISONS.values(), ids=POISONS)
def test_a_lone_surrogate_is_refused_and_never_breaks_reads(
    remote: RemoteController, server: PBTServer, path: str, body: dict[str, Any], read: str
) -> None:
    remote.create("x", _spec(population=1))
    held = _leased(remote, "w").trial.id
    headers = {**_auth(), "Connection": "close"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        written = _json_request(client, "POST", path.replace("{held}", str(held)), body)
        later = client.get(read)
    assert 400 <= written.status_code < 500, f"{written.status_code} {written.text}"
    assert later.status_code == 200, f"{later.status_code} {later.text}"


def test_a_spec_cannot_make_the_server_run_code(
    remote: RemoteController, http: httpx.Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file a worker could have written into the shared checkpoint root.
    root = Path(remote.info["checkpoint_root"])
    marker = tmp_path / "code-ran-on-the-server"
    planted = root / "planted_explore.py"
    planted.write_text(f"open({str(marker)!r}, 'w').close()\ndef f(h, s, r):\n    return h\n")
    monkeypatch.setattr(sys, "path", list(sys.path))  # the loader prepends the file's folder
    before = set(sys.modules)
    try:
        policy = {**SPEC["policy"], "explore": {"type": "custom", "target": f"{planted}:f"}}
        response = http.post(
            "/v1/experiments", json={"name": "rce", "spec": {**SPEC, "policy": policy}}
        )
    finally:
        for name in set(sys.modules) - before:
            if name.startswith("__pbtkit_target_"):
                del sys.modules[name]
    assert not marker.exists(), "the server executed a file named in a request"
    assert 400 <= response.status_code < 500, response.text


_SERVE_IN_A_CHILD = """
import sys
from pbtkit.service import PBTServer
with PBTServer(0, sys.argv[1], storage=sys.argv[2], checkpoint_root=sys.argv[3]) as server:
    print(server.url, flush=True)
    sys.stdin.read()
"""


def test_a_huge_population_is_refused(tmp_path: Path) -> None:
    # In a child process, so that the runaway request can be killed with it.
    child = subprocess.Popen(
        [sys.executable, "-c", _SERVE_IN_A_CHILD, KEY, _storage(tmp_path), str(tmp_path / "c")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=_env_without_key(),
        text=True,
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), "the child server did not start"
        body = {"name": "huge", "spec": {**SPEC, "population": 2**40}}
        # A liveness bound, not a timing claim: a refusal takes milliseconds.
        response = httpx.post(f"{url}/v1/experiments", json=body, headers=_auth(), timeout=5)
    finally:
        child.kill()
        child.communicate()
    assert 400 <= response.status_code < 500, response.text
    assert "population" in response.json()["message"]


# leases ----------------------------------------------------------------------------
def test_a_late_report_after_the_lease_expired_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    clock = Clock()
    with (
        PBTServer(
            0,
            KEY,
            storage=_storage(tmp_path),
            checkpoint_root=tmp_path / "ckpt",
            lease_seconds=30,
            clock=clock,
        ) as srv,
        RemoteController(srv.url, KEY, max_outage=0) as remote,
        httpx.Client(base_url=srv.url, headers=_auth(), timeout=30) as http,
    ):
        remote.create("x", _spec(population=1))
        slow = _leased(remote, "slow").trial
        clock.now += 31
        fast = _leased(remote, "fast").trial
        assert (fast.id, fast.attempt, slow.attempt) == (slow.id, 2, 1)

        late = {"worker_id": "slow", "reports": [_wire_report(9, 99.0)], "checkpoint": "x/slow"}
        check_error(http.post(f"/v1/trials/{slow.id}/finish", json=late), 409, "LeaseLost", "fast")
        with pytest.raises(pk.LeaseLost):
            remote.finish(slow.id, "slow", [_report(slow, 9, 99.0)], "x/slow")
        beat = {"worker_id": "slow", "reports": [_wire_report(5, 99.0)]}
        check_error(http.post(f"/v1/trials/{slow.id}/heartbeat", json=beat), 409, "LeaseLost")
        with pytest.raises(pk.LeaseLost):
            remote.heartbeat(slow.id, "slow", [_report(slow, 5, 99.0)])

        held = http.get(f"/v1/trials/{slow.id}").json()
        assert (held["status"], held["lease_owner"], held["attempt"]) == ("running", "fast", 2)
        assert held["checkpoint"] is None
        assert held["metrics"] == {}
        assert http.get("/v1/experiments/x/reports").json() == []

        remote.heartbeat(fast.id, "fast", [_report(fast, 4, 1.0)])
        remote.finish(fast.id, "fast", [_report(fast, 9, 2.0)], "x/fast")
        done = http.get(f"/v1/trials/{fast.id}").json()
        assert (done["status"], done["checkpoint"]) == ("done", "x/fast")
        reports = http.get("/v1/experiments/x/reports").json()
        assert [(r["step"], r["metrics"]) for r in reports] == [
            (4, {"score": 1.0}),
            (9, {"score": 2.0}),
        ]


# nothing unpickled -----------------------------------------------------------------
_UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_constant(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unpickling_risks(source: str, filename: str = "<source>") -> list[str]:
    """Lines of ``source`` that could unpickle data: imports of pickling modules,
    ``allow_pickle`` not literally False, ``torch.load`` without ``weights_only=True``."""
    risks = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            risks += [
                f"{where}: import {a.name}"
                for a in node.names
                if a.name.split(".")[0] in _UNPICKLERS
            ]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in _UNPICKLERS:
                risks.append(f"{where}: from {node.module} import ...")
            if node.module == "torch" and any(a.name == "load" for a in node.names):
                risks.append(f"{where}: from torch import load")
        elif isinstance(node, ast.Call):
            keywords = {k.arg: k.value for k in node.keywords if k.arg is not None}
            if "allow_pickle" in keywords and not _is_constant(keywords["allow_pickle"], False):
                risks.append(f"{where}: allow_pickle is not False")
            name = _dotted(node.func)
            if name == "torch.load" and not _is_constant(keywords.get("weights_only"), True):
                risks.append(f"{where}: torch.load without weights_only=True")
            if name.endswith("read_pickle"):
                risks.append(f"{where}: {name}")
            if name in {"__import__", "importlib.import_module"} and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and first.value in _UNPICKLERS:
                    risks.append(f"{where}: imports {first.value!r}")
    return risks


@pytest.mark.parametrize(
    "source",
    [
        "import pickle",
        "import cloudpickle as cp",
        "from dill import loads",
        "import joblib.numpy_pickle",
        "import shelve, json",
        "from marshal import loads",
        "np.load(path, allow_pickle=True)",
        "np.load(path, allow_pickle=flag)",
        "torch.load(path)",
        "torch.load(path, weights_only=False)",
        "from torch import load",
        "pandas.read_pickle(path)",
        "importlib.import_module('pickle')",
    ],
)
def test_the_scan_finds_unpickling(source: str) -> None:
    assert unpickling_risks(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "import json",
        "np.load(path, allow_pickle=False)",
        "np.load(path)",
        "torch.load(path, weights_only=True)",
        "from pbtkit import pickled_names",
    ],
)
def test_the_scan_lets_safe_loading_pass(source: str) -> None:
    assert unpickling_risks(source) == []


def test_nothing_in_pbtkit_can_unpickle() -> None:
    package = Path(pk.__file__).parent
    files = sorted(package.rglob("*.py"))
    assert len(files) >= 20
    risks = [
        risk
        for path in files
        for risk in unpickling_risks(path.read_text(encoding="utf-8"), str(path))
    ]
    assert risks == []


# one map from errors to statuses ---------------------------------------------------
def test_status_map_covers_every_error_the_service_names() -> None:
    expected = {
        pk.NotFound: 404,
        pk.ExperimentConflict: 409,
        pk.LeaseLost: 409,
        pk.CheckpointError: 400,
        pk.ConfigError: 400,
        pk.StorageError: 503,
    }
    assert {cls: STATUS.get(cls) for cls in expected} == expected
    # Subclasses take their parent's status; anything else is a bug.
    assert _status_of(pk.OutOfSpace("x")) == 400
    assert _status_of(pk.SchemaMismatch("x")) == 503
    assert _status_of(pk.MetricError("x")) == 400
    assert _status_of(RuntimeError("x")) == 500


def test_errors_cross_the_wire_with_their_status_name_and_type(
    remote: RemoteController, http: httpx.Client
) -> None:
    check_error(http.get("/v1/experiments/nope"), 404, "NotFound", "nope")
    with pytest.raises(pk.NotFound, match="nope"):
        remote.experiment("nope")
    check_error(http.get("/v1/trials/424242"), 404, "NotFound", "424242")
    with pytest.raises(pk.NotFound):
        remote.trial(424242)

    remote.create("x", _spec(population=1))
    other = _spec(population=3).to_dict()
    check_error(
        http.post("/v1/experiments", json={"name": "x", "spec": other}),
        409,
        "ExperimentConflict",
        "population",
    )
    with pytest.raises(pk.ExperimentConflict, match="population"):
        remote.create("x", _spec(population=3))
    check_error(
        http.post(
            "/v1/experiments", json={"name": "x", "spec": SPEC | {"population": 1}, "resume": False}
        ),
        409,
        "ExperimentConflict",
        "resume",
    )

    trial = _leased(remote, "w").trial
    check_error(
        http.post(f"/v1/trials/{trial.id}/heartbeat", json={"worker_id": "intruder"}),
        409,
        "LeaseLost",
        "intruder",
    )
    with pytest.raises(pk.LeaseLost):
        remote.heartbeat(trial.id, "intruder")
    with pytest.raises(pk.CheckpointError, match=OUTSIDE):
        remote.finish(trial.id, "w", [_report(trial, 9, 1.0)], "../outside")


def test_allowed_packages_may_be_named_and_nothing_else(tmp_path: Path) -> None:
    explore = {"type": "custom", "target": "tests.trainers:explore_to_top"}
    spec = {**SPEC, "policy": {**SPEC["policy"], "explore": explore}}
    with PBTServer(
        0, KEY, storage=f"sqlite:///{tmp_path / 'a.db'}", checkpoint_root=tmp_path / "ck",
        allow_imports=("tests",),
    ) as allowing, httpx.Client(
        base_url=allowing.url, headers={"Authorization": f"Bearer {KEY}"}
    ) as client:  # fmt: skip
        assert client.post("/v1/experiments", json={"name": "ok", "spec": spec}).status_code == 200
        for target in ("testsuite.x:f", "/abs/tests.py:f", "tests/../evil.py:f", "os:system"):
            other = {**spec, "policy": {**spec["policy"], "explore": {**explore, "target": target}}}
            response = client.post("/v1/experiments", json={"name": target, "spec": other})
            assert response.status_code == 400, target
            assert "imports no code named by clients" in response.json()["message"]
