"""The routes workers call many times a second, answered in a few lines of ASGI.

FastAPI spends more CPU on a request than the work a heartbeat asks for: a dozen
middleware layers, a ``Request`` object, dependency solving, a thread per sync endpoint,
the response model. :class:`HotRoutes` sits in front of the FastAPI app and answers the
worker protocol's hot routes (heartbeat, finish, lease) itself when a request is an
ordinary one: the right key, a JSON body that the route's own pydantic model accepts
(the same strict validation, field by field), a path of the plain form. Anything else
(no key or a wrong one, a repeated key, length or content type, a body that does not
validate, an odd path or content type, a chunked body) goes on to the FastAPI app
untouched, body and all, and gets exactly the answer it always got (401, 422 naming the
field, 413...), so the schema in
``openapi.json`` and every error stays what FastAPI says. Errors of the controller
leave through the one status map of :mod:`pbtkit.service._http`.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from pbtkit._exceptions import PBTError
from pbtkit.service._http import (
    Message,
    Receive,
    Scope,
    Send,
    _status_of,
    bearer_ok,
    error_body,
)

__all__ = ["HotRoute", "HotRoutes"]

log = logging.getLogger("pbtkit.service")

#: Answers a validated request: the path's parameter and the body; returns the JSON reply.
Handler = Callable[[str, Any], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class HotRoute:
    """A POST route answered in front of FastAPI.

    Args:
        pattern: The whole path; its one group (if any) is passed to the handler.
        model: The route's body model (the one its FastAPI endpoint declares).
        handler: Called with the path parameter and the validated body.
    """

    pattern: re.Pattern[str]
    model: type[BaseModel]
    handler: Handler


_JSON = [(b"content-type", b"application/json")]


class HotRoutes:
    """An ASGI app answering ``routes`` itself and everything else with ``fallback``.

    Args:
        fallback: The whole app (FastAPI inside its body-size limit); ``.app`` of it is
            kept as ``self.app``, the FastAPI app, for the schema and the routes.
        routes: The hot routes.
        key: The bearer key (None: no authentication).
        max_body: The largest body answered here; larger ones go to ``fallback``, which
            refuses them.
    """

    def __init__(
        self, fallback: Any, routes: Sequence[HotRoute], key: bytes | None, max_body: int
    ) -> None:
        self.fallback = fallback
        self.app = fallback.app
        self._routes = tuple(routes)
        self._key = key
        self._expected = None if key is None else b"Bearer " + key
        self._max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.fallback(scope, receive, send)
            return
        path: str = scope["path"]
        for route in self._routes:
            match = route.pattern.fullmatch(path)
            if match is not None:
                break
        else:
            await self.fallback(scope, receive, send)
            return
        length = self._acceptable(scope["headers"])
        if length is None:
            await self.fallback(scope, receive, send)
            return
        body, receive = await _read(receive, length)
        parsed = _parse(route.model, body)
        if parsed is None:  # FastAPI reads the same body and says what is wrong with it
            await self.fallback(scope, receive, send)
            return
        try:
            reply = await route.handler(match.group(1) if match.groups() else "", parsed)
        except PBTError as exc:
            await _answer(
                send, _status_of(exc), error_body(type(exc).__name__, str(exc), exc.retryable)
            )
            return
        except Exception as exc:
            log.exception("unexpected error", exc_info=exc)
            error = error_body("InternalError", f"the server failed: {type(exc).__name__}")
            await _answer(send, 500, error)
            return
        await _answer(send, 200, reply)

    def _acceptable(self, headers: Sequence[tuple[bytes, bytes]]) -> int | None:
        """The declared body length when the request may be answered here, else None.

        FastAPI reads the first of repeated headers; a request that repeats one of those
        that matter here, or sends its body in chunks, is left to FastAPI whole, so that
        no header can be read one way here and another way there.
        """
        auth: bytes | None = None
        length: bytes | None = None
        kind: bytes | None = None
        for name, value in headers:
            if name == b"authorization":
                if auth is not None:
                    return None
                auth = value
            elif name == b"content-length":
                if length is not None:
                    return None
                length = value
            elif name == b"content-type":
                if kind is not None:
                    return None
                kind = value
            elif name == b"transfer-encoding":
                return None
        if length is None or not length.isdigit() or int(length) > self._max_body:
            return None
        if kind is None or kind.lower() != b"application/json":
            return None
        if self._key is not None:
            if auth is None:
                return None
            fast = self._expected is not None and hmac.compare_digest(auth, self._expected)
            if not fast and not bearer_ok(auth.decode("latin-1"), self._key):
                return None
        return int(length)


async def _read(receive: Receive, length: int) -> tuple[bytes, Receive]:
    """The body, and a ``receive`` that hands it over again (to the fallback app)."""
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            more = False  # the client went away; the fallback sees an empty body
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    replayed = False

    async def again() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return body, again


def _parse(model: type[BaseModel], body: bytes) -> BaseModel | None:
    """The body validated as FastAPI does it (Python's json, then the model), or None."""
    try:
        return model.model_validate(json.loads(body))
    except Exception:  # any failure is FastAPI's to explain
        return None


async def _answer(send: Send, status: int, reply: dict[str, Any]) -> None:
    # Byte for byte what FastAPI's JSONResponse renders.
    body = json.dumps(
        reply, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_JSON, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
