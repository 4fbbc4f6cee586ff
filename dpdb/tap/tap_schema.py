"""TAP_SCHEMA: the TAP 1.1 description of every catalog a TAP client may query, generated with felis.

The five standard tables (``schemas``, ``tables``, ``columns``, ``keys``, ``key_columns``) are
created from felis' own TAP_SCHEMA definition (schema ``tap_schema``, lower case so ADQL's
``TAP_SCHEMA.tables`` reaches it unquoted) and filled by felis' ``DataLoader`` from our felis
schema, once per catalog schema that exists: ``prompt``, ``current``, ``previous``, ``samples``
and every loaded release (docs/architecture.md, decisions 3 and 12). Columns the database holds
beyond felis (the implementation columns ``_healpix_29``...) are described from the catalog.

:func:`refresh_tap_schema` runs in the caller's transaction: release activation and unloading
call it in theirs, so TAP_SCHEMA never describes a schema that is gone.
"""

from __future__ import annotations

import functools
import io
import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from felis.datamodel import Schema as FelisSchema
from felis.tap_schema import DataLoader, TableManager
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

from ..model.felis import latest_version, load_felis

__all__ = ["TAP_SCHEMA", "create_tap_schema", "refresh_tap_schema", "published_schemas"]

log = logging.getLogger(__name__)

TAP_SCHEMA = "tap_schema"
"""The database schema of the TAP_SCHEMA tables."""

_DIALECT = postgresql.dialect()

_SCHEMA_TEXT = {
    "prompt": "The living prompt catalog (DPDD §3): DIA tables updated visit by visit; "
    "readable as of any past instant (ASOF).",
    "current": "The active data release (views; with ASOF, the release that was active then).",
    "previous": "The penultimate data release (views; with ASOF, the one that was previous then).",
    "samples": "A fixed sky region of every activated data release, kept after archiving.",
}

_PG_VOTABLE = {
    "bigint": ("long", None), "integer": ("int", None), "smallint": ("short", None),
    "real": ("float", None), "double precision": ("double", None), "boolean": ("boolean", None),
    "text": ("char", "*"), "character varying": ("char", "*"), "numeric": ("double", None),
    "timestamp with time zone": ("char", "*"), "timestamp without time zone": ("char", "*"),
}  # fmt: skip


@functools.cache
def _manager() -> TableManager:
    return TableManager(engine_url="postgresql://", schema_name=TAP_SCHEMA)


def create_tap_schema(conn: psycopg.Connection) -> None:
    """Create schema ``tap_schema`` and its five tables (DDL generated from felis); readers may read it."""
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {TAP_SCHEMA}")
    for table in _manager().metadata.sorted_tables:
        ddl = str(CreateTable(table, if_not_exists=True).compile(dialect=_DIALECT)).strip()
        conn.execute(ddl.encode())
    grant_reader(conn)


def grant_reader(conn: psycopg.Connection) -> None:
    conn.execute(
        "DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'dpdb_reader') THEN "
        f"GRANT USAGE ON SCHEMA {TAP_SCHEMA} TO dpdb_reader; "
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {TAP_SCHEMA} TO dpdb_reader; END IF; END $$"
    )


@dataclass(frozen=True)
class _Published:
    schema: str
    index: int
    description: str


def published_schemas(conn: psycopg.Connection) -> list[_Published]:
    """The catalog schemas TAP_SCHEMA describes, in listing order: those that exist and hold tables."""
    from ..registry.catalogs import present_catalog_names

    candidates = ["prompt", "current", "previous", "samples", *present_catalog_names(conn)]
    rows = conn.execute(
        "SELECT n.nspname FROM pg_namespace n WHERE n.nspname = ANY(%s) AND EXISTS (SELECT 1 FROM pg_class c "
        "WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v'))",
        (candidates,),
    ).fetchall()
    present = {r[0] for r in rows}
    order = ["current", "previous", "prompt", "samples"]
    out = [_Published(s, i, _SCHEMA_TEXT[s]) for i, s in enumerate(order) if s in present]
    releases = sorted(present - set(order))
    out += [
        _Published(r, 10 + i, f"Data release {r} (read it through current/previous for stable names).")
        for i, r in enumerate(releases)
    ]
    return out


def _db_columns(conn: psycopg.Connection, schema: str) -> dict[str, list[tuple[str, str, bool]]]:
    """table (lower) -> [(column, PostgreSQL type, is array)] of a schema's tables and views."""
    out: dict[str, list[tuple[str, str, bool]]] = {}
    for table, column, dtype, ndims in conn.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, NULL), t.typcategory = 'A' "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_type t ON t.oid = a.atttypid WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v') "
        "AND NOT c.relispartition AND a.attnum > 0 AND NOT a.attisdropped ORDER BY c.relname, a.attnum",
        (schema,),
    ):
        out.setdefault(table, []).append((column, dtype, ndims))
    return out


def _felis_for(base: FelisSchema, published: _Published, tables: set[str]) -> FelisSchema:
    """A copy of the catalog schema named after ``published``, with only the tables it holds."""
    copy = base.model_copy(deep=True)
    copy.name = published.schema
    copy.description = published.description
    copy.tables = [t for t in copy.tables if t.name.lower() in tables]
    kept = {c.id for t in copy.tables for c in t.columns}
    for t in copy.tables:  # foreign keys to tables this catalog lacks are not keys here
        t.constraints = [
            c for c in t.constraints if all(ref in kept for ref in getattr(c, "referenced_columns", []))
        ]
    return copy


class _Dialect:
    """What felis' DataLoader needs of a database context to write SQL text: the dialect."""

    dialect = _DIALECT


def _felis_inserts(schema: FelisSchema, index: int) -> str:
    buf = io.StringIO()
    # felis reads only the context's dialect when it writes SQL text (dry run with an output file)
    context: Any = _Dialect()
    loader = DataLoader(schema, _manager(), context, tap_schema_index=index, output_file=buf, dry_run=True,
                        unique_keys=True)  # fmt: skip
    loader.load()
    return buf.getvalue()


def refresh_tap_schema(conn: psycopg.Connection) -> int:
    """Rewrite the TAP_SCHEMA rows to describe the catalogs that exist now; in the caller's transaction.

    Returns the number of tables described. Does nothing (0) if TAP_SCHEMA is not installed.
    """
    if conn.execute("SELECT to_regclass(%s)", (f"{TAP_SCHEMA}.columns",)).fetchone() == (None,):
        return 0
    base = load_felis(latest_version())
    tables = ("key_columns", "keys", "columns", "tables", "schemas")
    statements = [f"DELETE FROM {TAP_SCHEMA}.{t}" for t in tables]
    text = [";\n".join(statements) + ";"]
    described = 0
    extra_rows: list[tuple[str, str, str, str | None, str, int]] = []
    for published in published_schemas(conn):
        columns = _db_columns(conn, published.schema)
        felis_schema = _felis_for(base, published, set(columns))
        text.append(_felis_inserts(felis_schema, published.index))
        described += len(felis_schema.tables)
        for ftable in felis_schema.tables:
            known = {c.name.lower() for c in ftable.columns}
            for position, (name, dtype, is_array) in enumerate(columns[ftable.name.lower()], start=1):
                if name in known:
                    continue
                datatype, arraysize = _PG_VOTABLE.get(dtype.removesuffix("[]"), ("char", "*"))
                extra_rows.append(
                    (f"{published.schema}.{ftable.name}", f'"{name}"' if name.startswith("_") else name,
                     datatype, "*" if is_array else arraysize,
                     _IMPLEMENTATION.get(name, "Implementation column."), 1000 + position)
                )  # fmt: skip
    _execute(conn, "\n".join(text))
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {TAP_SCHEMA}.columns (table_name, column_name, datatype, arraysize, description, "
            "column_index, indexed, principal, std) VALUES (%s, %s, %s, %s, %s, %s, 0, 0, 0)",
            extra_rows,
        )
    _self_description(conn)
    log.info("TAP_SCHEMA refreshed: %d tables", described)
    return described


_IMPLEMENTATION = {
    "_healpix_29": "HEALPix nested index at order 29 of the row's (or its parent object's) position; "
    'the partition key (quote it in ADQL: "_healpix_29").',
    "_load_id": "The dpdb_meta.load_manifest entry this row was loaded from.",
}


def _self_description(conn: psycopg.Connection) -> None:
    """TAP_SCHEMA describes itself (felis ships the rows as CSV)."""
    import csv

    from lsst.resources import ResourcePath

    for table in ("schemas", "tables", "columns", "keys", "key_columns"):
        data = ResourcePath(f"resource://felis/config/tap_schema/{table}.csv").read().decode()
        rows = list(csv.reader(io.StringIO(data)))
        if len(rows) < 2:
            continue
        header = rows[0]
        names = ", ".join(f'"{h}"' for h in header)
        marks = ", ".join(["%s"] * len(header))
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {TAP_SCHEMA}.{table} ({names}) VALUES ({marks})".encode(),
                [[None if v == "\\N" else v for v in row] for row in rows[1:]],
            )


def _execute(conn: psycopg.Connection, text: str) -> None:
    conn.execute(text.encode())
