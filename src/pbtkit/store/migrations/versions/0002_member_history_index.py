"""An index for a member's own finished trials, read at every asynchronous decision.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_pbt_trials_member", "pbt_trials", ["experiment_id", "member", "status", "end_step"]
    )
    op.execute("UPDATE pbt_meta SET value = '2' WHERE key = 'schema_version'")


def downgrade() -> None:
    op.drop_index("ix_pbt_trials_member", table_name="pbt_trials")
    op.execute("UPDATE pbt_meta SET value = '1' WHERE key = 'schema_version'")
