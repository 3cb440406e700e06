"""Reads the files an offline W&B run wrote: its ``run-<id>.wandb`` record log and its tables.

The record log is W&B's own transaction log (a LevelDB-style log of 32 KiB blocks, each
record a ``wandb_internal_pb2.Record``); its records are parsed with W&B's own protobuf
classes. ``wandb sync`` reads the same file to upload an offline run.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

_BLOCK = 32 * 1024
_HEADER = 7  # ":W&B", a 2-byte magic and a version byte; then each record's 7-byte header
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """What one offline run holds."""

    folder: Path
    name: str = ""
    group: str = ""
    project: str = ""
    job_type: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None

    def table(self, key: str) -> tuple[list[str], list[list[Any]]]:
        """The last table logged under ``key``: its columns and rows, read from its file."""
        logged = [row[key] for row in self.history if isinstance(row.get(key), dict)]
        assert logged, f"{self.name} logged no table {key!r}"
        data = json.loads((self.folder / "files" / logged[-1]["path"]).read_text())
        return data["columns"], data["data"]


def _records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    out: list[bytes] = []
    pos, partial = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # the block's tail is padding
            pos += left
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        pos += _HEADER
        chunk = data[pos : pos + length]
        pos += length
        if kind == _FULL:
            out.append(chunk)
        elif kind == _FIRST:
            partial = chunk
        elif kind == _MIDDLE:
            partial += chunk
        elif kind == _LAST:
            out.append(partial + chunk)
            partial = b""
        elif kind == 0 and length == 0:
            pos += left - _HEADER  # zeros to the end of the block
    return out


def read_run(folder: Path) -> OfflineRun:
    """Parse the offline run in ``folder`` (``.../wandb/offline-run-...``)."""
    (path,) = folder.glob("run-*.wandb")
    run = OfflineRun(folder)
    for raw in _records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.name = record.run.display_name
            run.group = record.run.run_group
            run.project = record.run.project
            run.job_type = record.run.job_type
            for item in record.run.config.update:
                run.config[item.key] = json.loads(item.value_json)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            run.history.append(_nest(row))
        elif kind == "summary":
            for item in record.summary.update:
                key = item.key or "/".join(item.nested_key)
                run.summary[key] = json.loads(item.value_json)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def _nest(row: dict[str, Any]) -> dict[str, Any]:
    """A table's fields come as ``key/path``, ``key/_type``...: gather them under ``key``."""
    out: dict[str, Any] = {}
    tables = {k.rsplit("/", 1)[0] for k, v in row.items() if k.endswith("/_type")}
    for key, value in row.items():
        head, _, tail = key.rpartition("/")
        if head in tables:
            out.setdefault(head, {})[tail] = value
        else:
            out[key] = value
    return out


def read_runs(directory: Path) -> dict[str, OfflineRun]:
    """Every offline run under ``directory/wandb``, by name."""
    runs = [read_run(f) for f in sorted((directory / "wandb").glob("offline-run-*"))]
    return {r.name: r for r in runs}
