"""Alembic environment for pbtkit's schema: always run on a connection pbtkit hands in."""

from __future__ import annotations

from alembic import context

from pbtkit.store._schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
