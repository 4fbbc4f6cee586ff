"""Key maps: primary keys unique across a whole spatially partitioned table.

The primary key of a partitioned catalog table is (key, ``_healpix_29``):
PostgreSQL cannot enforce a unique index that leaves out the partition key, so
the same ``diaSourceId`` could get in at another position. Each partitioned
table therefore gets a map ``<schema>._keys_<table>`` (the key, unique, and the
row's pixel), like its pixel column an implementation table built here in code
from the felis table (docs/architecture.md), and kept by the statement-level
triggers of ``sql/keymap.sql`` on every insert, delete, update and truncate,
whatever path writes (``dpdb load``, prompt ingest, relink, release restore).
A release loaded with deferred indexes checks its keys in memory instead and leaves
its maps empty, deferred: the first later write fills a map from its table
(dpdb/lifecycle/bulk.py, etl/heldkeys.py).

Chosen by measurement (issue 19, benchmarks/README.md): checking a file's
300,000 keys against 600,000 rows in 48 partitions with an anti-join took
29.5 s (an index probe per key and partition) and grows with the table;
inserting them into the map's one unique index took 1.0 s. Kept by the
triggers, the map costs about 18 % of a binary COPY of 100,000 DiaSource rows
(10.5 s against 8.9 s, medians of three interleaved runs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import BigInteger, Column, MetaData, PrimaryKeyConstraint, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

from .model.ddl import table_specs
from .model.layout import PIXEL_COLUMN

__all__ = [
    "MAP_PREFIX",
    "map_name",
    "keymap_tables",
    "create_keymaps",
    "ensure_keymaps",
    "key_columns",
    "create_triggers",
    "drop_triggers",
    "fill_statement",
]

log = logging.getLogger(__name__)

MAP_PREFIX = "_keys_"


def map_name(table: str) -> str:
    """Name of the key map of catalog table ``table`` (database name)."""
    return f"{MAP_PREFIX}{table.lower()}"


def keymap_tables(catalog: str, version: int, kind: str) -> list[tuple[Table, Table]]:
    """(catalog table, its key map) for each partitioned table of a catalog, as SQLAlchemy tables."""
    metadata = MetaData(schema=catalog)
    out = []
    for spec in table_specs(catalog, version, kind):
        if not spec.partitioned:
            continue
        keys = [c for c in spec.table.primary_key.columns if c.name != PIXEL_COLUMN]
        columns = [Column(c.name, c.type, nullable=False) for c in keys]
        columns.append(Column(PIXEL_COLUMN, BigInteger, nullable=False))
        name = map_name(spec.table.name)
        table = Table(
            name,
            metadata,
            *columns,
            PrimaryKeyConstraint(*(c.name for c in keys), name=f"{name}_pkey"),
            comment=f"Key map of {spec.name}: each key once, whatever its partition (dpdb/keymap.py)",
        )
        out.append((spec.table, table))
    return out


def key_columns(table: Table) -> list[str]:
    """Key columns of a key map (its primary key)."""
    return [c.name for c in table.primary_key.columns]


def install_functions(conn: psycopg.Connection) -> None:
    """(Re)install the trigger functions of sql/keymap.sql."""
    text = (Path(str(resources.files("dpdb.sql"))) / "keymap.sql").read_text()
    conn.execute(text.encode())


_install_functions = install_functions


def create_keymaps(conn: psycopg.Connection, catalog: str, version: int, kind: str) -> None:
    """Create the key maps and their triggers for a catalog, filled from the rows it holds."""
    _install_functions(conn)
    for table, keymap in keymap_tables(catalog, version, kind):
        _create(conn, catalog, table, keymap)


def _create(conn: psycopg.Connection, catalog: str, table: Table, keymap: Table) -> None:
    conn.execute(str(CreateTable(keymap).compile(dialect=postgresql.dialect())).encode())
    keys = key_columns(keymap)
    cols = sql.SQL(", ").join(map(sql.Identifier, [*keys, PIXEL_COLUMN]))
    target = sql.Identifier(catalog, table.name)
    conn.execute(
        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
            sql.Identifier(catalog, keymap.name), cols, cols, target
        )
    )
    create_triggers(conn, catalog, table.name, keys)


def fill_statement(catalog: str, table: str, keys: list[str]) -> str:
    """The statement that fills the key map of ``catalog.table`` if it is deferred (empty while the
    table holds rows: a release whose keys were checked when it loaded, dpdb/lifecycle/bulk.py), for a
    writer that writes the map itself instead of through the triggers (etl/partitions.py)."""
    args = ", ".join("'" + v.replace("'", "''") + "'" for v in (catalog, table, ",".join(keys)))
    return f"SELECT dpdb_meta.keymap_fill({args})"


TRIGGER_EVENTS = ("insert", "delete", "update", "truncate")


def create_triggers(conn: psycopg.Connection, catalog: str, table: str, keys: list[str]) -> None:
    """(Re)create the statement triggers that keep the key map of ``catalog.table`` (``keys``: its key
    columns); a release loaded with deferred indexes drops them while it streams (dpdb/lifecycle/bulk.py)."""
    arg = sql.Literal(",".join(keys))
    target = sql.Identifier(catalog, table)
    for event, referencing, function in (
        ("INSERT", "REFERENCING NEW TABLE AS new_rows", "keymap_insert"),
        ("DELETE", "REFERENCING OLD TABLE AS old_rows", "keymap_delete"),
        ("UPDATE", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows", "keymap_update"),
        ("TRUNCATE", "", "keymap_truncate"),
    ):
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE TRIGGER {name} AFTER {event} ON {target} {referencing} FOR EACH STATEMENT "
                "EXECUTE FUNCTION dpdb_meta.{function}({arg})"
            ).format(
                name=sql.Identifier(f"dpdb_keys_{event.lower()}"),
                event=sql.SQL(event),
                target=target,
                referencing=sql.SQL(referencing),
                function=sql.Identifier(function),
                arg=arg,
            )
        )


def drop_triggers(conn: psycopg.Connection, catalog: str, table: str) -> None:
    """Drop the key-map triggers of ``catalog.table``. Disabling is not enough: PostgreSQL still
    collects every inserted row into the transition table of a disabled trigger."""
    for event in TRIGGER_EVENTS:
        conn.execute(
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                sql.Identifier(f"dpdb_keys_{event}"), sql.Identifier(catalog, table)
            )
        )


def _has_foreign_partitions(conn: psycopg.Connection, catalog: str, table: str) -> bool:
    """Some partition of ``catalog.table`` is a foreign table (a sharded release, dpdb/shards)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%s) AND c.relkind = 'f')",
        (f'"{catalog}"."{table}"',),
    ).fetchone()
    return bool(row and row[0])


def ensure_keymaps(conn: psycopg.Connection, catalogs: Iterable[tuple[str, str, int]]) -> None:
    """Give the partitioned tables of ``catalogs`` (name, kind, schema version) their key maps
    (catalogs made by older code).

    A table that already holds a repeated key cannot get its map: it is left as it
    is, with a warning (``dpdb release validate`` reports the repeats).
    """
    catalogs = list(catalogs)
    # Every process's first connection comes here: find in one query whether any partitioned table
    # lacks its map before building any catalog's table definitions.
    lacking = {
        str(r[0])
        for r in conn.execute(
            "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'p' AND n.nspname = ANY(%s) "
            "AND to_regclass(format('%%I.%%I', n.nspname, %s || c.relname)) IS NULL",
            ([c[0] for c in catalogs], MAP_PREFIX),
        ).fetchall()
    }
    installed = False
    for catalog, kind, version in catalogs:
        if catalog not in lacking:
            continue
        for table, keymap in keymap_tables(catalog, version, kind):
            present = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
                (f'"{catalog}"."{keymap.name}"', f'"{catalog}"."{table.name}"'),
            ).fetchone()
            if present is None or present[0] or not present[1]:
                continue
            if _has_foreign_partitions(conn, catalog, table.name):
                continue  # a sharded release: each shard enforces the keys of its partitions
            if not installed:
                _install_functions(conn)
                installed = True
            try:
                with conn.transaction():
                    _create(conn, catalog, table, keymap)
            except psycopg.errors.UniqueViolation as e:
                detail = e.diag.message_detail or str(e)
                log.warning("%s.%s holds a repeated key (%s): no key map, keys not guarded", catalog,
                            table.name, detail)  # fmt: skip
