"""What shards registered, and releases sharded, by earlier versions lack; run by ``dpdb db migrate``/``up``.

- a PUBLIC user mapping on every shard's foreign server: user SQL runs under
  the reader logins (dpdb/readers.py), and postgres_fdw needs a mapping for
  them (shards added before had only the owner's);
- the per-shard foreign tables of every sharded release, and their views in
  ``current``/``previous``: aggregates run on them, one per shard
  (dpdb/shards/aggregate.py).

Idempotent: nothing is done where nothing is missing.
"""

from __future__ import annotations

import logging

import psycopg

from dpdb.lifecycle.activate import add_missing_views
from dpdb.registry.catalogs import all_catalogs
from dpdb.registry.states import CatalogKind

from .placement import create_rollups
from .registry import ensure_public_mappings, list_shards

__all__ = ["shard_upkeep"]

log = logging.getLogger(__name__)


def shard_upkeep(conn: psycopg.Connection) -> list[str]:
    """Add what is missing (committed by the caller); one line per thing done."""
    if not list_shards(conn):
        return []
    done = [f"shard {s}: user mapping for PUBLIC added" for s in ensure_public_mappings(conn)]
    for catalog in all_catalogs(conn):
        if catalog.kind is CatalogKind.RELEASE:
            made = create_rollups(conn, catalog.name)
            if made:
                done.append(f"release {catalog.name}: per-shard foreign tables {', '.join(made)}")
    activations = conn.execute("SELECT to_regclass('dpdb_meta.release_activation')").fetchone()
    views = add_missing_views(conn) if activations and activations[0] else 0
    if views:
        done.append(f"current/previous: {views} views on per-shard foreign tables")
    for line in done:
        log.info("%s", line)
    return done
