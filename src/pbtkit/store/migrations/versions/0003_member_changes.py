"""Member rows carry a change sequence and their latest metrics; trials what they inherit.

Each write of a member row takes the next value of its experiment's ``seq``, so a
controller can keep the population cached and read only the rows changed since it last
looked; ``metrics`` lets objectives over several metrics rank the population.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pbt_experiments") as batch:
        batch.add_column(sa.Column("seq", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("pbt_members") as batch:
        batch.add_column(sa.Column("seq", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("metrics", sa.JSON, nullable=True))
    op.create_index("ix_pbt_members_seq", "pbt_members", ["experiment_id", "seq"])
    with op.batch_alter_table("pbt_trials") as batch:
        batch.add_column(sa.Column("inherit", sa.JSON, nullable=True))
    op.execute("UPDATE pbt_meta SET value = '3' WHERE key = 'schema_version'")


def downgrade() -> None:
    with op.batch_alter_table("pbt_trials") as batch:
        batch.drop_column("inherit")
    op.drop_index("ix_pbt_members_seq", table_name="pbt_members")
    with op.batch_alter_table("pbt_members") as batch:
        batch.drop_column("metrics")
        batch.drop_column("seq")
    with op.batch_alter_table("pbt_experiments") as batch:
        batch.drop_column("seq")
    op.execute("UPDATE pbt_meta SET value = '2' WHERE key = 'schema_version'")
