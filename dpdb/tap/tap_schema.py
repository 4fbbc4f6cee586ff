"""TAP_SCHEMA: the TAP 1.1 description of every catalog a TAP client may query, generated with felis.

The five standard tables (``schemas``, ``tables``, ``columns``, ``keys``, ``key_columns``) are
created from felis' own TAP_SCHEMA definition (schema ``tap_schema``, lower case so ADQL's
``TAP_SCHEMA.tables`` reaches it unquoted) and filled by felis' ``DataLoader`` from our felis
schema, once per catalog schema that exists: ``prompt``, ``current``, ``previous``, ``samples``
and every loaded release (docs/architecture.md, decisions 3 and 12). Columns the database holds
beyond felis (the implementation columns ``_healpix_29``...) are described from the catalog.

:func:`refresh_tap_schema` runs in the caller's transaction: release activation and unloading
call it in theirs, so TAP_SCHEMA never describes a schema that is gone. It is incremental and
set-based, so an activation stays fast: the rows of a schema whose tables and columns are what
TAP_SCHEMA already says stay; a schema that lost its catalog loses its rows; a schema that is new
or changed gets a copy of the rows of a described schema with the same tables, columns and types
(every release of one schema version has the same description: ``current`` after an activation
is the new release's description under another name), renamed in SQL; only a layout no described
schema has (the first release of a schema version) is generated with felis (seconds).
``current`` and ``previous`` are described as the releases the registry names for them, so the
rows are right from the activation's commit on, before the views are swapped.
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


def published_schemas(conn: psycopg.Connection, aliases: dict[str, str] | None = None) -> list[_Published]:
    """The catalog schemas TAP_SCHEMA describes, in listing order: those that exist and hold tables,
    and ``current``/``previous`` when ``aliases`` names a release for them (an activation in progress)."""
    from ..registry.catalogs import present_catalog_names

    candidates = ["prompt", "current", "previous", "samples", *present_catalog_names(conn)]
    rows = conn.execute(
        "SELECT n.nspname FROM pg_namespace n WHERE n.nspname = ANY(%s) AND EXISTS (SELECT 1 FROM pg_class c "
        "WHERE c.relnamespace = n.oid AND c.relkind IN ('r', 'p', 'v'))",
        (candidates,),
    ).fetchall()
    present = {r[0] for r in rows} | set(aliases or {})
    order = ["current", "previous", "prompt", "samples"]
    out = [_Published(s, i, _SCHEMA_TEXT[s]) for i, s in enumerate(order) if s in present]
    releases = sorted(present - set(order))
    out += [
        _Published(r, 10 + i, f"Data release {r} (read it through current/previous for stable names).")
        for i, r in enumerate(releases)
    ]
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


Signature = dict[str, list[tuple[str, str, bool]]]


def _signatures(conn: psycopg.Connection, schemas: list[str]) -> dict[str, Signature]:
    """schema -> table (lower) -> [(column, PostgreSQL type, is array)], for all ``schemas`` in one read."""
    out: dict[str, Signature] = {s: {} for s in schemas}
    for schema, table, column, dtype, ndims in conn.execute(
        "SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, NULL), t.typcategory = 'A' "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_type t ON t.oid = a.atttypid WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'v') "
        "AND NOT c.relispartition AND a.attnum > 0 AND NOT a.attisdropped "
        "ORDER BY n.nspname, c.relname, a.attnum",
        (schemas,),
    ):
        out[schema].setdefault(table, []).append((column, dtype, ndims))
    return out


def _names(signature: Signature) -> dict[str, frozenset[str]]:
    return {t: frozenset(c for c, _, _ in cols) for t, cols in signature.items()}


def _described(conn: psycopg.Connection) -> tuple[dict[str, tuple[int, str]], dict[str, dict[str, set[str]]]]:
    """What TAP_SCHEMA says now: schema -> (index, description), and schema -> table -> columns (lower)."""
    schemas = {
        r[0]: (r[1], r[2])
        for r in conn.execute(f"SELECT schema_name, schema_index, description FROM {TAP_SCHEMA}.schemas")
    }
    columns: dict[str, dict[str, set[str]]] = {}
    for schema, table, column in conn.execute(
        f"SELECT t.schema_name, lower(split_part(t.table_name, '.', 2)), lower(trim(both '\"' from "
        f"c.column_name)) FROM {TAP_SCHEMA}.tables t LEFT JOIN {TAP_SCHEMA}.columns c "
        "ON c.table_name = t.table_name"
    ):
        cols = columns.setdefault(schema, {}).setdefault(table, set())
        if column is not None:
            cols.add(column)
    return schemas, columns


def _delete_schema(conn: psycopg.Connection, schema: str) -> None:
    t = TAP_SCHEMA
    of_schema = "split_part(from_table, '.', 1) = %(s)s OR split_part(target_table, '.', 1) = %(s)s"
    for statement in (
        f"DELETE FROM {t}.key_columns WHERE key_id IN (SELECT key_id FROM {t}.keys WHERE {of_schema})",
        f"DELETE FROM {t}.keys WHERE {of_schema}",
        f"DELETE FROM {t}.columns WHERE split_part(table_name, '.', 1) = %(s)s",
        f"DELETE FROM {t}.tables WHERE schema_name = %(s)s",
        f"DELETE FROM {t}.schemas WHERE schema_name = %(s)s",
    ):
        conn.execute(statement.encode(), {"s": schema})


def _copy_schema(conn: psycopg.Connection, source: str, published: _Published) -> None:
    """Describe ``published`` with the rows of ``source`` (same tables, columns and types), renamed."""
    t = TAP_SCHEMA
    params = {"s": source, "p": published.schema, "d": published.description, "i": published.index}
    rename = "%(p)s::text || '.' || split_part({col}, '.', 2)"
    conn.execute(
        f"INSERT INTO {t}.schemas (schema_name, utype, description, schema_index) "
        "VALUES (%(p)s, NULL, %(d)s, %(i)s)",
        params,
    )
    conn.execute(
        f"INSERT INTO {t}.tables (schema_name, table_name, table_type, utype, description, table_index) "
        f"SELECT %(p)s::text, {rename.format(col='table_name')}, table_type, utype, description, table_index "
        f"FROM {t}.tables WHERE schema_name = %(s)s",
        params,
    )
    columns = "column_name, utype, ucd, unit, description, datatype, arraysize, xtype, size, principal, " \
        "indexed, std, column_index"  # fmt: skip
    conn.execute(
        f"INSERT INTO {t}.columns (table_name, {columns}) SELECT {rename.format(col='table_name')}, "
        f"{columns} FROM {t}.columns WHERE split_part(table_name, '.', 1) = %(s)s",
        params,
    )
    key_id = (
        "CASE WHEN left(key_id, length(%(s)s::text)) = %(s)s::text "
        "THEN %(p)s::text || substr(key_id, length(%(s)s::text) + 1) "
        "ELSE %(p)s::text || '_' || key_id END"
    )
    conn.execute(
        f"INSERT INTO {t}.key_columns (key_id, from_column, target_column) "
        f"SELECT {key_id}, c.from_column, c.target_column FROM {t}.key_columns c "
        f"WHERE c.key_id IN (SELECT key_id FROM {t}.keys WHERE split_part(from_table, '.', 1) = %(s)s)",
        params,
    )
    conn.execute(
        f"INSERT INTO {t}.keys (key_id, from_table, target_table, utype, description) "
        f"SELECT {key_id}, {rename.format(col='from_table')}, {rename.format(col='target_table')}, utype, "
        f"description FROM {t}.keys WHERE split_part(from_table, '.', 1) = %(s)s",
        params,
    )


def _generate_schema(conn: psycopg.Connection, published: _Published, signature: Signature) -> int:
    """Describe ``published`` from felis (the slow path: a layout TAP_SCHEMA has not described yet)."""
    felis_schema = _felis_for(load_felis(latest_version()), published, set(signature))
    _execute(conn, _felis_inserts(felis_schema, published.index))
    extra_rows: list[tuple[str, str, str, str | None, str, int]] = []
    for ftable in felis_schema.tables:
        known = {c.name.lower() for c in ftable.columns}
        for position, (name, dtype, is_array) in enumerate(signature[ftable.name.lower()], start=1):
            if name in known:
                continue
            datatype, arraysize = _PG_VOTABLE.get(dtype.removesuffix("[]"), ("char", "*"))
            extra_rows.append(
                (f"{published.schema}.{ftable.name}", f'"{name}"' if name.startswith("_") else name,
                 datatype, "*" if is_array else arraysize,
                 _IMPLEMENTATION.get(name, "Implementation column."), 1000 + position)
            )  # fmt: skip
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {TAP_SCHEMA}.columns (table_name, column_name, datatype, arraysize, description, "
            "column_index, indexed, principal, std) VALUES (%s, %s, %s, %s, %s, %s, 0, 0, 0)",
            extra_rows,
        )
    return len(felis_schema.tables)


def refresh_tap_schema(conn: psycopg.Connection, *, full: bool = False) -> int:
    """Bring the TAP_SCHEMA rows to the catalogs that exist now; in the caller's transaction.

    Incremental (see the module); ``full`` rewrites every row from felis (after a schema migration).
    Returns the number of tables described. Does nothing (0) if TAP_SCHEMA is not installed.
    """
    if conn.execute("SELECT to_regclass(%s)", (f"{TAP_SCHEMA}.columns",)).fetchone() == (None,):
        return 0
    from ..model.layout import LOAD_ID_COLUMN
    from ..registry.activations import named_now

    if full:
        for table in ("key_columns", "keys", "columns", "tables", "schemas"):
            conn.execute(f"DELETE FROM {TAP_SCHEMA}.{table}".encode())
    current, previous = named_now(conn)
    aliases = {k: v for k, v in (("current", current), ("previous", previous)) if v is not None}
    published = published_schemas(conn, aliases)
    names = [p.schema for p in published]
    signatures = _signatures(conn, sorted({*names, *aliases.values()}))
    for alias, release in aliases.items():  # current/previous: as the release they name from the commit on
        if alias in names and signatures.get(release):  # (views of every column but _load_id)
            signatures[alias] = {
                t: [c for c in cols if c[0] != LOAD_ID_COLUMN] for t, cols in signatures[release].items()
            }
    described, described_columns = _described(conn)
    # Only the tables felis describes count (not the key maps, not the samples' own tables): those
    # TAP_SCHEMA holds for some schema already (a new schema version's new table: `full`, at migration).
    felis_tables = {t for schema, tables in described_columns.items() if schema != TAP_SCHEMA for t in tables}
    if not felis_tables:
        felis_tables = {t.name.lower() for t in load_felis(latest_version()).tables}
    raw = signatures
    signatures = {
        schema: {t: cols for t, cols in sig.items() if t in felis_tables}
        for schema, sig in signatures.items()
    }
    valid: set[str] = set()
    for schema, (index, description) in described.items():
        if schema == TAP_SCHEMA:
            valid.add(schema)
            continue
        wanted = next((p for p in published if p.schema == schema), None)
        same = (
            wanted is not None
            and (wanted.index, wanted.description) == (index, description)
            and {t: frozenset(c) for t, c in described_columns.get(schema, {}).items()}
            == _names(signatures[schema])
        )
        if same:
            valid.add(schema)
        else:
            if wanted is not None:
                had = {t: frozenset(c) for t, c in described_columns.get(schema, {}).items()}
                now = _names(signatures[schema])
                log.info("TAP_SCHEMA: %s changed: %s", schema, sorted(
                    (t, sorted(had.get(t, frozenset()) ^ now.get(t, frozenset()))[:5])
                    for t in set(had) | set(now) if had.get(t) != now.get(t)
                )[:5] or (index, description[:30]))  # fmt: skip
            _delete_schema(conn, schema)
    count = 0
    generated: list[str] = []
    for p in published:
        count += len(signatures[p.schema])
        if p.schema in valid:
            continue
        source = next(
            (s for s in sorted(valid) if s != TAP_SCHEMA and signatures.get(s) == signatures[p.schema]), None
        )
        if source is not None:
            _copy_schema(conn, source, p)
        else:
            _generate_schema(conn, p, raw[p.schema])
            generated.append(p.schema)
        valid.add(p.schema)
    if TAP_SCHEMA not in described:
        _self_description(conn)
    log.info(
        "TAP_SCHEMA refreshed: %d tables (%s generated with felis)", count, ", ".join(generated) or "none"
    )
    return count


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
