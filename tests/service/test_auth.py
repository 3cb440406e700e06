"""Every route but /health needs the key; nobody listens openly without one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

import pbtkit as pk
from pbtkit.service import PBTServer
from pbtkit.service._http import check_exposure
from tests.helpers import free_port as _free_port
from tests.service.security import _env_without_key, _fill, _methods, _other_routes, _storage

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
