"""Schema migrations (Alembic). ``pbtkit db upgrade --storage URL`` applies them."""
