"""What every HTTP app of pbtkit shares (the API of ``pbtkit serve`` and the dashboard):
the one map from exceptions to status codes, the error body, the bearer-key check, the body
size limit, and listening on an address before saying so."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pbtkit._exceptions import (
    CheckpointError,
    ConfigError,
    ExperimentConflict,
    LeaseLost,
    MetricError,
    NotFound,
    PBTError,
    StorageError,
)

__all__ = [
    "MAX_BODY",
    "STATUS",
    "base_url",
    "bearer_ok",
    "check_exposure",
    "error_body",
    "install_error_handlers",
    "limit_body",
    "listen",
    "run_app",
]


def bearer_ok(header: str, key: bytes) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <key>`` (compared in constant
    time): the one check of the key, for the API and the dashboard alike."""
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key)


def limit_body(app: Any, limit: int = 8 * 1024 * 1024) -> Any:
    """``app`` refusing request bodies larger than ``limit`` bytes with 413."""
    return _BodyLimit(app, limit)


#: The one place where an exception becomes an HTTP status (first match in MRO order).
STATUS: dict[type[BaseException], int] = {
    NotFound: 404,
    ExperimentConflict: 409,
    LeaseLost: 409,
    CheckpointError: 400,
    ConfigError: 400,
    MetricError: 400,
    StorageError: 503,
    PBTError: 400,
}


MAX_BODY = 8 * 1024 * 1024


Scope = MutableMapping[str, Any]


Message = MutableMapping[str, Any]


Receive = Callable[[], Awaitable[Message]]


Send = Callable[[Message], Awaitable[None]]


def _status_of(exc: BaseException) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def install_error_handlers(app: FastAPI, headers: Mapping[str, str] | None = None) -> None:
    """Answer a PBTError with its status and the error body, and a malformed request with
    422 naming each problem (``headers`` go on every such answer)."""
    extra = dict(headers or {})

    @app.exception_handler(PBTError)
    async def _on_pbt(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PBTError)
        return JSONResponse(
            error_body(type(exc).__name__, str(exc), exc.retryable),
            status_code=_status_of(exc),
            headers=extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        ]
        return JSONResponse(
            error_body("InvalidRequest", "; ".join(problems) or "malformed request"),
            status_code=422,
            headers=extra,
        )


def error_body(error: str, message: str, retryable: bool = False, **extra: Any) -> dict[str, Any]:
    """The body of every error response."""
    return {"error": error, "message": message, "retryable": retryable, **extra}


class _BodyLimit:
    """Refuses request bodies larger than ``limit`` bytes with 413, before they are parsed."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or {}).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        refused = False
        answered = False

        async def limited() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    raise _TooLarge
            return message

        async def unless_refused(message: Message) -> None:
            # Once the body is refused, whatever the app makes of the broken read is
            # replaced by our own 413.
            nonlocal answered
            if refused:
                return
            answered = True
            await send(message)

        with contextlib.suppress(_TooLarge):
            await self.app(scope, limited, unless_refused)
        if refused and not answered:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        import json

        body = json.dumps(
            error_body("RequestTooLarge", f"request bodies are limited to {self.limit} bytes")
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, auth_key: str | None) -> None:
    """Refuse to listen beyond this machine without a key.

    Raises:
        ConfigError: ``host`` is not a loopback address and no key was given.
    """
    if not auth_key and not _is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without an auth key: anyone who can reach it could "
            "drive your experiments. Pass --auth-key (or PBTKIT_AUTH_KEY), or use 127.0.0.1"
        )


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, ready for uvicorn, so that a server announces its
    address only once it holds it.

    Raises:
        ConfigError: The address cannot be bound (in use, or not this machine's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port "
            "(or stop what holds it), or another --host"
        ) from exc
    return sock


def base_url(host: str, port: int) -> str:
    """``http://host:port`` with an IPv6 address in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def run_app(app: Any, sock: socket.socket, *, log_level: str = "warning") -> None:
    """Serve an ASGI app on a bound socket until interrupted."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
