"""``RemoteController``: the controller protocol over HTTP, for workers and clients.

It answers exactly like :class:`pbtkit.controller.Controller` (same methods, same return
values, same exceptions), so a worker cannot tell whether its controller is in this
process or behind ``pbtkit serve``.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from pbtkit._exceptions import ConfigError, LeaseLost, PBTError, StorageError, errors_by_name
from pbtkit.controller import FINISHED, WAIT, BatchFinish, Lease, Snapshot, Summary, TrialResult
from pbtkit.controller._batch import check_results, check_size
from pbtkit.service import _wire as wire
from pbtkit.spec import ExperimentSpec
from pbtkit.store._base import (
    ExperimentRecord,
    Measurement,
    ReportRecord,
    TrialRecord,
    encode_metrics,
)

__all__ = ["DEFAULT_MAX_OUTAGE", "RemoteController", "ServiceError"]

log = logging.getLogger("pbtkit.client")

#: How long a worker waits for an unreachable server by default: long enough for a
#: restart or an upgrade, short enough that a fleet pointed at a dead server ends.
DEFAULT_MAX_OUTAGE = 600.0


def _backoff(first: float = 0.05, longest: float = 5.0) -> Iterator[float]:
    """Delays between tries: doubling from ``first`` up to ``longest``, each jittered, so
    a fleet of workers does not knock on a restarting server all at once."""
    delay = first
    while True:
        yield delay * random.uniform(0.5, 1.0)
        delay = min(delay * 2, longest)


#: Exception classes a server may name in an error body.
_ERRORS: dict[str, type[PBTError]] = errors_by_name()


class ServiceError(PBTError, RuntimeError):
    """The server refused a request for a reason without a pbtkit exception (401, 413...)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class RemoteController:
    """A controller reached over HTTP, riding out outages of the server.

    When the server cannot be reached (restarting, a network blip) or its storage is busy
    (503), a call is tried again with jittered exponential backoff until the server
    answers or ``max_outage`` seconds have passed; the outage is logged once when it
    starts and once when it ends (logger ``pbtkit.client``). Every call of the worker
    protocol may be sent twice safely: a lease asked again returns the trial this worker
    already holds, a finish the server already recorded is acknowledged again, and a
    failure already recorded is ignored.

    Args:
        url: The server's base URL, e.g. ``http://127.0.0.1:8765``.
        auth_key: The server's key (default: the ``PBTKIT_AUTH_KEY`` environment variable).
        timeout: Seconds to wait for an answer.
        max_outage: The longest the server may stay unreachable before a call gives up
            with a StorageError (default 10 minutes; 0: give up at once).
        report_interval: How long a worker holds its reports before it sends them (in
            batches, with a heartbeat): every step may be reported at little cost, and
            a report reaches the server within about this many seconds.
        report_batch: How many reports a worker holds at most before it sends them.

    Reports are numbered per trial (``seq``), so a heartbeat sent again after its
    answer was lost stores only the reports the server does not hold yet.
    """

    #: A heartbeat carries at most this many reports (the server takes 10,000).
    LARGEST_BATCH = 5_000

    def __init__(
        self,
        url: str,
        auth_key: str | None = None,
        *,
        timeout: float = 60.0,
        max_outage: float = DEFAULT_MAX_OUTAGE,
        report_interval: float = 0.1,
        report_batch: int = 1_000,
        transport: Any = None,
    ) -> None:
        if (
            isinstance(max_outage, bool)
            or not isinstance(max_outage, int | float)
            or not 0 <= max_outage < math.inf
        ):
            raise ConfigError(
                f"max_outage must be a number of seconds >= 0 (0: give up at once), got "
                f"{max_outage!r}"
            )
        if (
            isinstance(report_interval, bool)
            or not isinstance(report_interval, int | float)
            or not 0 < report_interval < math.inf
        ):
            raise ConfigError(
                f"report_interval must be a number of seconds > 0, got {report_interval!r}"
            )
        if isinstance(report_batch, bool) or not isinstance(report_batch, int) or report_batch < 1:
            raise ConfigError(f"report_batch must be an integer >= 1, got {report_batch!r}")
        from pbtkit._extras import load

        httpx = load("client", "the HTTP client", "httpx")
        key = auth_key if auth_key is not None else os.environ.get("PBTKIT_AUTH_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url.rstrip("/")
        self._httpx = httpx
        self._client = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )
        self.max_outage = float(max_outage)
        self._down_since: float | None = None  # when the current outage began
        self._outage_lock = threading.Lock()
        self._info: dict[str, Any] | None = None
        self._specs: dict[str, ExperimentSpec] = {}
        self.report_interval = float(report_interval)
        self.report_batch = min(report_batch, self.LARGEST_BATCH)
        # Per trial: how many of its reports the server acknowledged, and whether the
        # last heartbeat ended without an answer (so the server may hold its reports).
        self._sent: dict[int, int] = {}
        self._unsure: set[int] = set()
        self._sent_lock = threading.Lock()
        self._no_handoff = False  # the server has no finish-and-lease route (older)

    # transport ---------------------------------------------------------------------
    def _call(
        self, method: str, path: str, body: Any = None, *, again: Any = None, **params: Any
    ) -> Any:
        """Send a request, riding out an outage (see the class docstring); ``again`` is
        the body to send instead when the request is repeated."""
        delays = _backoff()
        started = time.monotonic()
        while True:
            try:
                response = self._client.request(
                    method,
                    path,
                    json=body,
                    params={k: v for k, v in params.items() if v is not None} or None,
                )
            except self._httpx.TransportError as exc:
                # Unreachable, or gone before it answered. Every call may be sent again
                # (see the class docstring), so wait for the server to come back.
                why = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code != 503:
                    self._back_up()
                    if response.is_success:
                        return response.json()
                    raise self._error(response)
                why = "its storage is busy (503)"
            waited = time.monotonic() - started
            if waited >= self.max_outage:
                raise StorageError(
                    f"cannot reach the pbtkit server at {self.url} ({why}); gave up after "
                    f"{waited:.0f} s (max_outage={self.max_outage:g} s). Is `pbtkit serve` "
                    "running there?"
                )
            self._went_down(why)
            time.sleep(min(next(delays), self.max_outage - waited))
            if again is not None:
                body = again

    def _went_down(self, why: str) -> None:
        with self._outage_lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        log.warning(
            "the pbtkit server at %s is unreachable (%s); retrying for up to %g s",
            self.url,
            why,
            self.max_outage,
        )

    def _back_up(self) -> None:
        with self._outage_lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            log.warning(
                "the pbtkit server at %s answers again after %.1f s",
                self.url,
                time.monotonic() - since,
            )

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
            lease = wire.lease_from(reply["lease"])
            # A lease starts the trial's reports afresh from this worker's side (a failed
            # attempt's reports are deleted with it).
            self._forget(lease.trial.id)
            return lease
        return WAIT if reply["status"] == "wait" else FINISHED

    def _forget(self, trial_id: int) -> None:
        with self._sent_lock:
            self._sent.pop(trial_id, None)
            self._unsure.discard(trial_id)

    def lease(
        self,
        name: str,
        worker_id: str,
        *,
        member: int | None = None,
        generation: int | None = None,
        again: bool = False,
    ) -> Lease | Literal["wait", "finished"]:
        """Ask for a pending trial of one experiment."""
        body = {"worker_id": worker_id, "member": member, "generation": generation}
        path = f"/v1/experiments/{_q(name)}/lease"
        reply = self._call("POST", path, {**body, "again": again}, again={**body, "again": True})
        return self._lease(reply)

    def lease_any(self, worker_id: str, *, again: bool = False) -> Lease | Literal["wait"]:
        """Ask for a pending trial of any running experiment."""
        body = {"worker_id": worker_id}
        reply = self._call(
            "POST", "/v1/lease", {**body, "again": again}, again={**body, "again": True}
        )
        got = self._lease(reply)
        return WAIT if got == FINISHED else got

    def lease_batch(
        self, name: str, worker_id: str, *, max_trials: int, again: bool = False
    ) -> list[Lease] | Literal["wait", "finished"]:
        """Ask for up to ``max_trials`` pending trials of one experiment at once."""
        check_size("max_trials", max_trials)  # the same refusal as in process
        body = {"worker_id": worker_id, "max_trials": max_trials}
        path = f"/v1/experiments/{_q(name)}/lease-batch"
        reply = self._call("POST", path, {**body, "again": again}, again={**body, "again": True})
        if reply["status"] == "leased":
            return [wire.lease_from(lease) for lease in reply["leases"]]
        return WAIT if reply["status"] == "wait" else FINISHED

    def finish_batch(
        self, name: str, worker_id: str, results: Sequence[TrialResult]
    ) -> BatchFinish:
        """Finish several trials of one experiment; the server decides them together."""
        check_results(results)
        body = {"worker_id": worker_id, "trials": wire.results_out(list(results))}
        path = f"/v1/experiments/{_q(name)}/finish-batch"
        return wire.batch_finish_from(self._call("POST", path, body))

    def heartbeat(
        self, trial_id: int, worker_id: str, reports: Sequence[Measurement] = ()
    ) -> float:
        """Extend a lease and send reports (numbered, so that sending them again after a
        lost answer stores none twice; more than :attr:`LARGEST_BATCH` go in several
        requests)."""
        path = f"/v1/trials/{trial_id}/heartbeat"
        with self._sent_lock:
            base = self._sent.get(trial_id, 0)
        expires = 0.0
        start = 0
        while True:
            chunk = reports[start : start + self.LARGEST_BATCH]
            with self._sent_lock:
                seq = self._sent.get(trial_id, 0)
                unsure = trial_id in self._unsure
            body = {"worker_id": worker_id, "reports": _reports(chunk), "seq": seq}
            try:
                reply = self._call(
                    "POST", path, {**body, "again": unsure}, again={**body, "again": True}
                )
            except LeaseLost:
                self._forget(trial_id)
                raise
            except BaseException:
                # No answer: the server may hold these reports. The caller sends them
                # all again (numbered from the first), saying so, and the server stores
                # only those it lacks.
                with self._sent_lock:
                    self._sent[trial_id] = base
                    self._unsure.add(trial_id)
                raise
            with self._sent_lock:
                self._sent[trial_id] = seq + len(chunk)
                self._unsure.discard(trial_id)
            expires = float(reply["lease_expires"])
            start += len(chunk)
            if start >= len(reports):
                return expires

    def finish(
        self,
        trial_id: int,
        worker_id: str,
        reports: Sequence[Measurement] = (),
        checkpoint: str | None = None,
    ) -> list[str]:
        """Finish a trial; returns checkpoint names nothing needs any more."""
        reply = self._finish_call(
            f"/v1/trials/{trial_id}/finish", trial_id, worker_id, reports, checkpoint
        )
        return list(reply["released"])

    def finish_and_lease(
        self,
        trial_id: int,
        worker_id: str,
        reports: Sequence[Measurement] = (),
        checkpoint: str | None = None,
    ) -> tuple[list[str], Lease | None]:
        """Finish a trial and lease this worker's next trial of the same experiment in
        one request (and one transaction on the server).

        Returns:
            The checkpoint names nothing needs any more, and the next lease, or None when
            none can be handed out now (ask :meth:`lease` then).
        """
        if self._no_handoff:
            return self.finish(trial_id, worker_id, reports, checkpoint), None
        path = f"/v1/trials/{trial_id}/finish-and-lease"
        try:
            reply = self._finish_call(path, trial_id, worker_id, reports, checkpoint)
        except ServiceError as exc:
            if exc.status not in (404, 405):
                raise
            # A server older than this route: nothing was done; finish the usual way.
            self._no_handoff = True
            return self.finish(trial_id, worker_id, reports, checkpoint), None
        ahead = None if reply["lease"] is None else wire.lease_from(reply["lease"])
        if ahead is not None:
            self._forget(ahead.trial.id)
        return list(reply["released"]), ahead

    def _finish_call(
        self,
        path: str,
        trial_id: int,
        worker_id: str,
        reports: Sequence[Measurement],
        checkpoint: str | None,
    ) -> Any:
        """Send a finish. Its reports are numbered (``seq``) and marked ``again`` when a
        heartbeat that carried some of them lost its answer, or when the finish itself is
        sent again, so that the server stores none twice."""
        with self._sent_lock:
            seq = self._sent.get(trial_id, 0)
            unsure = trial_id in self._unsure
        body: dict[str, Any] = {
            "worker_id": worker_id,
            "reports": _reports(reports),
            "checkpoint": checkpoint,
        }
        numbered = {**body, "seq": seq, "again": True}
        try:
            reply = self._call("POST", path, numbered if unsure else body, again=numbered)
        except LeaseLost:
            self._forget(trial_id)
            raise
        self._forget(trial_id)
        return reply

    def fail(
        self,
        trial_id: int,
        worker_id: str | None,
        error: str,
        *,
        penalize: bool = True,
        bad_parent: bool = False,
    ) -> list[str]:
        """Give a trial back after an error."""
        body = {
            "worker_id": worker_id,
            "error": error[-200_000:],
            "penalize": penalize,
            "bad_parent": bad_parent,
        }
        released = self._call("POST", f"/v1/trials/{trial_id}/fail", body)["released"]
        self._forget(trial_id)
        return list(released)

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


def _reports(reports: Sequence[Measurement]) -> list[dict[str, Any]]:
    return [{"step": r.step, "metrics": encode_metrics(r.metrics)} for r in reports]


def _q(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
