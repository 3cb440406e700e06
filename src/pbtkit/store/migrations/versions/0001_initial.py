"""The first schema: experiments, members, trials, reports, events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pbt_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    op.create_table(
        "pbt_experiments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(256), nullable=False, unique=True),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "pbt_members",
        sa.Column(
            "experiment_id", sa.Integer, sa.ForeignKey("pbt_experiments.id"), primary_key=True
        ),
        sa.Column("member", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("latest_trial_id", sa.Integer, nullable=True),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("hparams", sa.JSON, nullable=False),
        sa.Column("checkpoint", sa.String(1024), nullable=True),
    )
    op.create_table(
        "pbt_trials",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("experiment_id", sa.Integer, sa.ForeignKey("pbt_experiments.id"), nullable=False),
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
    )
    op.create_index(
        "ix_pbt_trials_queue",
        "pbt_trials",
        ["experiment_id", "status", "generation", "priority", "id"],
    )
    op.create_index("ix_pbt_trials_parent", "pbt_trials", ["parent_id", "status"])
    op.create_table(
        "pbt_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("experiment_id", sa.Integer, nullable=False),
        sa.Column("trial_id", sa.Integer, nullable=False),
        sa.Column("member", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
    )
    op.create_index("ix_pbt_reports_trial", "pbt_reports", ["trial_id"])
    op.create_index("ix_pbt_reports_member", "pbt_reports", ["experiment_id", "member"])
    op.create_table(
        "pbt_events",
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
    )
    op.create_index("ix_pbt_events_kind", "pbt_events", ["experiment_id", "kind"])
    op.execute("INSERT INTO pbt_meta (key, value) VALUES ('schema_version', '1')")


def downgrade() -> None:
    for table in ("pbt_events", "pbt_reports", "pbt_trials", "pbt_members", "pbt_experiments"):
        op.drop_table(table)
    op.drop_table("pbt_meta")
