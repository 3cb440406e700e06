"""One codec per record: the records as strict JSON objects, and back.

The SQL store writes these objects' fields as its columns, the HTTP service sends them as
they are, and ``pbtkit export --format json`` writes them: one encoding of each record,
so the three cannot drift apart. Strict JSON has no NaN or infinity: a metric value that is
not finite travels as the string ``"nan"``, ``"inf"`` or ``"-inf"``, and a score that is
not finite as ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pbtkit.store._base import (
    EventRecord,
    ExperimentRecord,
    MemberRecord,
    ReportRecord,
    TrialRecord,
    decode_metrics,
    encode_metrics,
)

__all__ = [
    "event_from_json",
    "event_to_json",
    "experiment_from_json",
    "experiment_to_json",
    "member_from_json",
    "member_to_json",
    "report_from_json",
    "report_to_json",
    "score_from_json",
    "score_to_json",
    "trial_from_json",
    "trial_to_json",
]


def score_to_json(value: float) -> float | None:
    """A score as strict JSON: ``null`` when it is not finite."""
    return value if math.isfinite(value) else None


def score_from_json(value: float | None) -> float:
    """Inverse of :func:`score_to_json`."""
    return math.nan if value is None else float(value)


def _plain(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)


def trial_to_json(t: TrialRecord) -> dict[str, Any]:
    """A trial: every field, metrics and score made strict JSON."""
    out = {name: getattr(t, name) for name in TrialRecord.__slots__}
    out["hparams"] = dict(t.hparams)
    out["metrics"] = encode_metrics(t.metrics)
    out["score"] = score_to_json(t.score)
    out["inherit"] = _plain(t.inherit)
    return out


def trial_from_json(data: Mapping[str, Any]) -> TrialRecord:
    """Inverse of :func:`trial_to_json` (a database row's mapping reads the same)."""
    values = {name: data[name] for name in TrialRecord.__slots__ if name in data}
    values["metrics"] = decode_metrics(data["metrics"])
    values["score"] = score_from_json(data["score"])
    values["checkpoint_released"] = bool(data.get("checkpoint_released", False))
    values["checkpoint_bad"] = bool(data.get("checkpoint_bad", False))
    return TrialRecord(**values)


def member_to_json(m: MemberRecord) -> dict[str, Any]:
    """A member: its slot and where it stands."""
    return {
        "experiment_id": m.experiment_id,
        "member": m.member,
        "status": m.status,
        "latest_trial_id": m.latest_trial_id,
        "step": m.step,
        "score": score_to_json(m.score),
        "hparams": dict(m.hparams),
        "checkpoint": m.checkpoint,
        "metrics": encode_metrics(m.metrics),
    }


def member_from_json(data: Mapping[str, Any]) -> MemberRecord:
    """Inverse of :func:`member_to_json`."""
    return MemberRecord(
        experiment_id=data["experiment_id"],
        member=data["member"],
        status=data["status"],
        latest_trial_id=data["latest_trial_id"],
        step=data["step"],
        score=score_from_json(data["score"]),
        hparams=data["hparams"],
        checkpoint=data["checkpoint"],
        metrics=decode_metrics(data.get("metrics") or {}),
    )


def experiment_to_json(e: ExperimentRecord) -> dict[str, Any]:
    """An experiment: its name, settings and status."""
    return {
        "id": e.id,
        "name": e.name,
        "config": dict(e.config),
        "status": e.status,
        "created_at": e.created_at,
    }


def experiment_from_json(data: Mapping[str, Any]) -> ExperimentRecord:
    """Inverse of :func:`experiment_to_json`."""
    return ExperimentRecord(
        data["id"], data["name"], data["config"], data["status"], data["created_at"]
    )


def report_to_json(r: ReportRecord) -> dict[str, Any]:
    """A report: its trial, member, step and metrics."""
    return {
        "trial_id": r.trial_id,
        "member": r.member,
        "step": r.step,
        "metrics": encode_metrics(r.metrics),
    }


def report_from_json(data: Mapping[str, Any]) -> ReportRecord:
    """Inverse of :func:`report_to_json`."""
    return ReportRecord(
        data["trial_id"], data["member"], data["step"], decode_metrics(data["metrics"])
    )


def event_to_json(e: EventRecord) -> dict[str, Any]:
    """An event: every field."""
    out = {name: getattr(e, name) for name in EventRecord.__slots__}
    out["old_hparams"] = _plain(e.old_hparams)
    out["new_hparams"] = _plain(e.new_hparams)
    return out


def event_from_json(data: Mapping[str, Any]) -> EventRecord:
    """Inverse of :func:`event_to_json`."""
    return EventRecord(**{name: data[name] for name in EventRecord.__slots__ if name in data})
