"""Trials carry when a retry may start and whether their checkpoint failed verification.

``not_before``: a trial given back after a failure waits this long before it is leased
again (retries back off instead of spending every attempt at once). ``checkpoint_bad``:
the trial's checkpoint failed its manifest check, so it is never a parent again.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pbt_trials") as batch:
        batch.add_column(sa.Column("not_before", sa.Float, nullable=True))
        batch.add_column(
            sa.Column("checkpoint_bad", sa.Boolean, nullable=False, server_default=sa.false())
        )
    op.execute("UPDATE pbt_meta SET value = '4' WHERE key = 'schema_version'")


def downgrade() -> None:
    with op.batch_alter_table("pbt_trials") as batch:
        batch.drop_column("checkpoint_bad")
        batch.drop_column("not_before")
    op.execute("UPDATE pbt_meta SET value = '3' WHERE key = 'schema_version'")
