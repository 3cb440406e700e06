"""The JSON wire format: request bodies (pydantic) and records to and from plain JSON.

Strict JSON has no NaN or infinity, so metric values that are not finite travel as the
strings ``"nan"``, ``"inf"`` and ``"-inf"``, and a score that is not finite as ``null``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

try:
    from pydantic import BaseModel, ConfigDict, Field, model_validator
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the pbtkit client and service need pydantic: pip install 'pbtkit[client]'"
    ) from exc

from pbtkit.controller import Lease, Snapshot, Summary
from pbtkit.store._base import (
    EventRecord,
    ExperimentRecord,
    Measurement,
    MemberRecord,
    ReportRecord,
    TrialRecord,
    decode_metrics,
    encode_metrics,
)

__all__ = [
    "CreateIn",
    "ErrorOut",
    "FailIn",
    "FinishIn",
    "HeartbeatIn",
    "LeaseIn",
    "ReleaseIn",
    "ReportIn",
]

MAX_REPORTS = 10_000
MAX_INT = 2**63 - 1
_NAME = Field(min_length=1, max_length=256)
Metric = float | Literal["nan", "inf", "-inf"]


def _utf8(value: Any, where: str) -> None:
    """Refuse text that cannot be stored or sent back as UTF-8 (lone surrogates)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where} holds text that is not valid UTF-8") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _utf8(key, where)
            _utf8(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _utf8(item, where)


class ErrorOut(BaseModel):
    """The body of every error answer: the error's type, what went wrong and what to do,
    and whether trying again may help."""

    error: str
    message: str
    retryable: bool = False


class _Body(BaseModel):
    # Strict: a JSON ``true`` is not the integer 1 and ``"3"`` is not 3.
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="after")
    def _text_is_utf8(self) -> Any:
        for name in type(self).model_fields:
            _utf8(getattr(self, name) if name != "reports" else None, name)
        return self


class ReportIn(_Body):
    """Metric values reported at one step."""

    step: int = Field(ge=0, le=MAX_INT)
    metrics: dict[str, Metric] = Field(min_length=1, max_length=256)


class CreateIn(_Body):
    """Create an experiment (or find the one of that name to resume)."""

    name: str = _NAME
    spec: dict[str, Any]
    resume: bool = True


class LeaseIn(_Body):
    """Ask for a pending trial."""

    worker_id: str = _NAME
    member: int | None = Field(default=None, ge=0, le=MAX_INT)
    generation: int | None = Field(default=None, ge=0, le=MAX_INT)
    #: Sent again after the answer was lost: hand back the trial the worker holds.
    again: bool = False


class HeartbeatIn(_Body):
    """Keep a lease and store the reports made so far."""

    worker_id: str = _NAME
    reports: list[ReportIn] = Field(default_factory=list, max_length=MAX_REPORTS)


class FinishIn(HeartbeatIn):
    """A trial is done; ``checkpoint`` names where it was saved, inside the root."""

    checkpoint: str | None = Field(default=None, min_length=1, max_length=4096)


class FailIn(_Body):
    """A trial failed; ``error`` says why (a traceback)."""

    worker_id: str | None = Field(default=None, min_length=1, max_length=256)
    error: str = Field(max_length=200_000)
    penalize: bool = True
    #: The trial could not start from its parent's checkpoint (it failed verification).
    bad_parent: bool = False


class ReleaseIn(_Body):
    """A worker is known to be dead: give back what it holds."""

    worker_id: str = _NAME
    reason: str = Field(max_length=10_000)
    penalize: bool = True


def _score(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _unscore(value: float | None) -> float:
    return math.nan if value is None else float(value)


def reports_in(reports: list[ReportIn]) -> list[Measurement]:
    """Wire reports of one trial (the one of the request's path) as measurements."""
    return [Measurement(r.step, decode_metrics(r.metrics)) for r in reports]


def report_out(report: ReportRecord) -> dict[str, Any]:
    """A report as JSON (also the shape of a report in a request)."""
    return {
        "trial_id": report.trial_id,
        "member": report.member,
        "step": report.step,
        "metrics": encode_metrics(report.metrics),
    }


def report_from(data: dict[str, Any]) -> ReportRecord:
    """Inverse of :func:`report_out`."""
    return ReportRecord(
        data["trial_id"], data["member"], data["step"], decode_metrics(data["metrics"])
    )


def experiment_out(e: ExperimentRecord) -> dict[str, Any]:
    """An experiment as JSON."""
    return {
        "id": e.id,
        "name": e.name,
        "config": dict(e.config),
        "status": e.status,
        "created_at": e.created_at,
    }


def experiment_from(data: dict[str, Any]) -> ExperimentRecord:
    """Inverse of :func:`experiment_out`."""
    return ExperimentRecord(
        data["id"], data["name"], data["config"], data["status"], data["created_at"]
    )


def member_out(m: MemberRecord) -> dict[str, Any]:
    """A member as JSON."""
    return {
        "experiment_id": m.experiment_id,
        "member": m.member,
        "status": m.status,
        "latest_trial_id": m.latest_trial_id,
        "step": m.step,
        "score": _score(m.score),
        "hparams": dict(m.hparams),
        "checkpoint": m.checkpoint,
    }


def member_from(data: dict[str, Any]) -> MemberRecord:
    """Inverse of :func:`member_out`."""
    return MemberRecord(**{**data, "score": _unscore(data["score"])})


_TRIAL_FIELDS = TrialRecord.__slots__


def trial_out(t: TrialRecord) -> dict[str, Any]:
    """A trial as JSON."""
    out = {name: getattr(t, name) for name in _TRIAL_FIELDS}
    out["hparams"] = dict(t.hparams)
    out["metrics"] = encode_metrics(t.metrics)
    out["score"] = _score(t.score)
    return out


def trial_from(data: dict[str, Any]) -> TrialRecord:
    """Inverse of :func:`trial_out`."""
    return TrialRecord(
        **{
            **data,
            "metrics": decode_metrics(data["metrics"]),
            "score": _unscore(data["score"]),
        }
    )


def event_out(e: EventRecord) -> dict[str, Any]:
    """An event as JSON."""
    return {name: getattr(e, name) for name in EventRecord.__slots__}


def event_from(data: dict[str, Any]) -> EventRecord:
    """Inverse of :func:`event_out`."""
    return EventRecord(**data)


def lease_out(lease: Lease) -> dict[str, Any]:
    """A lease as JSON."""
    return {
        "trial": trial_out(lease.trial),
        "experiment": lease.experiment,
        "metric": lease.metric,
        "checkpoint_root": lease.checkpoint_root,
        "parent_checkpoint": lease.parent_checkpoint,
        "donor": lease.donor,
        "lease_expires": lease.lease_expires,
        "metrics": list(lease.metrics),
    }


def lease_from(data: dict[str, Any]) -> Lease:
    """Inverse of :func:`lease_out`."""
    return Lease(
        **{**data, "trial": trial_from(data["trial"]), "metrics": tuple(data.get("metrics", ()))}
    )


def summary_out(s: Summary) -> dict[str, Any]:
    """A summary as JSON."""
    out = {name: getattr(s, name) for name in Summary.__slots__}
    out["best_score"] = _score(s.best_score)
    return out


def summary_from(data: dict[str, Any]) -> Summary:
    """Inverse of :func:`summary_out`."""
    return Summary(**{**data, "best_score": _unscore(data["best_score"])})


def snapshot_out(s: Snapshot) -> dict[str, Any]:
    """A snapshot as JSON."""
    return {
        "experiment": experiment_out(s.experiment),
        "members": [member_out(m) for m in s.members],
        "trials": [trial_out(t) for t in s.trials],
        "events": [event_out(e) for e in s.events],
    }


def snapshot_from(data: dict[str, Any]) -> Snapshot:
    """Inverse of :func:`snapshot_out`."""
    return Snapshot(
        experiment_from(data["experiment"]),
        [member_from(m) for m in data["members"]],
        [trial_from(t) for t in data["trials"]],
        [event_from(e) for e in data["events"]],
    )
