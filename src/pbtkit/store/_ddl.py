"""The schema's version, and the SQLite statements that create it, as plain text.

A new SQLite database is created from these statements and stamped at the current
version, so opening one never imports SQLAlchemy or Alembic (about half a second of a
run's start). They are what ``metadata.create_all`` emits for SQLite from
:mod:`pbtkit.store._schema`, which stays the one definition of the tables:
``tests/store/test_migrations.py`` checks that the two agree, and that a database created
here equals one built by running every migration.
"""

from __future__ import annotations

__all__ = ["SCHEMA_REVISION", "SCHEMA_VERSION", "SQLITE_CREATE", "SQLITE_STAMP"]

#: Bumped with every migration (migrations/versions); an older database is refused on
#: open until ``pbtkit db upgrade`` brings it up to date.
SCHEMA_VERSION = 4

#: The Alembic revision of :data:`SCHEMA_VERSION` (the newest file in migrations/versions),
#: stamped into a new database so that ``pbtkit db upgrade`` knows where it stands.
SCHEMA_REVISION = "0004"

SQLITE_CREATE: tuple[str, ...] = (
    """CREATE TABLE pbt_events (
    id INTEGER NOT NULL,
    experiment_id INTEGER NOT NULL,
    member INTEGER NOT NULL,
    kind VARCHAR(16) NOT NULL,
    trial_id INTEGER,
    donor_member INTEGER,
    donor_trial INTEGER,
    old_hparams JSON,
    new_hparams JSON,
    detail TEXT,
    at FLOAT NOT NULL,
    PRIMARY KEY (id)
)""",
    "CREATE INDEX ix_pbt_events_kind ON pbt_events (experiment_id, kind)",
    """CREATE TABLE pbt_experiments (
    id INTEGER NOT NULL,
    name VARCHAR(256) NOT NULL,
    config JSON NOT NULL,
    status VARCHAR(16) NOT NULL,
    created_at FLOAT NOT NULL,
    seq INTEGER DEFAULT '0' NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (name)
)""",
    """CREATE TABLE pbt_meta (
    "key" VARCHAR(64) NOT NULL,
    value VARCHAR(256) NOT NULL,
    PRIMARY KEY ("key")
)""",
    """CREATE TABLE pbt_reports (
    id INTEGER NOT NULL,
    experiment_id INTEGER NOT NULL,
    trial_id INTEGER NOT NULL,
    member INTEGER NOT NULL,
    step INTEGER NOT NULL,
    metrics JSON NOT NULL,
    PRIMARY KEY (id)
)""",
    "CREATE INDEX ix_pbt_reports_member ON pbt_reports (experiment_id, member)",
    "CREATE INDEX ix_pbt_reports_trial ON pbt_reports (trial_id)",
    """CREATE TABLE pbt_members (
    experiment_id INTEGER NOT NULL,
    member INTEGER NOT NULL,
    status VARCHAR(16) NOT NULL,
    latest_trial_id INTEGER,
    step INTEGER NOT NULL,
    score FLOAT,
    hparams JSON NOT NULL,
    checkpoint VARCHAR(1024),
    seq INTEGER DEFAULT '0' NOT NULL,
    metrics JSON,
    PRIMARY KEY (experiment_id, member),
    FOREIGN KEY(experiment_id) REFERENCES pbt_experiments (id)
)""",
    "CREATE INDEX ix_pbt_members_seq ON pbt_members (experiment_id, seq)",
    """CREATE TABLE pbt_trials (
    id INTEGER NOT NULL,
    experiment_id INTEGER NOT NULL,
    member INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    hparams JSON NOT NULL,
    parent_id INTEGER,
    start_step INTEGER NOT NULL,
    end_step INTEGER NOT NULL,
    status VARCHAR(16) NOT NULL,
    attempt INTEGER NOT NULL,
    lease_owner VARCHAR(256),
    lease_expires FLOAT,
    checkpoint VARCHAR(1024),
    checkpoint_released BOOLEAN NOT NULL,
    metrics JSON NOT NULL,
    score FLOAT,
    error TEXT,
    created_at FLOAT NOT NULL,
    started_at FLOAT,
    finished_at FLOAT,
    priority FLOAT NOT NULL,
    inherit JSON,
    not_before FLOAT,
    checkpoint_bad BOOLEAN DEFAULT 0 NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(experiment_id) REFERENCES pbt_experiments (id)
)""",
    "CREATE INDEX ix_pbt_trials_member ON pbt_trials (experiment_id, member, status, end_step)",
    "CREATE INDEX ix_pbt_trials_parent ON pbt_trials (parent_id, status)",
    "CREATE INDEX ix_pbt_trials_queue ON pbt_trials "
    "(experiment_id, status, generation, priority, id)",
)

#: Marks a new database as being at :data:`SCHEMA_VERSION`, for pbtkit and for Alembic
#: (whose table is created as Alembic creates it).
SQLITE_STAMP: tuple[str, ...] = (
    """CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
)""",
    f"INSERT INTO alembic_version (version_num) VALUES ('{SCHEMA_REVISION}')",
    f"INSERT INTO pbt_meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}')",
)
