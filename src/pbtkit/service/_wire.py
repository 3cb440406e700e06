"""The JSON wire format: request bodies (pydantic) and records to and from plain JSON.

Strict JSON has no NaN or infinity, so metric values that are not finite travel as the
strings ``"nan"``, ``"inf"`` and ``"-inf"``, and a score that is not finite as ``null``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

try:
    from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the pbtkit client and service need pydantic: pip install 'pbtkit[client]'"
    ) from exc

from pbtkit.controller import BatchFinish, Lease, Snapshot, Summary, TrialResult
from pbtkit.controller._batch import MAX_BATCH
from pbtkit.store import _codec as codec
from pbtkit.store._base import (
    Measurement,
    decode_metrics,
    encode_metrics,
)

__all__ = [
    "CreateIn",
    "ErrorOut",
    "FailIn",
    "FinishBatchIn",
    "FinishIn",
    "HeartbeatIn",
    "LeaseBatchIn",
    "LeaseIn",
    "ReleaseIn",
    "ReportIn",
    "TrialResultIn",
]

MAX_REPORTS = 10_000
#: The most reports one batch of finished trials may carry in all.
MAX_BATCH_REPORTS = 200_000
MAX_INT = 2**63 - 1
_NAME = Field(min_length=1, max_length=256)
#: A metric value: a finite number, or the string naming a value JSON cannot hold (a
#: literal ``NaN`` or ``Infinity``, or a number too large for a double, is refused).
Metric = Annotated[float, Field(allow_inf_nan=False)] | Literal["nan", "inf", "-inf"]
MetricName = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def _utf8(value: Any, where: str) -> None:
    """Refuse text that cannot be stored or sent back as UTF-8 (lone surrogates)."""
    if isinstance(value, str):
        if value.isascii():  # the common case, checked in C
            return
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
        # Each nested model checks its own text (``reports`` are ReportIn models).
        for name in type(self).__pydantic_fields__:
            if name != "reports":
                _utf8(getattr(self, name), name)
        return self


class ReportIn(_Body):
    """Metric values reported at one step."""

    step: int = Field(ge=0, le=MAX_INT)
    metrics: dict[MetricName, Metric] = Field(min_length=1, max_length=256)

    @model_validator(mode="after")
    def _text_is_utf8(self) -> Any:
        # Thousands of these arrive in one batch: only the names are text (a value is
        # a number or one of the strings "nan", "inf", "-inf").
        for name in self.metrics:
            _utf8(name, "metrics")
        return self


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


class _ReportsIn(_Body):
    worker_id: str = _NAME
    reports: list[ReportIn] = Field(default_factory=list, max_length=MAX_REPORTS)


class HeartbeatIn(_ReportsIn):
    """Keep a lease and store the reports made so far.

    ``seq`` numbers the reports: how many reports of this trial the worker sent before
    these (in earlier heartbeats). With ``again`` (the same heartbeat sent again after its
    answer was lost) the server stores only those it does not hold yet, so a retried
    batch is never stored twice. Without ``seq`` every report is stored.
    """

    seq: int | None = Field(default=None, ge=0, le=MAX_INT)
    #: Sent again after the answer was lost: store only what is not stored yet.
    again: bool = False


class FinishIn(_ReportsIn):
    """A trial is done; ``checkpoint`` names where it was saved, inside the root.

    ``seq`` and ``again`` number the reports as a heartbeat's do: with ``again`` (a
    heartbeat that carried some of these lost its answer, or this finish is sent again)
    the server stores only the reports it does not hold yet. For a finish that also
    asks for the next lease, ``again`` hands back the trial the lost answer carried.
    """

    checkpoint: str | None = Field(default=None, min_length=1, max_length=4096)
    seq: int | None = Field(default=None, ge=0, le=MAX_INT)
    again: bool = False


class LeaseBatchIn(_Body):
    """Ask for up to ``max_trials`` pending trials at once (a worker that trains them
    together)."""

    worker_id: str = _NAME
    max_trials: int = Field(ge=1, le=MAX_BATCH)
    #: Sent again after the answer was lost: hand back the trials the worker holds.
    again: bool = False


class TrialResultIn(_Body):
    """One finished trial of a batch: its reports and where its checkpoint was saved."""

    trial_id: int = Field(ge=1, le=MAX_INT)
    reports: list[ReportIn] = Field(default_factory=list, max_length=MAX_REPORTS)
    checkpoint: str | None = Field(default=None, min_length=1, max_length=4096)


class FinishBatchIn(_Body):
    """Several trials of one experiment are done: record them, then decide together."""

    worker_id: str = _NAME
    trials: list[TrialResultIn] = Field(min_length=1, max_length=MAX_BATCH)

    @model_validator(mode="after")
    def _bounded(self) -> Any:
        ids = [t.trial_id for t in self.trials]
        if len(set(ids)) != len(ids):
            raise ValueError("trials names a trial more than once")
        if sum(len(t.reports) for t in self.trials) > MAX_BATCH_REPORTS:
            raise ValueError(f"trials carry more than {MAX_BATCH_REPORTS} reports in all")
        return self


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


def reports_in(reports: list[ReportIn]) -> list[Measurement]:
    """Wire reports of one trial (the one of the request's path) as measurements."""
    return [Measurement(r.step, decode_metrics(r.metrics)) for r in reports]


def results_in(trials: list[TrialResultIn], checkpoint: Any) -> list[TrialResult]:
    """The trials of a batch finish as :class:`TrialResult` records; ``checkpoint`` turns
    a client's checkpoint path into its stored name (and refuses one outside the root)."""
    return [
        TrialResult(t.trial_id, tuple(reports_in(t.reports)), checkpoint(t.checkpoint))
        for t in trials
    ]


def results_out(results: list[TrialResult]) -> list[dict[str, Any]]:
    """Finished trials as the body of a batch finish."""
    return [
        {
            "trial_id": r.trial_id,
            "reports": [{"step": m.step, "metrics": encode_metrics(m.metrics)} for m in r.reports],
            "checkpoint": r.checkpoint,
        }
        for r in results
    ]


def batch_finish_out(outcome: BatchFinish) -> dict[str, Any]:
    """What a batch finish did, as JSON."""
    return {
        "released": list(outcome.released),
        "lost": [{"trial_id": i, "message": m} for i, m in sorted(outcome.lost.items())],
    }


def batch_finish_from(data: dict[str, Any]) -> BatchFinish:
    """Inverse of :func:`batch_finish_out`."""
    return BatchFinish(
        tuple(data["released"]), {int(x["trial_id"]): str(x["message"]) for x in data["lost"]}
    )


# One encoding of each record (pbtkit.store._codec), shared with the store and export.
report_out, report_from = codec.report_to_json, codec.report_from_json
experiment_out, experiment_from = codec.experiment_to_json, codec.experiment_from_json
member_out, member_from = codec.member_to_json, codec.member_from_json
trial_out, trial_from = codec.trial_to_json, codec.trial_from_json
event_out, event_from = codec.event_to_json, codec.event_from_json


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
    out["best_score"] = codec.score_to_json(s.best_score)
    return out


def summary_from(data: dict[str, Any]) -> Summary:
    """Inverse of :func:`summary_out`."""
    return Summary(**{**data, "best_score": codec.score_from_json(data["best_score"])})


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
