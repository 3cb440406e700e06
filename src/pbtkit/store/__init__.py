"""Where experiments live. :func:`open_store` picks the backend from a URL, in one place.

=================================  ===============================================
URL                                backend
=================================  ===============================================
``sqlite:///path/pbt.db``          :class:`SQLStore` on a SQLite file (the default)
``path/pbt.db`` (a plain path)     the same
``memory://``                      :class:`MemoryStore`, this process only (tests)
=================================  ===============================================
"""

from __future__ import annotations

from pathlib import Path

from pbtkit._exceptions import ConfigError
from pbtkit.store._base import (
    EventRecord,
    ExperimentRecord,
    Measurement,
    MemberRecord,
    ReportRecord,
    Store,
    Transaction,
    TrialRecord,
    display_url,
)
from pbtkit.store._memory import MemoryStore
from pbtkit.store._schema import SCHEMA_VERSION
from pbtkit.store._sql import SQLStore

__all__ = [
    "SCHEMA_VERSION",
    "EventRecord",
    "ExperimentRecord",
    "Measurement",
    "MemberRecord",
    "MemoryStore",
    "ReportRecord",
    "SQLStore",
    "Store",
    "Transaction",
    "TrialRecord",
    "display_url",
    "normalize_url",
    "open_store",
]


def normalize_url(url: str) -> str:
    """The canonical form of a storage URL: plain paths become absolute ``sqlite:///`` URLs.

    Relative SQLite paths are made absolute so that worker processes started in another
    directory open the same file.
    """
    if url in ("memory", "memory:", "memory://"):
        return "memory://"
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        path = url[len("sqlite:///") :]
        if path and path != ":memory:" and not path.startswith("file:"):
            return f"sqlite:///{Path(path).expanduser().resolve()}"
    return url


def open_store(url: str, *, create: bool = True) -> Store:
    """Open (and if needed create) the store at ``url``: the one place a URL picks a backend.

    Args:
        url: ``sqlite:///path.db``, a plain file path, ``postgresql+psycopg://...`` or
            ``memory://``.
        create: Create the database (the SQLite file, the tables) when it is missing.
            False for commands that only read: they create nothing, not even an empty
            file at a mistyped path.

    Returns:
        The store.

    Raises:
        ConfigError: The URL's scheme is not one pbtkit knows, or (``create=False``) a
            SQLite file that does not exist.
        StorageError: The database cannot be opened, or (``create=False``) holds no
            pbtkit database.
    """
    url = normalize_url(url)
    if not create and url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if not path.is_file():
            raise ConfigError(
                f"there is no database at {path}: give the --storage of a run "
                "(e.g. pbt-demo/pbt.db after `make demo`)"
            )
    if url == "memory://":
        return MemoryStore(url)
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme in ("postgresql", "postgres"):
        if "+" not in url.split("://", 1)[0]:
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "PostgreSQL storage needs psycopg: pip install 'pbtkit[postgres]'"
            ) from exc
        return SQLStore(url, create=create)
    if scheme == "sqlite":
        if url in ("sqlite://", "sqlite:///:memory:"):
            raise ConfigError(
                "an in-memory SQLite database is private to one connection; "
                "use memory:// for a throwaway store or sqlite:///path.db for a file"
            )
        return SQLStore(url, create=create)
    raise ConfigError(
        f"unknown storage URL {display_url(url)!r}: use sqlite:///path/to/pbt.db (default), "
        "postgresql+psycopg://user:password@host/db, or memory://"
    )
