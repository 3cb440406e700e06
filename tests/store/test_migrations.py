"""Schema migrations: they build exactly the tables the code uses, and upgrades keep data."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from pbtkit import SchemaMismatch
from pbtkit.controller import Controller
from pbtkit.store import open_store
from pbtkit.store._schema import SCHEMA_VERSION, metadata, schema_version, upgrade
from tests.test_controller import _spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pbt.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_migrations_build_exactly_the_tables_the_code_queries(url: str) -> None:
    open_store(url).close()  # a fresh database is made by running every migration
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert differences == []
    assert schema_version(url) == SCHEMA_VERSION


def test_an_old_database_is_refused_until_upgraded_and_keeps_its_data(url: str) -> None:
    with open_store(url) as store:
        controller = Controller(store)
        controller.create("kept", _spec(population=3))
        lease = controller.lease("kept", "w")
    assert upgrade(url, "0001") == (SCHEMA_VERSION, 1)  # as an older pbtkit left it
    with pytest.raises(SchemaMismatch, match=r"run `pbtkit db upgrade --storage URL`"):
        open_store(url)
    cli = subprocess.run(
        [sys.executable, "-m", "pbtkit", "db", "upgrade", "--storage", url],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert f"from version 1 to {SCHEMA_VERSION}" in cli.stdout
    with open_store(url) as store:
        controller = Controller(store)
        assert controller.summary("kept").population == 3
        assert controller.trial(lease.trial.id).status == "running"  # type: ignore[union-attr]
    again = subprocess.run(
        [sys.executable, "-m", "pbtkit", "db", "upgrade", "--storage", url],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert "already up to date" in again.stdout


def test_a_newer_database_asks_for_a_newer_pbtkit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    open_store(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE pbt_meta SET value = '99' WHERE key = 'schema_version'"))
    engine.dispose()
    with pytest.raises(SchemaMismatch, match="upgrade pbtkit"):
        open_store(url)


def test_upgrading_something_that_is_not_pbtkit_says_so(tmp_path: Path) -> None:
    def upgrade_cli(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pbtkit", "db", "upgrade", "--storage", str(path)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=False,
        )

    out = upgrade_cli(tmp_path / "x.db")
    assert out.returncode == 2
    assert "there is no database at" in out.stderr
    assert not (tmp_path / "x.db").exists()
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    out = upgrade_cli(other)
    assert out.returncode == 2
    assert "holds no pbtkit database" in out.stderr
