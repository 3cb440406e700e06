"""The dashboard's routes over real HTTP: the key, the cookie, the headers, read-only."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute

from pbtkit.service import PBTServer, create_app
from pbtkit.service.dashboard import COOKIE, CSP
from pbtkit.store import MemoryStore
from tests.helpers import POPULATION, Run, wait_until_serving
from tests.helpers import free_port as _free_port

KEY = "dashboard-secret"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(toy_run: Run) -> Iterator[PBTServer]:
    with PBTServer(
        0, KEY, storage=toy_run.storage, checkpoint_root=toy_run.directory / "checkpoints"
    ) as running:
        yield running


def _client(server: PBTServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)


@contextmanager
def _signed_in(server: PBTServer) -> Iterator[httpx.Client]:
    with _client(server) as client:
        response = client.post("/dashboard", data={"key": KEY})
        assert response.status_code == 303
        yield client


def test_without_the_key_the_page_asks_for_it(server: PBTServer) -> None:
    with _client(server) as client:
        for path in ("/dashboard", "/dashboard/static/dashboard.js"):
            response = client.get(path)
            assert response.status_code == 401
            assert 'name="key"' in response.text
            assert response.headers["content-security-policy"] == CSP
        response = client.get("/dashboard/api/experiment", params={"name": "toy"})
        assert response.status_code == 401
        assert response.json()["error"] == "Unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


def test_a_wrong_key_is_refused(server: PBTServer) -> None:
    with _client(server) as client:
        for response in (
            client.post("/dashboard", data={"key": "wrong"}),
            client.get("/dashboard", params={"key": KEY + "x"}),
        ):
            assert response.status_code == 401
            assert "That key is wrong" in response.text
            assert COOKIE not in response.headers.get("set-cookie", "")


def test_signing_in_sets_a_strict_http_only_cookie_that_is_not_the_key(
    server: PBTServer,
) -> None:
    with _client(server) as client:
        response = client.post("/dashboard?experiment=toy", data={"key": KEY})
        assert response.status_code == 303
        assert response.headers["location"] == "dashboard?experiment=toy"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert KEY not in cookie
        page = client.get("/dashboard?experiment=toy")
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CSP
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "<script src=" in page.text
        assert "<script>" not in page.text  # no inline script: the policy would refuse it
        script = client.get("/dashboard/static/dashboard.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert "innerHTML" not in script.text
        assert client.get("/dashboard/static/secrets.txt").status_code == 404
        # the cookie opens the dashboard, not the API
        assert client.get("/v1/experiments").status_code == 401


def test_the_key_in_the_address_is_traded_for_the_cookie(server: PBTServer) -> None:
    with _client(server) as client:
        response = client.get("/dashboard", params={"key": KEY, "experiment": "toy"})
        assert response.status_code == 303
        assert response.headers["location"] == "dashboard?experiment=toy"
        assert client.get("/dashboard").status_code == 200


def test_the_data_of_the_page(server: PBTServer, toy_run: Run) -> None:
    with _signed_in(server) as client:
        listing = client.get("/dashboard/api/experiments").json()
        assert [e["name"] for e in listing] == ["toy"]
        view = client.get("/dashboard/api/experiment", params={"name": "toy"}).json()
        assert len(view["members"]) == POPULATION
        assert view["best_member"] == toy_run.result.best.member
        assert view["status"] == "finished"
        theta = client.get(
            "/dashboard/api/experiment", params={"name": "toy", "metric": "theta0"}
        ).json()
        assert theta["shown_metric"] == "theta0"
        missing = client.get("/dashboard/api/experiment", params={"name": "nope"})
        assert missing.status_code == 404
        assert "(known: toy)" in missing.json()["message"]
    with httpx.Client(base_url=server.url, timeout=30) as bearer:  # a script's way in
        response = bearer.get(
            "/dashboard/api/experiments", headers={"Authorization": f"Bearer {KEY}"}
        )
        assert response.status_code == 200


def test_the_dashboard_only_reads(tmp_path: Path) -> None:
    app = create_app(MemoryStore(), tmp_path)
    routes = {}
    for route in app.app.routes:
        path = getattr(route, "path", "")
        if path.startswith("/dashboard"):
            routes[path] = set(getattr(route, "methods", None) or ())
            if isinstance(route, APIRoute):
                assert not route.include_in_schema
    assert routes == {
        "/dashboard": {"GET", "HEAD", "POST"},  # POST: the sign-in form, nothing else
        "/dashboard/static/{name}": {"GET", "HEAD"},
        "/dashboard/api/experiments": {"GET"},
        "/dashboard/api/experiment": {"GET"},
    }


def test_pbtkit_dashboard_serves_a_store_on_its_own(toy_run: Run, tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PBTKIT_AUTH_KEY"}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{ROOT / 'src'}"
    process = subprocess.Popen(
        [sys.executable, "-m", "pbtkit", "dashboard", "--storage", toy_run.storage,
         "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"pbtkit dashboard on {url}/dashboard"
        wait_until_serving(url, process, "pbtkit dashboard")
        page = httpx.get(f"{url}/", follow_redirects=True)
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CSP
        view = httpx.get(f"{url}/dashboard/api/experiment", params={"name": "toy"}).json()
        assert len(view["tree"]) == len([t for t in toy_run.result.trials if t.status != "pending"])
        # nothing but the dashboard is served: no API to change anything through
        assert httpx.post(f"{url}/v1/lease", json={"worker_id": "w"}).status_code in (404, 405)
    finally:
        process.terminate()
        process.wait(10)


def test_pbtkit_dashboard_refuses_to_listen_openly_without_a_key(
    toy_run: Run, tmp_path: Path
) -> None:
    from tests.helpers import pbtkit_cli as _pbtkit

    out = _pbtkit("dashboard", "--storage", toy_run.storage, "--host", "0.0.0.0", cwd=tmp_path)
    assert out.returncode == 2
    assert "without an auth key" in out.stderr
    out = _pbtkit("dashboard", "--storage", "none.db", cwd=tmp_path)
    assert out.returncode == 2
    assert "there is no database" in out.stderr
