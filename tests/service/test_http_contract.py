"""The HTTP contract at its edges: names, strict numbers, 405 with Allow, documented errors,
and ``pbtkit serve`` saying it listens only once it does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import pbtkit as pk
from pbtkit.controller import Lease
from pbtkit.service import PBTServer, RemoteController
from tests.service.helpers import KEY, auth, check_error, small_spec, sqlite_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PBTServer]:
    with PBTServer(
        0, KEY, storage=sqlite_url(tmp_path), checkpoint_root=tmp_path / "ckpt"
    ) as running:
        yield running


@pytest.fixture
def http(server: PBTServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=auth(), timeout=30) as client:
        yield client


# names -------------------------------------------------------------------------------
BAD_NAMES = ["a/b", "../up", ".hidden", "-flag", "a b", "ä", "x" * 129, "", "a\\b", "a?b", "a%2Fb"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_an_unsafe_experiment_name_is_refused_over_http(http: httpx.Client, name: str) -> None:
    spec = small_spec().to_dict()
    response = http.post("/v1/experiments", json={"name": name, "spec": spec})
    if response.status_code == 422:  # empty or too long: refused by the body's own limits
        assert name == "" or len(name) > 128
        return
    check_error(response, 400, "ConfigError", "letters, digits, '-', '_' or '.'")
    assert http.get("/v1/experiments").json() == []


@pytest.mark.parametrize("name", ["resnet-lr.2", "A_b-3", "9lives", "x" * 128])
def test_a_safe_name_works_on_every_route(http: httpx.Client, name: str) -> None:
    spec = small_spec().to_dict()
    assert http.post("/v1/experiments", json={"name": name, "spec": spec}).status_code == 200
    for path in ("", "/summary", "/snapshot", "/members", "/reports"):
        assert http.get(f"/v1/experiments/{name}{path}").status_code == 200, path
    lease = http.post(f"/v1/experiments/{name}/lease", json={"worker_id": "w"})
    assert lease.json()["status"] == "leased"


@pytest.mark.parametrize("name", ["a/b", "a b"])
def test_pk_run_refuses_an_unsafe_name_before_it_creates_anything(
    tmp_path: Path, name: str
) -> None:
    with pytest.raises(pk.ConfigError, match="letters, digits"):
        pk.run(
            "tests.trainers:climb",
            space={"x": pk.Uniform(0, 1)},
            metric="score",
            population=2,
            workers=1,
            ready_every=1,
            total_steps=1,
            storage=sqlite_url(tmp_path),
            name=name,
            executor="thread",
        )


# strict numbers ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/experiments/x/lease", {"worker_id": "w", "member": True}),
        ("/v1/experiments/x/lease", {"worker_id": "w", "generation": "1"}),
        ("/v1/experiments/x/lease", {"worker_id": "w", "member": 1.0}),
        (
            "/v1/trials/1/heartbeat",
            {"worker_id": "w", "reports": [{"step": True, "metrics": {"s": 1}}]},
        ),
        ("/v1/trials/1/fail", {"worker_id": "w", "error": "e", "penalize": 1}),
        ("/v1/experiments", {"name": "x", "spec": {}, "resume": "yes"}),
    ],
)
def test_a_value_of_the_wrong_json_type_is_refused(
    http: httpx.Client, path: str, body: dict[str, object]
) -> None:
    check_error(http.post(path, json=body), 422, "InvalidRequest")


# 405 -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/v1/experiments", {"GET", "POST"}),
        ("PUT", "/v1/trials/1/finish", {"POST"}),
        ("POST", "/v1/info", {"GET"}),
        ("POST", "/health", {"GET"}),
    ],
)
def test_a_wrong_method_is_405_with_allow(
    http: httpx.Client, method: str, path: str, allowed: set[str]
) -> None:
    response = http.request(method, path)
    check_error(response, 405, "HTTPError")
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


# the schema documents every error answer -------------------------------------------------
def test_every_route_documents_its_errors_with_the_error_body() -> None:
    document = json.loads((ROOT / "openapi.json").read_text(encoding="utf-8"))
    error = document["components"]["schemas"]["ErrorOut"]
    assert set(error["required"]) == {"error", "message"}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            codes = set(operation["responses"])
            if path == "/health":
                assert codes == {"200"}
                continue
            assert {"200", "401", "503"} <= codes, (method, path, codes)
            if method == "post":
                assert {"413", "422"} <= codes, (method, path, codes)
            if "{" in path:
                assert "422" in codes, (method, path)
            for code in codes - {"200"}:
                schema = operation["responses"][code]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (path, code)


def test_the_documented_codes_are_the_ones_the_server_answers(
    server: PBTServer, http: httpx.Client
) -> None:
    document = json.loads((ROOT / "openapi.json").read_text(encoding="utf-8"))
    with RemoteController(server.url, KEY) as remote:
        remote.create("x", small_spec())
        lease = remote.lease("x", "w")
        assert isinstance(lease, Lease)
    seen = {
        ("post", "/v1/experiments"): http.post(
            "/v1/experiments", json={"name": "x", "spec": small_spec(population=3).to_dict()}
        ).status_code,
        ("get", "/v1/experiments/{name}"): http.get("/v1/experiments/ghost").status_code,
        ("post", "/v1/trials/{trial_id}/heartbeat"): http.post(
            f"/v1/trials/{lease.trial.id}/heartbeat", json={"worker_id": "intruder"}
        ).status_code,
        ("post", "/v1/trials/{trial_id}/finish"): http.post(
            f"/v1/trials/{lease.trial.id}/finish",
            json={"worker_id": "w", "checkpoint": "../outside"},
        ).status_code,
        ("get", "/v1/info"): httpx.get(f"{server.url}/v1/info").status_code,
    }
    assert set(seen.values()) == {409, 404, 400, 401}
    for (method, path), status in seen.items():
        assert str(status) in document["paths"][path][method]["responses"], (path, status)


# serve says it listens only when it does ----------------------------------------------------
def _serve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PBTKIT_AUTH_KEY"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "pbtkit", "serve", "--storage", "s.db", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_open_to_the_network_without_a_key_never_announces(tmp_path: Path) -> None:
    out = _serve("--host", "0.0.0.0", cwd=tmp_path)
    assert out.returncode == 2
    assert "without an auth key" in out.stderr
    assert "API at" not in out.stderr + out.stdout


def test_serve_on_a_port_in_use_never_announces(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = _serve("--port", str(port), cwd=tmp_path)
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "API at" not in out.stderr + out.stdout
