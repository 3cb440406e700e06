"""Row values shared by the SQL backends: JSON decoded only when looked at."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["LazyJSON", "nan_to_none", "none_to_nan"]


class LazyJSON(Mapping[str, Any]):
    """A JSON object decoded on first use (most members' values are never looked at)."""

    __slots__ = ("_data", "_decode", "_text")

    def __init__(
        self,
        text: str | dict[str, Any],
        decode: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    ) -> None:
        self._text = text if isinstance(text, str) else None
        self._decode = decode
        self._data: dict[str, Any] | None = None
        if isinstance(text, dict):
            self._data = dict(decode(text)) if decode else text

    def _decoded(self) -> dict[str, Any]:
        if self._data is None:
            data = json.loads(self._text or "{}") or {}  # JSON null: nothing stored
            self._data = dict(self._decode(data)) if self._decode else data
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return repr(self._decoded())


def nan_to_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def none_to_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)
