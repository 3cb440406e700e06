"""An experiment's trials, reports and events as CSV files or one JSON document.

``pbtkit export --format csv --out DIR`` writes ``trials.csv`` (one row per trial, with a
``hparams.<name>`` and a ``metrics.<name>`` column for each hyperparameter and metric),
``reports.csv`` (one row per report, a column per metric) and ``events.csv`` (every
decision and incident; hyperparameters as JSON). ``--format json`` writes
``{"experiment", "trials", "reports", "events"}``, with non-finite metric values as the
strings ``"nan"``, ``"inf"``, ``"-inf"`` and a non-finite score as null, like the API.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pbtkit._exceptions import ConfigError
from pbtkit.store import EventRecord, TrialRecord
from pbtkit.store._base import encode_metrics

if TYPE_CHECKING:
    from pbtkit.controller import ControllerAPI

__all__ = ["FORMATS", "to_json", "write_csv"]

FORMATS = ("csv", "json")
_TRIAL_COLUMNS = (
    "trial_id", "member", "generation", "parent_id", "start_step", "end_step", "status",
    "attempt", "score", "checkpoint", "created_at", "started_at", "finished_at", "error",
)  # fmt: skip
_EVENT_COLUMNS = (
    "event_id", "member", "kind", "trial_id", "donor_member", "donor_trial", "old_hparams",
    "new_hparams", "detail", "at",
)  # fmt: skip


def to_json(controller: ControllerAPI, name: str) -> dict[str, Any]:
    """The experiment, its trials, reports and events as one strict-JSON object.

    Raises:
        NotFound: No experiment of that name (the message names those that exist).
    """
    snapshot = controller.snapshot(name)
    reports = controller.reports(name)
    e = snapshot.experiment
    return {
        "experiment": {
            "name": e.name,
            "status": e.status,
            "config": dict(e.config),
            "created_at": e.created_at,
        },
        "trials": [_trial_json(t) for t in snapshot.trials],
        "reports": [
            {
                "trial_id": r.trial_id,
                "member": r.member,
                "step": r.step,
                "metrics": encode_metrics(r.metrics),
            }
            for r in reports
        ],
        "events": [_event_row(ev, as_json=True) for ev in snapshot.events],
    }


def write_csv(controller: ControllerAPI, name: str, folder: str | Path) -> list[Path]:
    """Write ``trials.csv``, ``reports.csv`` and ``events.csv`` into ``folder``.

    Returns:
        The three files.

    Raises:
        NotFound: No experiment of that name.
        ConfigError: ``folder`` exists and is not a directory.
    """
    snapshot = controller.snapshot(name)
    reports = controller.reports(name)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder} is a file; CSV export writes three files into a folder")
    folder.mkdir(parents=True, exist_ok=True)
    hparams = _keys(t.hparams for t in snapshot.trials)
    metrics = _keys(t.metrics for t in snapshot.trials)
    trials = folder / "trials.csv"
    _write(
        trials,
        [*_TRIAL_COLUMNS, *(f"hparams.{k}" for k in hparams), *(f"metrics.{k}" for k in metrics)],
        (
            [
                *(_cell(_trial_json(t)[c]) for c in _TRIAL_COLUMNS),
                *(_cell(t.hparams.get(k)) for k in hparams),
                *(_cell(t.metrics.get(k)) for k in metrics),
            ]
            for t in snapshot.trials
        ),
    )
    reported = _keys(r.metrics for r in reports)
    report_file = folder / "reports.csv"
    _write(
        report_file,
        ["trial_id", "member", "step", *reported],
        (
            [r.trial_id, r.member, r.step, *(_cell(r.metrics.get(k)) for k in reported)]
            for r in reports
        ),
    )
    events = folder / "events.csv"
    _write(
        events,
        list(_EVENT_COLUMNS),
        ([_cell(v) for v in _event_row(ev, as_json=False).values()] for ev in snapshot.events),
    )
    return [trials, report_file, events]


def _trial_json(t: TrialRecord) -> dict[str, Any]:
    return {
        "trial_id": t.id,
        "member": t.member,
        "generation": t.generation,
        "parent_id": t.parent_id,
        "start_step": t.start_step,
        "end_step": t.end_step,
        "status": t.status,
        "attempt": t.attempt,
        "score": t.score if math.isfinite(t.score) else None,
        "checkpoint": t.checkpoint,
        "created_at": t.created_at,
        "started_at": t.started_at,
        "finished_at": t.finished_at,
        "error": t.error,
        "hparams": dict(t.hparams),
        "metrics": encode_metrics(t.metrics),
    }


def _event_row(e: EventRecord, *, as_json: bool) -> dict[str, Any]:
    def hp(value: Mapping[str, Any] | None) -> Any:
        if value is None:
            return None
        return dict(value) if as_json else json.dumps(dict(value), sort_keys=True)

    return {
        "event_id": e.id,
        "member": e.member,
        "kind": e.kind,
        "trial_id": e.trial_id,
        "donor_member": e.donor_member,
        "donor_trial": e.donor_trial,
        "old_hparams": hp(e.old_hparams),
        "new_hparams": hp(e.new_hparams),
        "detail": e.detail,
        "at": e.at,
    }


def _keys(mappings: Iterable[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for m in mappings:
        seen.update(dict.fromkeys(m))
    return list(seen)


def _cell(value: Any) -> Any:
    """A CSV cell: empty for None, JSON for anything that is not a plain value."""
    if value is None:
        return ""
    if isinstance(value, str | int | float):
        return value
    return json.dumps(value, sort_keys=True)


def _write(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
