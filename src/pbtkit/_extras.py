"""Optional dependencies: the one place that imports one and says which extra brings it.

Every command and function that needs an optional library asks here, so a missing one is
always the same clear error (``ConfigError``) naming the ``pip install 'pbtkit[...]'``
that fixes it, never a raw ``ModuleNotFoundError`` traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from pbtkit._exceptions import ConfigError

__all__ = ["EXTRAS", "load", "missing", "need"]

#: What each extra of ``pyproject.toml`` brings, by import name.
EXTRAS: dict[str, tuple[str, ...]] = {
    "service": ("fastapi", "uvicorn", "httpx", "pydantic"),
    "dashboard": ("fastapi", "uvicorn", "pydantic"),
    "client": ("httpx", "pydantic"),
    "plot": ("matplotlib",),
    "tensorboard": ("tensorboardX",),
    "postgres": ("psycopg",),
    "ray": ("ray",),
    "s3": ("s3fs",),
    "stats": ("scipy",),
    "pb2": ("sklearn", "scipy"),
    "examples": ("sklearn",),
}


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [name for name in EXTRAS[extra] if not _found(name)]


def _found(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken install, or blocked on purpose
        return False


def need(extra: str, what: str) -> None:
    """Check that ``extra`` is installed.

    Args:
        extra: The extra's name in ``pyproject.toml``.
        what: What needs it, for the message ("pbtkit dashboard", "plots").

    Raises:
        ConfigError: ``{what} needs fastapi, uvicorn, which are not installed: pip install
            'pbtkit[service]'``.
    """
    absent = missing(extra)
    if absent:
        raise ConfigError(
            f"{what} needs {', '.join(absent)}, which {'is' if len(absent) == 1 else 'are'} "
            f"not installed: pip install 'pbtkit[{extra}]'"
        )


def load(extra: str, what: str, module: str) -> ModuleType:
    """Check ``extra`` (see :func:`need`) and import one of its modules."""
    need(extra, what)
    return importlib.import_module(module)
