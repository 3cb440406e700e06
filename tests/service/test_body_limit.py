"""Request bodies over the limit are refused before they are read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pbtkit.service import create_app
from tests.service.security import KEY, _auth, _serving, _storage, check_error


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
