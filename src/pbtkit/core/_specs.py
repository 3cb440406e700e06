"""Reading ``{"type": ..., **settings}`` specs, as written by the ``to_dict`` methods, and
the numbers in them."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pbtkit._exceptions import ConfigError

__all__ = [
    "check_keys",
    "finite_number",
    "json_key",
    "json_scalar",
    "number_from_text",
    "real_number",
    "typed_spec",
]


def real_number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (bools excluded), else ``None``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return None
    raw: Any = value  # numbers.Real does not type its operators
    try:
        return float(raw)
    except OverflowError:  # an int too large for a float
        return math.inf if raw > 0 else -math.inf


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite real number (bools excluded), else ``None``:
    what every numeric setting of a strategy must be before its own range is checked."""
    number = real_number(value)
    return number if number is not None and math.isfinite(number) else None


def json_key(value: Any) -> tuple[str, Any]:
    """A key that tells JSON scalars apart the way JSON does: ``True`` is not ``1``."""
    if value is None:
        return ("none", None)
    if isinstance(value, bool | np.bool_):
        return ("bool", bool(value))
    if isinstance(value, str):
        return ("str", value)
    return ("num", value)


def json_scalar(value: Any) -> Any:
    """A JSON scalar as a plain Python object, or raise ``TypeError`` if it is none."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise TypeError("non-finite")
        return number
    raise TypeError(type(value).__name__)


def number_from_text(value: Any) -> Any:
    """A number written as text (``"1e-4"``) as that number; anything else as it is.

    YAML 1.1 reads ``1e-4`` as a string; bounds written so are taken as the numbers they
    spell.
    """
    if isinstance(value, str):
        try:
            return float(value) if not value.strip().lstrip("+-").isdigit() else int(value)
        except ValueError:
            return value
    return value


def check_keys(
    subject: str, spec: Mapping[str, Any], required: Sequence[str], allowed: Sequence[str]
) -> None:
    """Refuse a spec that lacks a required key or has one not allowed.

    Raises:
        ConfigError: ``"<subject>: missing a; unknown b; it takes the keys ..."``.
    """
    missing = [key for key in required if key not in spec]
    unknown = sorted(str(key) for key in spec if key not in allowed)
    if missing or unknown:
        problems = [f"missing {', '.join(missing)}"] if missing else []
        problems += [f"unknown {', '.join(unknown)}"] if unknown else []
        raise ConfigError(
            f"{subject}: {'; '.join(problems)}; it takes the keys {', '.join(allowed)}"
        )


def typed_spec(
    what: str, spec: Any, keys_by_type: Mapping[str, tuple[str, ...]]
) -> tuple[str, dict[str, Any]]:
    """Check a spec's type and keys; return the type and the settings it gives.

    Args:
        what: What the spec describes, for messages ("exploit", "explore").
        spec: The spec as read from a config file or the store.
        keys_by_type: The settings each type takes.

    Raises:
        ConfigError: The spec is not a mapping, its type is unknown, or a key is unknown.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"an {what} spec must be a mapping, got {type(spec).__name__}")
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in keys_by_type:
        raise ConfigError(
            f"{what} spec {dict(spec)!r} has type {kind!r}; valid types: {', '.join(keys_by_type)}"
        )
    keys = keys_by_type[kind]
    check_keys(f"{what} spec {dict(spec)!r} of type {kind!r}", spec, (), ("type", *keys))
    return kind, {key: spec[key] for key in keys if key in spec}
