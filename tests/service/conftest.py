"""Fixtures of the service tests: a server on 127.0.0.1 with a key, and clients of it."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute

from pbtkit.service import PBTServer, RemoteController
from tests.service.security import KEY, _api_routes, _auth, _methods, _spec, _storage


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
