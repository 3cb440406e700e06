"""The HTTP service: the controller behind JSON endpoints (FastAPI on uvicorn).

Every endpoint but ``GET /health`` needs ``Authorization: Bearer <key>`` when the server
has a key. Errors leave in one shape, ``{"error": <type>, "message": ..., "retryable":
...}``, with their status chosen in exactly one place (:data:`STATUS`). Checkpoint paths
sent by clients must resolve inside the checkpoint root. Nothing received is unpickled.
The dashboard (:mod:`pbtkit.service.dashboard`) is served at ``/dashboard`` behind the same
key; a browser may sign in there once and keep a cookie that opens the dashboard only.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

try:
    from fastapi import Depends, FastAPI, Query, Request
    from fastapi import Path as PathParam
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("the pbtkit service needs FastAPI: pip install 'pbtkit[service]'") from exc

from pbtkit._exceptions import (
    ConfigError,
    PBTError,
    StorageError,
)
from pbtkit._target import ImportPolicy
from pbtkit._version import __version__
from pbtkit.checkpoints import open_checkpoints
from pbtkit.controller import Controller, Lease
from pbtkit.controller._beats import Beat
from pbtkit.service import _wire as wire
from pbtkit.service._group_commit import GroupCommit
from pbtkit.service._hot import Handler as HotHandler
from pbtkit.service._hot import HotRoute, HotRoutes
from pbtkit.service._http import (
    MAX_BODY,
    STATUS,
    Scope,
    base_url,
    bearer_ok,
    check_exposure,
    error_body,
    install_error_handlers,
    limit_body,
    listen,
    run_app,
)
from pbtkit.spec import ExperimentSpec
from pbtkit.store import Store, open_store

__all__ = ["MAX_BODY", "STATUS", "PBTServer", "create_app", "serve"]

log = logging.getLogger("pbtkit.service")


def create_app(
    storage: str | Store,
    checkpoint_root: str | Path,
    *,
    auth_key: str | None = None,
    lease_seconds: float = 60.0,
    maximize_metric: bool = True,
    max_body: int = MAX_BODY,
    clock: Callable[[], float] | None = None,
    allow_imports: Sequence[str] = (),
) -> Any:
    """Build the ASGI application.

    Args:
        storage: The store URL (``sqlite:///pbt.db``), or an open store.
        checkpoint_root: Every checkpoint path clients send must lie inside it.
        auth_key: The bearer key; None means no authentication (loopback only).
        lease_seconds: Lease length handed to workers.
        maximize_metric: The mode clients get when their config names none.
        max_body: Largest request body accepted, in bytes.
        clock: The controller's clock (default: the database's; tests move their own).
        allow_imports: Module prefixes whose functions a client's spec may name (a
            custom explore function). By default the server imports nothing a client
            names: importing runs code.
    """
    store = open_store(storage) if isinstance(storage, str) else storage
    # The same rule for specs received now and specs already stored: only what the
    # operator allowed is ever imported, and a file path never.
    imports = ImportPolicy.only(allow_imports)
    controller = Controller(store, lease_seconds=lease_seconds, clock=clock, imports=imports)
    checkpoints = open_checkpoints(checkpoint_root)
    key = auth_key.encode() if auth_key else None

    async def authorized(request: Request) -> None:
        if key is not None and not bearer_ok(request.headers.get("authorization", ""), key):
            raise _Unauthorized

    app = FastAPI(
        title="pbtkit",
        version=__version__,
        description="Population Based Training controller. Send `Authorization: Bearer <key>`.",
        # The schema is served behind the key (/v1/openapi.json) and kept in the repo.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    guarded = [Depends(authorized)]

    @app.exception_handler(_Unauthorized)
    async def _on_auth(_: Request, __: Exception) -> JSONResponse:
        return JSONResponse(
            error_body(
                "Unauthorized", "a valid key is required: send 'Authorization: Bearer <key>'"
            ),
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    install_error_handlers(app)

    @app.exception_handler(HTTPException)
    async def _on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names the methods of the first route whose path matched; a path
            # may have several routes (GET and POST /v1/experiments): name them all.
            headers["Allow"] = ", ".join(_allowed_methods(app, request.scope))
        return JSONResponse(
            error_body("HTTPError", str(exc.detail)),
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def _on_bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return JSONResponse(
            error_body("InternalError", f"the server failed: {type(exc).__name__}"),
            status_code=500,
        )

    def spec_for_server(data: dict[str, Any]) -> ExperimentSpec:
        imports.check_spec(data)  # refused at once, not at the first decision that needs it
        try:
            spec = ExperimentSpec.from_dict({**data, "checkpoint_root": str(checkpoints.root)})
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, PBTError):
                raise
            raise ConfigError(f"the experiment spec is incomplete or malformed: {exc!r}") from exc
        return spec

    def checkpoint_name(path: str | None) -> str | None:
        if path is None:
            return None
        return checkpoints.relative(path)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__}

    @app.get("/v1/openapi.json", dependencies=guarded, include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/v1/info", dependencies=guarded, responses=_errors(401, 503))
    def info() -> dict[str, Any]:
        return {
            "version": __version__,
            "lease_seconds": controller.lease_seconds,
            "checkpoint_root": str(checkpoints.root),
            "maximize_metric": maximize_metric,
        }

    @app.get("/v1/experiments", dependencies=guarded, responses=_errors(401, 503))
    def experiments() -> list[dict[str, Any]]:
        return [wire.experiment_out(e) for e in controller.experiments()]

    @app.post(
        "/v1/experiments", dependencies=guarded, responses=_errors(400, 401, 409, 413, 422, 503)
    )
    def create(body: wire.CreateIn) -> dict[str, Any]:
        spec = spec_for_server(body.spec)
        return wire.experiment_out(controller.create(body.name, spec, resume=body.resume))

    @app.get("/v1/experiments/{name}", dependencies=guarded, responses=_errors(401, 404, 422, 503))
    def experiment(name: Name) -> dict[str, Any]:
        return wire.experiment_out(controller.experiment(name))

    @app.get(
        "/v1/experiments/{name}/summary",
        dependencies=guarded,
        responses=_errors(401, 404, 422, 503),
    )
    def summary(name: Name) -> dict[str, Any]:
        return wire.summary_out(controller.summary(name))

    @app.get(
        "/v1/experiments/{name}/snapshot",
        dependencies=guarded,
        responses=_errors(401, 404, 422, 503),
    )
    def snapshot(name: Name) -> dict[str, Any]:
        return wire.snapshot_out(controller.snapshot(name))

    @app.get(
        "/v1/experiments/{name}/members",
        dependencies=guarded,
        responses=_errors(401, 404, 422, 503),
    )
    def members(name: Name) -> list[dict[str, Any]]:
        return [wire.member_out(m) for m in controller.snapshot(name).members]

    @app.get(
        "/v1/experiments/{name}/reports",
        dependencies=guarded,
        responses=_errors(401, 404, 422, 503),
    )
    def reports(name: Name, member: MemberQuery = None) -> list[dict[str, Any]]:
        return [wire.report_out(r) for r in controller.reports(name, member=member)]

    @app.get("/v1/trials/{trial_id}", dependencies=guarded, responses=_errors(401, 404, 422, 503))
    def trial(trial_id: TrialId) -> dict[str, Any]:
        return wire.trial_out(controller.trial(trial_id))

    # The worker protocol's hot routes: each is answered by one function, called by its
    # FastAPI endpoint (the schema, and every request out of the ordinary) and by the
    # lean front (HotRoutes, below) for the ordinary ones.
    def lease_reply(got: Lease | str) -> dict[str, Any]:
        if isinstance(got, Lease):
            return {"status": "leased", "lease": wire.lease_out(got)}
        return {"status": got}

    def do_lease(name: str, body: wire.LeaseIn) -> dict[str, Any]:
        return lease_reply(
            controller.lease(
                name,
                body.worker_id,
                member=body.member,
                generation=body.generation,
                again=body.again,
            )
        )

    @app.post(
        "/v1/experiments/{name}/lease-batch",
        dependencies=guarded,
        responses=_errors(400, 401, 404, 413, 422, 503),
    )
    def lease_batch(name: Name, body: wire.LeaseBatchIn) -> dict[str, Any]:
        got = controller.lease_batch(
            name, body.worker_id, max_trials=body.max_trials, again=body.again
        )
        if isinstance(got, list):
            return {"status": "leased", "leases": [wire.lease_out(lease) for lease in got]}
        return {"status": got}

    def do_lease_any(body: wire.LeaseIn) -> dict[str, Any]:
        return lease_reply(controller.lease_any(body.worker_id, again=body.again))

    beats = GroupCommit(controller)

    async def do_heartbeat(trial_id: int, body: wire.HeartbeatIn) -> dict[str, Any]:
        beat = Beat(trial_id, body.worker_id, wire.reports_in(body.reports), body.seq, body.again)
        return {"lease_expires": await beats.submit(beat)}

    def do_finish(trial_id: int, body: wire.FinishIn) -> dict[str, Any]:
        records = wire.reports_in(body.reports)
        released = controller.finish(
            trial_id,
            body.worker_id,
            records,
            checkpoint_name(body.checkpoint),
            first=body.seq if body.again else None,
        )
        return {"released": released}

    def do_finish_and_lease(trial_id: int, body: wire.FinishIn) -> dict[str, Any]:
        records = wire.reports_in(body.reports)
        released, ahead = controller.finish_and_lease(
            trial_id,
            body.worker_id,
            records,
            checkpoint_name(body.checkpoint),
            first=body.seq if body.again else None,
            again=body.again,
        )
        return {"released": released, "lease": None if ahead is None else wire.lease_out(ahead)}

    @app.post(
        "/v1/experiments/{name}/lease",
        dependencies=guarded,
        responses=_errors(400, 401, 404, 413, 422, 503),
    )
    def lease(name: Name, body: wire.LeaseIn) -> dict[str, Any]:
        return do_lease(name, body)

    @app.post("/v1/lease", dependencies=guarded, responses=_errors(401, 413, 422, 503))
    def lease_any(body: wire.LeaseIn) -> dict[str, Any]:
        return do_lease_any(body)

    @app.post(
        "/v1/trials/{trial_id}/heartbeat",
        dependencies=guarded,
        responses=_errors(400, 401, 409, 413, 422, 503),
    )
    async def heartbeat(trial_id: TrialId, body: wire.HeartbeatIn) -> dict[str, Any]:
        return await do_heartbeat(trial_id, body)

    @app.post(
        "/v1/trials/{trial_id}/finish",
        dependencies=guarded,
        responses=_errors(400, 401, 404, 409, 413, 422, 503),
    )
    def finish(trial_id: TrialId, body: wire.FinishIn) -> dict[str, Any]:
        return do_finish(trial_id, body)

    @app.post(
        "/v1/trials/{trial_id}/finish-and-lease",
        dependencies=guarded,
        responses=_errors(400, 401, 404, 409, 413, 422, 503),
    )
    def finish_and_lease(trial_id: TrialId, body: wire.FinishIn) -> dict[str, Any]:
        """Finish the trial and lease this worker's next trial of its experiment at once
        (``lease`` is null when none can be handed out now: ask ``/lease`` then)."""
        return do_finish_and_lease(trial_id, body)

    @app.post(
        "/v1/experiments/{name}/finish-batch",
        dependencies=guarded,
        responses=_errors(400, 401, 404, 413, 422, 503),
    )
    def finish_batch(name: Name, body: wire.FinishBatchIn) -> dict[str, Any]:
        results = wire.results_in(body.trials, checkpoint_name)
        return wire.batch_finish_out(controller.finish_batch(name, body.worker_id, results))

    @app.post(
        "/v1/trials/{trial_id}/fail",
        dependencies=guarded,
        responses=_errors(401, 404, 409, 413, 422, 503),
    )
    def fail(trial_id: TrialId, body: wire.FailIn) -> dict[str, Any]:
        released = controller.fail(
            trial_id,
            body.worker_id,
            body.error,
            penalize=body.penalize,
            bad_parent=body.bad_parent,
        )
        return {"released": released}

    @app.post(
        "/v1/experiments/{name}/release",
        dependencies=guarded,
        responses=_errors(401, 404, 413, 422, 503),
    )
    def release(name: Name, body: wire.ReleaseIn) -> dict[str, Any]:
        requeued = controller.release_worker(
            name, body.worker_id, body.reason, penalize=body.penalize
        )
        return {"requeued": requeued}

    from pbtkit.service.dashboard import install as install_dashboard

    # The read-only dashboard page at /dashboard, behind the same key (see its module).
    install_dashboard(app, controller, auth_key)

    def in_thread(call: Callable[[str, Any], dict[str, Any]]) -> HotHandler:
        async def handler(param: str, body: Any) -> dict[str, Any]:
            # The store blocks: off the event loop, as FastAPI runs a sync endpoint (in
            # asyncio's own pool, which costs less per call than anyio's).
            return await asyncio.get_running_loop().run_in_executor(None, call, param, body)

        return handler

    async def hot_heartbeat(trial_id: str, body: Any) -> dict[str, Any]:
        return await do_heartbeat(int(trial_id), body)

    hot = [
        HotRoute(_trial_path("heartbeat"), wire.HeartbeatIn, hot_heartbeat),
        HotRoute(
            _trial_path("finish"),
            wire.FinishIn,
            in_thread(lambda trial_id, body: do_finish(int(trial_id), body)),
        ),
        HotRoute(
            _trial_path("finish-and-lease"),
            wire.FinishIn,
            in_thread(lambda trial_id, body: do_finish_and_lease(int(trial_id), body)),
        ),
        HotRoute(_EXPERIMENT_LEASE, wire.LeaseIn, in_thread(do_lease)),
        HotRoute(_LEASE_ANY, wire.LeaseIn, in_thread(lambda _, body: do_lease_any(body))),
    ]
    return HotRoutes(limit_body(app, max_body), hot, key, max_body)


def _trial_path(action: str) -> re.Pattern[str]:
    # A trial id in its plain form, no sign, no leading zero, at most 18 digits (so below
    # 2**63); any other form goes on to FastAPI, which converts or refuses it.
    return re.compile(rf"/v1/trials/([1-9][0-9]{{0,17}})/{action}")


#: An experiment name FastAPI's Name accepts: 1 to 256 characters, no slash.
_EXPERIMENT_LEASE = re.compile(r"/v1/experiments/([^/]{1,256})/lease")
_LEASE_ANY = re.compile(r"/v1/lease()")


class _Unauthorized(Exception):
    pass


def _allowed_methods(app: Any, scope: Scope) -> list[str]:
    """Every method some route of ``app`` answers at the request's path."""
    from starlette.routing import Match

    allowed: set[str] = set()
    for route in app.router.routes:
        methods = getattr(route, "methods", None)
        if methods and route.matches({**scope, "method": next(iter(methods))})[0] == Match.FULL:
            allowed |= set(methods)
    return sorted(allowed - {"HEAD"}) or ["GET"]


_WHY = {
    400: "the request is invalid: a setting, a metric or a checkpoint path (the message says)",
    401: "no key, or the wrong one: send 'Authorization: Bearer <key>'",
    404: "no such experiment, member or trial",
    409: "a conflict: the experiment exists with other settings, or the trial's lease was lost",
    413: "the request body is larger than the server accepts",
    422: "the request is malformed: a field is missing, unknown or of the wrong type",
    503: "the storage is busy or cannot be reached; try again (retryable is true)",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route documents in the OpenAPI schema, each with its body."""
    return {code: {"model": wire.ErrorOut, "description": _WHY[code]} for code in codes}


Name = Annotated[str, PathParam(min_length=1, max_length=256)]
TrialId = Annotated[int, PathParam(ge=1, le=wire.MAX_INT)]
MemberQuery = Annotated[int | None, Query(ge=0, le=wire.MAX_INT)]


def serve(
    storage: str,
    checkpoint_root: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    auth_key: str | None = None,
    lease_seconds: float = 60.0,
    log_level: str = "warning",
    allow_imports: Sequence[str] = (),
    announce: Callable[[str], None] | None = None,
) -> None:
    """Run the service in this process until interrupted.

    Everything that can be refused is checked first (the exposure without a key, the
    storage, the checkpoint root, the address), and only then is ``announce`` called
    with the base URL.

    Raises:
        ConfigError: Listening beyond loopback without a key, or the address is taken.
        StorageError: The storage cannot be opened.
    """
    check_exposure(host, auth_key)
    app = create_app(
        storage,
        checkpoint_root,
        auth_key=auth_key,
        lease_seconds=lease_seconds,
        allow_imports=allow_imports,
    )
    sock = listen(host, port)
    if announce is not None:
        announce(base_url(host, sock.getsockname()[1]))
    run_app(app, sock, log_level=log_level)


class PBTServer:
    """A PBT server in a background thread of this process (the glass-box API).

    Args:
        port: TCP port on ``host``; 0 picks a free one (see :attr:`port`).
        auth_key: The key clients must send; None for none (loopback only).
        maximize_metric: Whether a higher metric is better for experiments whose config
            names no ``mode``.
        host: Address to listen on.
        storage: Where the state lives.
        checkpoint_root: Where clients' checkpoints must lie; by default the directory
            the server was started in, so that clients on this machine may save anywhere
            under it (``pbtkit serve`` defaults to ``pbt-checkpoints``).
        lease_seconds: How long a client may go silent before its trial is given back.

    Use it as a context manager, or call :meth:`shutdown`.
    """

    def __init__(
        self,
        port: int = 0,
        auth_key: str | None = None,
        maximize_metric: bool = True,
        *,
        host: str = "127.0.0.1",
        storage: str | Store = "sqlite:///pbt-server.db",
        checkpoint_root: str | Path | None = None,
        lease_seconds: float = 60.0,
        clock: Callable[[], float] | None = None,
        allow_imports: Sequence[str] = (),
    ) -> None:
        import uvicorn

        check_exposure(host, auth_key)
        app = create_app(
            storage,
            Path.cwd() if checkpoint_root is None else checkpoint_root,
            auth_key=auth_key,
            lease_seconds=lease_seconds,
            maximize_metric=maximize_metric,
            clock=clock,
            allow_imports=allow_imports,
        )
        self._socket = listen(host, port)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise StorageError(f"the PBT server on {host}:{self.port} did not start")
            time.sleep(0.005)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return base_url(self.host, self.port)

    def shutdown(self) -> None:
        """Stop serving and wait for the thread to end."""
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()

    def __enter__(self) -> PBTServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
