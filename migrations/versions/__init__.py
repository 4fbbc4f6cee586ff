"""Alembic revisions, one per schema version."""
