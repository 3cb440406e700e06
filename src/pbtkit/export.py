"""An experiment's trials, reports and events as tables (CSV, Parquet, DataFrames) or JSON.

Three tables, the same in every format:

- **trials**: one row per trial: ``trial_id``, ``member``, ``generation``,
  ``start_step``, ``end_step``, ``status``, ``attempt``, ``score``, ``parent_id`` (the
  trial whose checkpoint it started from), ``parent_member``, ``exploit`` (whether it
  began with an exploit), ``donor_member``, ``checkpoint``, the times, ``error``, then a
  ``hparams.<name>`` column per hyperparameter (empty where a trial has none, as an
  inactive conditional one) and a ``metrics.<name>`` column per metric (its last value);
- **reports**: one row per report: ``trial_id``, ``member``, ``step``, a column per metric;
- **events**: every decision and incident; hyperparameters as JSON.

``pbtkit export --format csv --out DIR`` writes ``trials.csv``, ``reports.csv`` and
``events.csv``; ``--format parquet --out DIR`` the same tables as ``.parquet`` files
(``pip install 'pbtkit[pandas]'``); :meth:`pbtkit.Result.to_dataframe` gives them as
pandas DataFrames. ``--format json`` writes ``{"experiment", "trials", "reports",
"events"}``, with non-finite metric values as the strings ``"nan"``, ``"inf"``,
``"-inf"`` and a non-finite score as null, like the API.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pbtkit._exceptions import ConfigError
from pbtkit.store import EventRecord, ReportRecord, TrialRecord
from pbtkit.store import _codec as codec
from pbtkit.store._base import encode_metrics

if TYPE_CHECKING:
    from pbtkit.controller import ControllerAPI

__all__ = [
    "FORMATS",
    "dataframe",
    "event_table",
    "report_table",
    "to_json",
    "trial_table",
    "write_csv",
    "write_parquet",
]

FORMATS = ("csv", "json", "parquet")
TABLES = ("trials", "reports", "events")
_TRIAL_COLUMNS = (
    "trial_id", "member", "generation", "parent_id", "start_step", "end_step", "status",
    "attempt", "score", "checkpoint", "created_at", "started_at", "finished_at", "error",
)  # fmt: skip
_LINEAGE_COLUMNS = ("parent_member", "exploit", "donor_member")

Table = tuple[list[str], list[list[Any]]]
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
    # the records as the store and the service encode them (pbtkit.store._codec)
    return {
        "experiment": codec.experiment_to_json(snapshot.experiment),
        "trials": [codec.trial_to_json(t) for t in snapshot.trials],
        "reports": [codec.report_to_json(r) for r in reports],
        "events": [codec.event_to_json(ev) for ev in snapshot.events],
    }


def trial_table(
    trials: Sequence[TrialRecord], events: Sequence[EventRecord], space: Iterable[str] = ()
) -> Table:
    """One row per trial (see the module docstring): the columns and the rows.

    Values are plain Python: None where there is none (a score that is not finite, a
    hyperparameter a trial does not have), NaN where a metric's value was NaN.

    Args:
        trials: The experiment's trials.
        events: Its events (which trials began with an exploit, from whom).
        space: The hyperparameters' names in the search space's order (those a trial
            holds besides come after).
    """
    by_id = {t.id: t for t in trials}
    exploits = {e.trial_id: e for e in events if e.kind == "exploit" and e.trial_id is not None}
    hparams = _keys([dict.fromkeys(space), *(t.hparams for t in trials)])
    metrics = _keys(t.metrics for t in trials)
    columns = [
        *_TRIAL_COLUMNS,
        *_LINEAGE_COLUMNS,
        *(f"hparams.{k}" for k in hparams),
        *(f"metrics.{k}" for k in metrics),
    ]
    rows = []
    for t in trials:
        plain = _trial_json(t)  # a score that is not finite is None: "not scored"
        parent = by_id.get(t.parent_id) if t.parent_id is not None else None
        exploit = exploits.get(t.id)
        rows.append(
            [
                *(plain[c] for c in _TRIAL_COLUMNS),
                parent.member if parent is not None else None,
                exploit is not None,
                exploit.donor_member if exploit is not None else None,
                *(t.hparams.get(k) for k in hparams),
                *(t.metrics.get(k) for k in metrics),
            ]
        )
    return columns, rows


def report_table(reports: Sequence[ReportRecord]) -> Table:
    """One row per report: ``trial_id``, ``member``, ``step`` and a column per metric."""
    reported = _keys(r.metrics for r in reports)
    rows = [[r.trial_id, r.member, r.step, *(r.metrics.get(k) for k in reported)] for r in reports]
    return ["trial_id", "member", "step", *reported], rows


def event_table(events: Sequence[EventRecord]) -> Table:
    """One row per event; hyperparameters as JSON text."""
    return list(_EVENT_COLUMNS), [list(_event_row(e, as_json=False).values()) for e in events]


def _tables(controller: ControllerAPI, name: str) -> dict[str, Table]:
    snapshot = controller.snapshot(name)
    space = _space_names(snapshot.experiment.config)
    return {
        "trials": trial_table(snapshot.trials, snapshot.events, space),
        "reports": report_table(controller.reports(name)),
        "events": event_table(snapshot.events),
    }


def _folder(folder: str | Path, what: str) -> Path:
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(
            f"--out {folder} is a file; {what} export writes three files into a folder"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_csv(controller: ControllerAPI, name: str, folder: str | Path) -> list[Path]:
    """Write ``trials.csv``, ``reports.csv`` and ``events.csv`` into ``folder``.

    Returns:
        The three files.

    Raises:
        NotFound: No experiment of that name.
        ConfigError: ``folder`` exists and is not a directory.
    """
    folder = _folder(folder, "CSV")
    written = []
    for table, (columns, rows) in _tables(controller, name).items():
        path = folder / f"{table}.csv"
        _write(path, columns, ([_cell(v) for v in row] for row in rows))
        written.append(path)
    return written


def write_parquet(controller: ControllerAPI, name: str, folder: str | Path) -> list[Path]:
    """Write ``trials.parquet``, ``reports.parquet`` and ``events.parquet`` into ``folder``.

    Returns:
        The three files.

    Raises:
        NotFound: No experiment of that name.
        ConfigError: ``folder`` is a file, or pandas and pyarrow are not installed.
    """
    tables = _tables(controller, name)
    _pandas()
    if importlib.util.find_spec("pyarrow") is None:
        raise ConfigError("Parquet export needs pyarrow: pip install 'pbtkit[pandas]'")
    folder = _folder(folder, "Parquet")
    written = []
    for table, (columns, rows) in tables.items():
        path = folder / f"{table}.parquet"
        dataframe(columns, rows).to_parquet(path, engine="pyarrow", index=False)
        written.append(path)
    return written


def dataframe(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Any:
    """A pandas DataFrame of a table. A column whose values are of several kinds (a
    categorical of numbers and text) holds them as text, so every format can store it.

    Raises:
        ConfigError: pandas is not installed.
    """
    pd = _pandas()
    frame = pd.DataFrame([list(r) for r in rows], columns=list(columns))
    for column in frame.columns:
        kinds = {_kind(v) for v in frame[column] if v is not None and not _nan(v)}
        if len(kinds) > 1:
            frame[column] = [
                None if v is None or _nan(v) else (v if isinstance(v, str) else json.dumps(v))
                for v in frame[column]
            ]
    return frame


def _pandas() -> Any:
    try:
        pd = importlib.import_module("pandas")
    except ImportError as exc:
        raise ConfigError(
            "DataFrames need pandas: pip install 'pbtkit[pandas]' (pandas and pyarrow)"
        ) from exc
    return pd


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _space_names(config: Mapping[str, Any]) -> list[str]:
    space = config.get("space")
    return [str(k) for k in space] if isinstance(space, Mapping) else []


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
