"""The shipped store contract, run against every backend pbtkit has."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pbtkit._exceptions import ConfigError, SchemaMismatch, StorageError
from pbtkit.store import MemoryStore, SQLStore, Store, open_store
from pbtkit.store.testing import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        with MemoryStore() as s:
            yield s


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        with open_store(f"sqlite:///{tmp_path / 'pbt.db'}") as s:
            yield s


def test_sqlite_file_survives_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pbt.db'}"
    with open_store(url) as s, s.transaction() as tx:
        tx.create_experiment("kept", {"k": 1}, 0.0)
    with open_store(url) as s, s.read() as tx:
        found = tx.get_experiment("kept")
    assert found is not None
    assert found.config == {"k": 1}


def test_plain_path_means_sqlite(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "x.db")) as s:
        assert isinstance(s, SQLStore)
        assert s.url == f"sqlite:///{tmp_path / 'x.db'}"


def test_unopenable_storage_says_what_to_check(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="directory exists"):
        open_store(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")


def test_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="cannot open storage"):
        open_store(str(junk))


def test_unknown_scheme() -> None:
    with pytest.raises(ConfigError, match="unknown storage URL"):
        open_store("redis://localhost/0")


def test_foreign_tables_are_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "foreign.db"
    con = sqlite3.connect(path)
    con.execute("create table users (id integer)")
    con.commit()
    con.close()
    with pytest.raises(SchemaMismatch, match="did not write"):
        open_store(str(path))


def test_other_schema_version_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    open_store(str(path)).close()
    con = sqlite3.connect(path)
    con.execute("update pbt_meta set value = '0' where key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(SchemaMismatch, match="schema version 0"):
        open_store(str(path))


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store(self, postgres_url: str) -> Iterator[Store]:
        with open_store(postgres_url) as s:
            yield s


def test_postgres_url_without_driver_name_works(postgres_url: str) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with open_store(plain) as s, s.transaction() as tx:
        tx.create_experiment("e", {}, 0.0)
        assert tx.now() > 1.7e9  # the database server's clock


def test_postgres_password_is_hidden_in_messages(postgres_url: str) -> None:
    with_password = postgres_url.replace("pbtkit@", "pbtkit:hunter2@")
    with open_store(with_password) as s:
        assert "hunter2" not in s.display_url
        assert "***" in s.display_url
