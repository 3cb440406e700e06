"""Malformed, random and hostile requests get a 4xx that names the problem, never a 500."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.routing import APIRoute
from hypothesis import assume, given
from hypothesis import strategies as st

from pbtkit.service import PBTServer, RemoteController
from tests.service.security import (
    BIG,
    FUZZ,
    INT64_MAX,
    KEY,
    SPEC,
    _auth,
    _body_model,
    _env_without_key,
    _fill,
    _json_request,
    _leased,
    _methods,
    _plausible_body,
    _spec,
    _storage,
    _wire_report,
    check_error,
)


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
