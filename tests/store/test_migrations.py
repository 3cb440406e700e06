"""Schema migrations: they build exactly the tables the code uses, upgrades keep data, and
a new database (created and stamped without them) is the same as a migrated one."""

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
from pbtkit.store._ddl import SCHEMA_REVISION, SQLITE_CREATE
from pbtkit.store._schema import SCHEMA_VERSION, _migrate, metadata, schema_version, upgrade
from tests.test_controller import _spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pbt.db'}"
    return str(request.getfixturevalue("postgres_url"))


def _migrated(url: str) -> None:
    """Build the schema in an empty database by running every migration, as
    ``pbtkit db upgrade`` brings an old one up to date."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        _migrate(conn, "head")
    engine.dispose()


def _differences(url: str) -> list[object]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        differences = list(compare_metadata(MigrationContext.configure(conn), metadata))
    engine.dispose()
    return differences


def _schema(url: str) -> dict[str, object]:
    """Everything a database's schema says, as SQLAlchemy reads it back, and its stamps."""
    engine = sa.create_engine(url)
    out: dict[str, object] = {}
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        for table in sorted(inspector.get_table_names()):
            out[table] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                    for c in inspector.get_columns(table)
                ],
                "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
                "foreign_keys": sorted(
                    (tuple(f["constrained_columns"]), f["referred_table"])
                    for f in inspector.get_foreign_keys(table)
                ),
                "indexes": sorted(
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in inspector.get_indexes(table)
                ),
                "unique": sorted(
                    tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)
                ),
            }
        out["stamps"] = (
            conn.execute(sa.text("SELECT version_num FROM alembic_version")).all(),
            conn.execute(sa.text("SELECT key, value FROM pbt_meta")).all(),
        )
    engine.dispose()
    return out


def test_migrations_build_exactly_the_tables_the_code_queries(url: str) -> None:
    _migrated(url)
    assert _differences(url) == []
    assert schema_version(url) == SCHEMA_VERSION


def test_a_new_database_is_stamped_and_equals_a_migrated_one(
    url: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    open_store(url).close()  # created from the tables' definition and stamped
    if url.startswith("sqlite"):
        other = f"sqlite:///{tmp_path / 'migrated.db'}"
    else:
        other = str(request.getfixturevalue("postgres_url"))
    _migrated(other)
    assert _differences(url) == []
    new, migrated = _schema(url), _schema(other)
    assert new == migrated
    assert new["stamps"] == (
        [(SCHEMA_REVISION,)],
        [("schema_version", str(SCHEMA_VERSION))],
    )


def test_the_sqlite_statements_are_what_the_tables_define() -> None:
    from sqlalchemy.dialects import sqlite
    from sqlalchemy.schema import CreateIndex, CreateTable

    dialect = sqlite.dialect()
    expected = []
    for table in metadata.sorted_tables:
        expected.append(str(CreateTable(table).compile(dialect=dialect)))
        expected += [
            str(CreateIndex(index).compile(dialect=dialect))
            for index in sorted(table.indexes, key=lambda i: str(i.name))
        ]
    assert [" ".join(s.split()) for s in SQLITE_CREATE] == [" ".join(s.split()) for s in expected]


def test_the_stamp_is_the_newest_migration() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(ROOT / "src" / "pbtkit" / "store" / "migrations"))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_REVISION


def test_a_run_on_sqlite_imports_neither_sqlalchemy_nor_alembic(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import pbtkit as pk\n"
        "from pbtkit.controller import Controller\n"
        "from pbtkit.spec import ExperimentSpec\n"
        "from pbtkit.store import Measurement, open_store\n"
        "spec = ExperimentSpec(space=pk.SearchSpace({'x': pk.Uniform(0, 1)}), policy=pk.PBT("
        "objective=pk.Objective('score', 'max'), ready_every=1, total_steps=2), population=2, "
        f"checkpoint_root={str(tmp_path)!r})\n"
        f"store = open_store({str(tmp_path / 'pbt.db')!r})\n"
        "controller = Controller(store)\n"
        "controller.create('e', spec)\n"
        "lease = controller.lease('e', 'w')\n"
        "controller.finish(lease.trial.id, 'w', [Measurement(0, {'score': 1.0})], None)\n"
        "print(sorted(m for m in ('sqlalchemy', 'alembic') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        check=True,
    )
    assert out.stdout.strip() == "[]"


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
