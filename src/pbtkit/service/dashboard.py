"""The dashboard: a page that shows a run live, read from the store and changing nothing.

``pbtkit serve`` serves it at ``/dashboard`` beside the API; ``pbtkit dashboard --storage
URL`` serves it alone. The page is static HTML, CSS and JavaScript shipped in this
package, the chart library (uPlot) included (no CDN: it works offline); its script reads
JSON from two GET endpoints every two seconds while the run goes on, and draws the
population table (sortable, filterable), the curves and the best score so far, the
schedules, each hyperparameter against the score, the best member's lineage schedule,
the exploit log, and the family tree; charts read out values on hover and zoom.

Security:

- The key: when the server has one, every dashboard route needs it, like the API. A
  script sends ``Authorization: Bearer <key>``; a browser signs in once, through the form
  the page shows (or by opening ``/dashboard?key=<key>``), and gets a cookie that is
  ``HttpOnly`` and ``SameSite=Strict`` and holds an HMAC of the key, not the key. The
  cookie opens the dashboard's read-only routes and nothing of the API.
- Text that users choose (experiment, hyperparameter and metric names, categorical
  values, error messages) reaches the page only as JSON and is inserted with
  ``textContent``; the HTML itself carries no data.
- Every response carries a Content-Security-Policy that allows scripts, styles and
  requests from this origin only (no inline script), and ``nosniff``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from pbtkit.service._http import (
    base_url,
    bearer_ok,
    check_exposure,
    error_body,
    install_error_handlers,
    listen,
    run_app,
)
from pbtkit.viz._view import RunView

if TYPE_CHECKING:
    from pbtkit.controller import ControllerAPI
    from pbtkit.store import Store

__all__ = ["CSP", "COOKIE", "dashboard_app", "install", "serve_dashboard"]

#: The Content-Security-Policy of every dashboard response.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
#: The name of the sign-in cookie.
COOKIE = "pbtkit_dashboard"
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_STATIC = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    # uPlot 1.6.32 (MIT licence, in uPlot.LICENSE beside it), the charts' library
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
}
_MAX_FORM = 4096


class DashboardUnauthorized(Exception):
    """A dashboard data request without the key or the sign-in cookie."""


def _asset(name: str) -> bytes:
    return (resources.files("pbtkit.viz") / "static" / name).read_bytes()


def cookie_value(auth_key: str) -> str:
    """What the sign-in cookie holds for a key: an HMAC of it, so the cookie never
    reveals the key and opens nothing but the dashboard."""
    return hmac.new(auth_key.encode(), b"pbtkit dashboard cookie v1", hashlib.sha256).hexdigest()


def install(app: FastAPI, controller: ControllerAPI, auth_key: str | None) -> None:
    """Add the dashboard's routes to ``app``: the page at ``/dashboard``, its files, and
    its data at ``/dashboard/api/...`` (GET only, left out of the OpenAPI schema).

    Args:
        app: The FastAPI application.
        controller: Where the experiments are read.
        auth_key: The key (None: no key needed, for loopback servers).
    """
    key = auth_key.encode() if auth_key else None
    token = cookie_value(auth_key).encode() if auth_key else None

    def signed_in(request: Request) -> bool:
        if key is None or token is None:
            return True
        if bearer_ok(request.headers.get("authorization", ""), key):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return hmac.compare_digest(cookie.encode(errors="replace"), token)

    def require(request: Request) -> None:
        if not signed_in(request):
            raise DashboardUnauthorized

    async def on_unauthorized(_: Request, __: Exception) -> Response:
        return JSONResponse(
            error_body(
                "Unauthorized",
                "a valid key is required: send 'Authorization: Bearer <key>', "
                "or sign in at /dashboard",
            ),
            status_code=401,
            headers={"WWW-Authenticate": "Bearer", **HEADERS},
        )

    app.add_exception_handler(DashboardUnauthorized, on_unauthorized)

    async def page(request: Request) -> Response:
        given: str | None = request.query_params.get("key")
        if request.method == "POST":
            given = (await _form(request)).get("key", "")
        if given is not None and key is not None:
            if not hmac.compare_digest(given.encode(errors="replace"), key):
                return _login(wrong=True)
            # Signed in: the cookie, and the page again without the key in its address.
            query = [(k, v) for k, v in request.query_params.multi_items() if k != "key"]
            target = "dashboard" + (f"?{urlencode(query)}" if query else "")
            response = RedirectResponse(target, status_code=303, headers=HEADERS)
            response.set_cookie(
                COOKIE,
                cookie_value(key.decode()),
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
                path=request.url.path,
            )
            return response
        if not signed_in(request):
            return _login(wrong=False)
        return Response(_asset("dashboard.html"), media_type="text/html", headers=HEADERS)

    app.add_route("/dashboard", page, methods=["GET", "POST"], include_in_schema=False)

    async def static(request: Request) -> Response:
        if not signed_in(request):
            return _login(wrong=False)
        name = request.path_params["name"]
        if name not in _STATIC:
            return Response("no such file", status_code=404, media_type="text/plain")
        return Response(_asset(name), media_type=_STATIC[name], headers=HEADERS)

    app.add_route("/dashboard/static/{name}", static, methods=["GET"], include_in_schema=False)

    guarded = [Depends(require)]

    @app.get("/dashboard/api/experiments", dependencies=guarded, include_in_schema=False)
    def experiments() -> JSONResponse:
        out = []
        for e in controller.experiments():
            policy = _mapping(e.config.get("policy"))
            objective = _mapping(policy.get("objective"))
            out.append(
                {
                    "name": e.name,
                    "status": e.status,
                    "population": e.config.get("population"),
                    "metric": objective.get("metric"),
                    "mode": objective.get("mode"),
                    "created_at": e.created_at,
                }
            )
        return JSONResponse(out, headers=HEADERS)

    @app.get("/dashboard/api/experiment", dependencies=guarded, include_in_schema=False)
    def experiment(
        name: Annotated[str, Query(min_length=1, max_length=256)],
        metric: Annotated[str | None, Query(max_length=256)] = None,
    ) -> JSONResponse:
        view = RunView.load(controller, name)
        return JSONResponse(view.to_json(metric or None), headers=HEADERS)


async def _form(request: Request) -> dict[str, str]:
    """The fields of a small urlencoded form (the sign-in form); a larger body is cut."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            break
    fields = parse_qs(body[:_MAX_FORM].decode(errors="replace"))
    return {k: v[0] for k, v in fields.items() if v}


def _login(*, wrong: bool) -> Response:
    html = _asset("login.html").decode()
    if wrong:
        html = html.replace("<!--wrong-->", '<p class="wrong" role="alert">That key is wrong.</p>')
    return Response(html, status_code=401, media_type="text/html", headers=HEADERS)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def dashboard_app(storage: str | Store, *, auth_key: str | None = None) -> FastAPI:
    """An application that serves the dashboard alone, reading ``storage``.

    It writes nothing: the store must exist already (a SQLite file is not created).

    Raises:
        ConfigError: The SQLite file does not exist.
        StorageError: The database cannot be opened or holds no pbtkit schema.
    """
    from pbtkit.controller import Controller
    from pbtkit.store import open_store

    store = open_store(storage, create=False) if isinstance(storage, str) else storage
    app = FastAPI(title="pbtkit dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app, HEADERS)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("dashboard", status_code=307)

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    install(app, Controller(store), auth_key)
    return app


def serve_dashboard(
    storage: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8766,
    auth_key: str | None = None,
    log_level: str = "warning",
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard alone until interrupted (``pbtkit dashboard``); ``announce``
    is called with the page's URL once the store is open and the address is held.

    Raises:
        ConfigError: ``host`` is not a loopback address and no key was given, the SQLite
            file does not exist, or the address is taken.
    """
    check_exposure(host, auth_key)
    app = dashboard_app(storage, auth_key=auth_key)
    sock = listen(host, port)
    if announce is not None:
        announce(f"{base_url(host, sock.getsockname()[1])}/dashboard")
    run_app(app, sock, log_level=log_level)
