"""Alembic environment: runs revisions on the connection that ``dpdb.migrate`` passes in."""

from __future__ import annotations

from alembic import context

from dpdb.registry import META_NAMESPACE

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    version_table_schema=META_NAMESPACE,
    transaction_per_migration=True,
)
with context.begin_transaction():
    context.run_migrations()
