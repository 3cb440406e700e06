"""Reading ``{"type": ..., **settings}`` specs, as written by the ``to_dict`` methods."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pbtkit._exceptions import ConfigError

__all__ = ["typed_spec"]


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
    unknown = sorted(str(key) for key in spec if key != "type" and key not in keys)
    if unknown:
        raise ConfigError(
            f"{what} spec {dict(spec)!r}: unknown {', '.join(unknown)}; a {kind!r} {what} "
            f"spec takes the keys {', '.join(('type', *keys))}"
        )
    return kind, {key: spec[key] for key in keys if key in spec}
