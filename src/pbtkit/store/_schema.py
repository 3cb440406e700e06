"""The tables of the relational store, their version and migrations, and how an engine is
opened on them (SQLite in WAL mode, writers queueing for ``BEGIN IMMEDIATE``).

The store's statements and transactions live in :mod:`pbtkit.store._sql`; the Alembic
migrations (``migrations/``) build on :data:`metadata`.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from pbtkit._exceptions import StorageError

__all__ = ["SCHEMA_VERSION", "metadata", "schema_version", "upgrade"]

#: Bumped with every migration (migrations/versions); an older database is refused on
#: open until ``pbtkit db upgrade`` brings it up to date.
SCHEMA_VERSION = 4

metadata = sa.MetaData()

meta_table = sa.Table(
    "pbt_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

experiments = sa.Table(
    "pbt_experiments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(256), nullable=False, unique=True),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False, server_default="0"),
)

members = sa.Table(
    "pbt_members",
    metadata,
    sa.Column("experiment_id", sa.ForeignKey("pbt_experiments.id"), primary_key=True),
    sa.Column("member", sa.Integer, primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("latest_trial_id", sa.Integer, nullable=True),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("hparams", sa.JSON, nullable=False),
    sa.Column("checkpoint", sa.String(1024), nullable=True),
    sa.Column("seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("metrics", sa.JSON, nullable=True),
    sa.Index("ix_pbt_members_seq", "experiment_id", "seq"),
)

trials = sa.Table(
    "pbt_trials",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment_id", sa.ForeignKey("pbt_experiments.id"), nullable=False),
    sa.Column("member", sa.Integer, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("hparams", sa.JSON, nullable=False),
    sa.Column("parent_id", sa.Integer, nullable=True),
    sa.Column("start_step", sa.Integer, nullable=False),
    sa.Column("end_step", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("lease_owner", sa.String(256), nullable=True),
    sa.Column("lease_expires", sa.Float, nullable=True),
    sa.Column("checkpoint", sa.String(1024), nullable=True),
    sa.Column("checkpoint_released", sa.Boolean, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float, nullable=True),
    sa.Column("finished_at", sa.Float, nullable=True),
    sa.Column("priority", sa.Float, nullable=False),
    sa.Column("inherit", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("not_before", sa.Float, nullable=True),
    sa.Column("checkpoint_bad", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_pbt_trials_queue", "experiment_id", "status", "generation", "priority", "id"),
    sa.Index("ix_pbt_trials_parent", "parent_id", "status"),
    sa.Index("ix_pbt_trials_member", "experiment_id", "member", "status", "end_step"),
)

reports = sa.Table(
    "pbt_reports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment_id", sa.Integer, nullable=False),
    sa.Column("trial_id", sa.Integer, nullable=False),
    sa.Column("member", sa.Integer, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Index("ix_pbt_reports_trial", "trial_id"),
    sa.Index("ix_pbt_reports_member", "experiment_id", "member"),
)

events = sa.Table(
    "pbt_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment_id", sa.Integer, nullable=False),
    sa.Column("member", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("trial_id", sa.Integer, nullable=True),
    sa.Column("donor_member", sa.Integer, nullable=True),
    sa.Column("donor_trial", sa.Integer, nullable=True),
    sa.Column("old_hparams", sa.JSON, nullable=True),
    sa.Column("new_hparams", sa.JSON, nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("ix_pbt_events_kind", "experiment_id", "kind"),
)


_READ_BUSY_MS = 60_000
_WRITE_WAIT_S = 120.0


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # The stdlib driver's own transaction handling would defer BEGIN; we issue it.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={_READ_BUSY_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("pbtkit_begin") == "DEFERRED":
            conn.exec_driver_sql("BEGIN DEFERRED")
            return
        _begin_immediate(conn.connection.dbapi_connection)


def _begin_immediate(dbapi_conn: Any) -> None:
    """Take SQLite's write lock, retrying quickly while another writer holds it.

    SQLite's own busy handler sleeps 1, 2, 5, 10, ... ms between tries, far longer than
    our transactions hold the lock (about a millisecond), so waiting writers would idle.
    Retrying BEGIN is safe: nothing of the transaction has run yet.
    """
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA busy_timeout=0")
    try:
        delay = 0.0001
        deadline = time.monotonic() + _WRITE_WAIT_S
        while True:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise StorageError(
                        f"the SQLite database stayed locked for {_WRITE_WAIT_S:.0f} s; another "
                        "process holds it (an open transaction in a shell?)"
                    ) from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 1.5, 0.005)
    finally:
        cursor.execute(f"PRAGMA busy_timeout={_READ_BUSY_MS}")
        cursor.close()


def _connect_args(url: str) -> dict[str, Any]:
    return {"timeout": 60, "check_same_thread": False} if url.startswith("sqlite") else {}


def _version(conn: Connection) -> int:
    value = conn.execute(
        sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version")
    ).scalar_one_or_none()
    return int(value or 0)


def _migrate(conn: Connection, revision: str) -> None:
    """Run the Alembic migrations up (or down) to ``revision`` on this connection."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["connection"] = conn
    if revision == "head" or _version(conn) < int(revision):
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)


@contextmanager
def _raw(url: str) -> Iterator[Connection]:
    """A transaction on the database at ``url`` that does not check its schema version
    (and creates nothing: a SQLite file that is not there is an error, not a new file)."""
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        raise StorageError(f"there is no database at {url[len('sqlite:///') :]}")
    engine = sa.create_engine(url, connect_args=_connect_args(url))
    if url.startswith("sqlite"):
        _configure_sqlite(engine)
    try:
        with engine.begin() as conn:
            if not sa.inspect(conn).has_table(meta_table.name):
                shown = engine.url.render_as_string(hide_password=True)
                raise StorageError(f"{shown!r} holds no pbtkit database")
            yield conn
    except OperationalError as exc:
        raise StorageError(f"cannot open storage: {exc.orig}") from exc
    finally:
        engine.dispose()


def schema_version(url: str) -> int:
    """The schema version of the pbtkit database at ``url``."""
    with _raw(url) as conn:
        return _version(conn)


def upgrade(url: str, revision: str = "head") -> tuple[int, int]:
    """Bring the database at ``url`` to ``revision`` (the newest by default), keeping its data.

    Returns:
        The schema version before and after.

    Raises:
        StorageError: The database cannot be opened, or holds no pbtkit schema.
    """
    with _raw(url) as conn:
        before = _version(conn)
        _migrate(conn, revision)
        return before, _version(conn)
