"""``RemoteController``: the controller protocol over HTTP, for workers and clients.

It answers exactly like :class:`pbtkit.controller.Controller` (same methods, same return
values, same exceptions), so a worker cannot tell whether its controller is in this
process or behind ``pbtkit serve``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, Literal

from pbtkit import _exceptions
from pbtkit._exceptions import ConfigError, PBTError, StorageError
from pbtkit.controller import FINISHED, WAIT, Lease, Snapshot, Summary
from pbtkit.service import _wire as wire
from pbtkit.spec import ExperimentSpec
from pbtkit.store._base import ExperimentRecord, ReportRecord, TrialRecord, encode_metrics

__all__ = ["RemoteController", "ServiceError"]

#: Exception classes a server may name in an error body.
_ERRORS: dict[str, type[PBTError]] = {
    name: cls
    for name in _exceptions.__all__
    if isinstance(cls := getattr(_exceptions, name), type) and issubclass(cls, PBTError)
}


class ServiceError(PBTError, RuntimeError):
    """The server refused a request for a reason without a pbtkit exception (401, 413...)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RemoteController:
    """A controller reached over HTTP.

    Args:
        url: The server's base URL, e.g. ``http://127.0.0.1:8765``.
        auth_key: The server's key (default: the ``PBTKIT_AUTH_KEY`` environment variable).
        timeout: Seconds to wait for an answer.
        retries: How often to retry when the server cannot be reached or its storage is
            busy (503); requests that may have been carried out are not retried.
    """

    def __init__(
        self,
        url: str,
        auth_key: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 5,
        transport: Any = None,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigError("the client needs httpx: pip install 'pbtkit[service]'") from exc
        key = auth_key if auth_key is not None else os.environ.get("PBTKIT_AUTH_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url.rstrip("/")
        self._httpx = httpx
        self._client = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )
        self._retries = retries
        self._info: dict[str, Any] | None = None
        self._specs: dict[str, ExperimentSpec] = {}

    # transport ---------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        delay = 0.05
        for attempt in range(self._retries + 1):
            try:
                response = self._client.request(
                    method,
                    path,
                    json=body,
                    params={k: v for k, v in params.items() if v is not None} or None,
                )
            except (self._httpx.ConnectError, self._httpx.ConnectTimeout) as exc:
                # Nothing reached the server: safe to try again.
                if attempt == self._retries:
                    raise StorageError(
                        f"cannot reach the pbtkit server at {self.url}: {exc}. Is "
                        "`pbtkit serve` running there?"
                    ) from exc
                time.sleep(delay)
                delay *= 2
                continue
            except (self._httpx.ReadError, self._httpx.RemoteProtocolError) as exc:
                # The request may have been carried out: not safe to send again.
                raise StorageError(
                    f"the pbtkit server at {self.url} closed the connection before answering "
                    f"{method} {path}: {exc}"
                ) from exc
            if response.status_code == 503 and attempt < self._retries:
                time.sleep(delay)
                delay *= 2
                continue
            if response.is_success:
                return response.json()
            raise self._error(response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, response: Any) -> PBTError:
        try:
            data = response.json()
            kind, message = data.get("error", ""), data.get("message", response.text)
        except ValueError:
            kind, message = "", response.text
        cls = _ERRORS.get(kind)
        if cls is not None:
            return cls(message)
        if response.status_code == 401:
            return ServiceError(
                f"the server at {self.url} refused the key (401): pass the server's "
                "auth key (auth_key= or PBTKIT_AUTH_KEY)",
                401,
            )
        return ServiceError(
            f"{self.url} answered {response.status_code}: {message}", response.status_code
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> RemoteController:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the protocol ------------------------------------------------------------------
    @property
    def info(self) -> dict[str, Any]:
        """The server's version, lease length, checkpoint root and default mode."""
        if self._info is None:
            self._info = self._call("GET", "/v1/info")
        return self._info

    @property
    def lease_seconds(self) -> float:
        """The server's lease length."""
        return float(self.info["lease_seconds"])

    def create(self, name: str, spec: ExperimentSpec, *, resume: bool = True) -> ExperimentRecord:
        """Create an experiment on the server (its checkpoint root is the server's)."""
        body = {"name": name, "spec": spec.to_dict(), "resume": resume}
        return wire.experiment_from(self._call("POST", "/v1/experiments", body))

    def experiment(self, name: str) -> ExperimentRecord:
        """The stored experiment."""
        return wire.experiment_from(self._call("GET", f"/v1/experiments/{_q(name)}"))

    def experiments(self) -> list[ExperimentRecord]:
        """Every experiment on the server."""
        return [wire.experiment_from(e) for e in self._call("GET", "/v1/experiments")]

    def spec(self, name: str) -> ExperimentSpec:
        """The experiment's settings."""
        if name not in self._specs:
            self._specs[name] = ExperimentSpec.from_dict(self.experiment(name).config)
        return self._specs[name]

    def _lease(self, reply: dict[str, Any]) -> Lease | Literal["wait", "finished"]:
        if reply["status"] == "leased":
            return wire.lease_from(reply["lease"])
        return WAIT if reply["status"] == "wait" else FINISHED

    def lease(
        self, name: str, worker_id: str, *, member: int | None = None, generation: int | None = None
    ) -> Lease | Literal["wait", "finished"]:
        """Ask for a pending trial of one experiment."""
        body = {"worker_id": worker_id, "member": member, "generation": generation}
        return self._lease(self._call("POST", f"/v1/experiments/{_q(name)}/lease", body))

    def lease_any(self, worker_id: str) -> Lease | Literal["wait"]:
        """Ask for a pending trial of any running experiment."""
        got = self._lease(self._call("POST", "/v1/lease", {"worker_id": worker_id}))
        return WAIT if got == FINISHED else got

    def heartbeat(
        self, trial_id: int, worker_id: str, reports: Sequence[ReportRecord] = ()
    ) -> float:
        """Extend a lease and send reports."""
        body = {"worker_id": worker_id, "reports": _reports(reports)}
        return float(self._call("POST", f"/v1/trials/{trial_id}/heartbeat", body)["lease_expires"])

    def finish(
        self,
        trial_id: int,
        worker_id: str,
        reports: Sequence[ReportRecord] = (),
        checkpoint: str | None = None,
    ) -> list[str]:
        """Finish a trial; returns checkpoint names nothing needs any more."""
        body = {"worker_id": worker_id, "reports": _reports(reports), "checkpoint": checkpoint}
        return list(self._call("POST", f"/v1/trials/{trial_id}/finish", body)["released"])

    def fail(
        self, trial_id: int, worker_id: str | None, error: str, *, penalize: bool = True
    ) -> list[str]:
        """Give a trial back after an error."""
        body = {"worker_id": worker_id, "error": error[-200_000:], "penalize": penalize}
        return list(self._call("POST", f"/v1/trials/{trial_id}/fail", body)["released"])

    def release_worker(
        self, name: str, worker_id: str, reason: str, *, penalize: bool = True
    ) -> list[int]:
        """Give back every trial a dead worker holds."""
        body = {"worker_id": worker_id, "reason": reason[-10_000:], "penalize": penalize}
        return list(self._call("POST", f"/v1/experiments/{_q(name)}/release", body)["requeued"])

    def reclaim_orphans(self, name: str) -> list[int]:
        """Nothing to do remotely: trials of dead workers come back when their leases expire."""
        del name
        return []

    def summary(self, name: str) -> Summary:
        """Where the experiment stands."""
        return wire.summary_from(self._call("GET", f"/v1/experiments/{_q(name)}/summary"))

    def snapshot(self, name: str) -> Snapshot:
        """Members, trials and events of the experiment."""
        return wire.snapshot_from(self._call("GET", f"/v1/experiments/{_q(name)}/snapshot"))

    def reports(self, name: str, *, member: int | None = None) -> list[ReportRecord]:
        """Reports of the experiment."""
        data = self._call("GET", f"/v1/experiments/{_q(name)}/reports", member=member)
        return [wire.report_from(r) for r in data]

    def trial(self, trial_id: int) -> TrialRecord:
        """One trial."""
        return wire.trial_from(self._call("GET", f"/v1/trials/{trial_id}"))


def _reports(reports: Sequence[ReportRecord]) -> list[dict[str, Any]]:
    return [{"step": r.step, "metrics": encode_metrics(r.metrics)} for r in reports]


def _q(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
