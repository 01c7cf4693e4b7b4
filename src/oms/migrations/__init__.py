"""Alembic migrations of the OMS store (``oms migrate`` / ``Store.migrate()``)."""
