"""The reads behind :func:`dpdb.provenance.provenance`: a few set-based queries per ID, values bound.

Each function takes an open connection (the caller holds one read-only
snapshot) and returns plain rows; catalog and table names are quoted by the
driver (``psycopg.sql.Identifier``), and tables are those of :mod:`dpdb.model.layout`
in lower case, as they are in the database. What the bookkeeping says (the
catalog, the release, its activations, load-manifest entries, which visit made
a version) comes from :mod:`dpdb.registry`.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from .ids import reorigin
from .model.table import catalog_table
from .pg import Query
from .registry import manifest, prompt_log
from .registry.catalogs import find_catalog
from .registry.releases import all_releases

__all__ = [
    "object_kind",
    "source_hint",
    "object_rows",
    "visits",
    "loads",
    "alerts",
    "release_counterparts",
    "sample_rows",
]

# Object kind -> (its key column, its measurement tables with their key column).
MEASUREMENTS = {
    "Object": ("objectid", ("Source", "ForcedSource")),
    "DiaObject": ("diaobjectid", ("DiaSource", "DiaForcedSource")),
}
_WITHDRAWABLE = ("DiaSource", "DiaForcedSource")  # rows with timeWithdrawnMjdTai

# A DiaObject's versions, in time order.
_VERSIONS = """
SELECT o.validitystartmjdtai, o.validityendmjdtai, o.ndiasources, o.{ra} AS ra, o.{dec} AS dec
FROM {table} o
WHERE o.diaobjectid = %(id)s
ORDER BY o.validitystartmjdtai
"""

# Measurement rows by visit (CcdVisit.visitId, else the row's own visit column), table and withdrawal.
_VISITS = """
WITH m AS ({m})
SELECT coalesce(c.visitid, m.visit) AS visit, v.band, v.expmidptmjd, m.tbl, m.withdrawn, count(*) AS n,
       array_agg(DISTINCT m.ccdvisitid ORDER BY m.ccdvisitid) AS ccds
FROM m
LEFT JOIN {ccd} c ON c.ccdvisitid = m.ccdvisitid
LEFT JOIN {visit} v ON v.visit = coalesce(c.visitid, m.visit)
GROUP BY 1, 2, 3, 4, 5
ORDER BY 3, 1, 4
"""

# The object's rows and its measurements' rows by load-manifest entry and table.
_LOADS = """
WITH m AS (
    SELECT {name} AS tbl, _load_id FROM {obj} WHERE {key} = %(id)s
    UNION ALL
    SELECT tbl, _load_id FROM ({m}) x
)
SELECT m._load_id AS load_id, m.tbl, count(*) AS n
FROM m
GROUP BY m._load_id, m.tbl
ORDER BY m._load_id NULLS LAST, m.tbl
"""
_MANIFEST_FIELDS = (
    "path", "size", "sha256", "table_name", "target", "row_count", "schema_version", "software_version",
    "loaded_at",
)  # fmt: skip

# One alert per DiaSource ever associated with the DiaObject, issued at its first processing time;
# for one withdrawn from it (daytime relink), where its current row went.
_ALERTS = """
WITH mine AS (SELECT DISTINCT diasourceid FROM prompt.diasource WHERE diaobjectid = %(id)s)
SELECT x.diasourceid AS alert_id, min(x.visit) AS visit, min(x.timeprocessedmjdtai) AS issued_mjd_tai,
       max(x.timewithdrawnmjdtai) FILTER (WHERE x.diaobjectid = %(id)s) AS withdrawn_mjd_tai,
       max(x.ssobjectid) FILTER (WHERE x.timewithdrawnmjdtai IS NULL) AS moved_to_ssobject,
       max(x.diaobjectid) FILTER (WHERE x.timewithdrawnmjdtai IS NULL AND x.diaobjectid <> %(id)s)
           AS moved_to_diaobject
FROM mine JOIN prompt.diasource x USING (diasourceid)
GROUP BY x.diasourceid
ORDER BY 3, 1
"""


def _dicts(conn: psycopg.Connection, query: Query, params: Any = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def _table(schema: str, table: str) -> sql.Identifier:
    return sql.Identifier(schema, table.lower())


def object_kind(conn: psycopg.Connection, schema: str, kind: str, object_id: int) -> str | None:
    """``Object`` or ``DiaObject``: the table of catalog ``schema`` that holds ``object_id``, if any."""
    kinds = ("DiaObject",) if kind == "prompt" else ("Object", "DiaObject")
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL("(SELECT {} FROM {} WHERE {} = %(id)s LIMIT 1)").format(
            sql.Literal(k), _table(schema, k), sql.Identifier(MEASUREMENTS[k][0])
        )
        for k in kinds
    )
    row = conn.execute(query, {"id": object_id}).fetchone()
    return row[0] if row else None


def source_hint(conn: psycopg.Connection, schema: str, kind: str, object_id: int) -> str:
    """`` (it is a DiaSource of DiaObject ...)`` when ``object_id`` is a DiaSource ID, else empty."""
    row = conn.execute(
        sql.SQL("SELECT diaobjectid, ssobjectid FROM {} WHERE diasourceid = %s "
                "ORDER BY timeprocessedmjdtai DESC LIMIT 1").format(_table(schema, "DiaSource")),
        (object_id,),
    ).fetchone()  # fmt: skip
    if row is None:
        return ""
    owner = f"DiaObject {row[0]}" if row[0] is not None else f"SSObject {row[1]}"
    alert = f"; its alert: dpdb prompt alert {object_id}" if kind == "prompt" else ""
    return f" ({object_id} is a DiaSource ID, of {owner}{alert})"


def object_rows(conn: psycopg.Connection, schema: str, kind: str, table: str, object_id: int) -> list[dict]:
    """The object's rows (DiaObject versions in time order), each with ra, dec and, for the prompt
    catalog, the visit or relink that made the version (``made_by``) and closed it (``ended_by``)."""
    ra, dec = map(sql.Identifier, _position(table))
    if table == "Object":
        query = sql.SQL("SELECT {} AS ra, {} AS dec FROM {} WHERE objectid = %(id)s").format(
            ra, dec, _table(schema, table)
        )
        return _dicts(conn, query, {"id": object_id})
    query = sql.SQL(_VERSIONS).format(ra=ra, dec=dec, table=_table(schema, table))
    rows = _dicts(conn, query, {"id": object_id})
    starts = [r["validitystartmjdtai"] for r in rows]
    ends = [r["validityendmjdtai"] for r in rows if r["validityendmjdtai"] is not None]
    made = prompt_log.made_by(conn, starts) if kind == "prompt" else {}
    ended = prompt_log.made_by(conn, ends, relinks_only=True) if kind == "prompt" else {}
    for r in rows:
        r["made_by"] = made.get(r["validitystartmjdtai"])
        r["ended_by"] = ended.get(r["validityendmjdtai"]) if r["validityendmjdtai"] is not None else None
    for r in rows[:-1]:
        r["ended_by"] = None  # a later version replaced it
    return rows


@functools.cache
def _position(table: str) -> tuple[str, str]:
    """Database names of the principal ra, dec columns of ``table`` (from the table model)."""
    position = catalog_table(table).position
    assert position is not None, table  # Object and DiaObject have positions
    return position


@functools.lru_cache(maxsize=256)
def _measurements(schema: str, table: str) -> sql.Composed:
    """Rows (tbl, ccdvisitid, visit, _load_id, withdrawn) of the measurements of object %(id)s."""
    key, children = MEASUREMENTS[table]
    return sql.SQL(" UNION ALL ").join(
        sql.SQL(
            "SELECT {} AS tbl, ccdvisitid, visit, _load_id, {} AS withdrawn FROM {} WHERE {} = %(id)s"
        ).format(
            sql.Literal(child),
            sql.SQL("timewithdrawnmjdtai IS NOT NULL" if child in _WITHDRAWABLE else "false"),
            _table(schema, child),
            sql.Identifier(key),
        )
        for child in children
    )


@functools.lru_cache(maxsize=256)
def _visits_query(schema: str, table: str) -> sql.Composed:
    """The statement of :func:`visits` (composed once per catalog and table: an object page runs it often)."""
    return sql.SQL(_VISITS).format(
        m=_measurements(schema, table), ccd=_table(schema, "CcdVisit"), visit=_table(schema, "Visit")
    )


def visits(conn: psycopg.Connection, schema: str, table: str, object_id: int) -> list[dict[str, Any]]:
    """Per visit of the object's measurements (CcdVisit.visitId, else the row's own visit): band,
    midpoint, CcdVisits of rows not withdrawn, rows and withdrawn rows per table; in time order."""
    query = _visits_query(schema, table)
    out: dict[int, dict[str, Any]] = {}
    children = MEASUREMENTS[table][1]
    for r in _dicts(conn, query, {"id": object_id}):
        v = out.setdefault(r["visit"], {
            "visit": r["visit"], "band": r["band"], "midpoint_mjd": r["expmidptmjd"], "ccd_visits": set(),
            "rows": dict.fromkeys(children, 0), "withdrawn": dict.fromkeys(children, 0),
        })  # fmt: skip
        v["withdrawn" if r["withdrawn"] else "rows"][r["tbl"]] += r["n"]
        if not r["withdrawn"]:
            v["ccd_visits"].update(c for c in r["ccds"] if c is not None)
    for v in out.values():
        v["ccd_visits"] = tuple(sorted(v["ccd_visits"]))
    return list(out.values())


@functools.lru_cache(maxsize=256)
def _loads_query(schema: str, table: str) -> sql.Composed:
    """The statement of :func:`loads` (composed once per catalog and table)."""
    key = sql.Identifier(MEASUREMENTS[table][0])
    return sql.SQL(_LOADS).format(
        name=sql.Literal(table), obj=_table(schema, table), key=key, m=_measurements(schema, table)
    )


def loads(conn: psycopg.Connection, schema: str, table: str, object_id: int) -> list[dict[str, Any]]:
    """The load-manifest entries of the object's rows and its measurements' rows, with how many of
    them (by table) came from each; rows without a ``_load_id`` come as one entry with load_id None."""
    found = _dicts(conn, _loads_query(schema, table), {"id": object_id})
    known = manifest.entries(conn, [r["load_id"] for r in found if r["load_id"] is not None])
    out: dict[int | None, dict[str, Any]] = {}
    for r in found:
        entry = out.get(r["load_id"])
        if entry is None:
            fields = known.get(r["load_id"], {}) if r["load_id"] is not None else {}
            entry = out[r["load_id"]] = {"load_id": r["load_id"]} | {
                k: fields.get(k) for k in _MANIFEST_FIELDS
            } | {"rows": {}}
        entry["rows"][r["tbl"]] = r["n"]
    return list(out.values())


def alerts(conn: psycopg.Connection, object_id: int) -> list[dict[str, Any]]:
    """One alert per DiaSource ever associated with prompt DiaObject ``object_id``: issued at the
    DiaSource's first processing time; when withdrawn from it, where the DiaSource went."""
    return _dicts(conn, _ALERTS, {"id": object_id})


def release_counterparts(conn: psycopg.Connection, object_id: int) -> dict[str, int]:
    """Loaded releases whose DiaObject table holds prompt DiaObject ``object_id`` (same local number)."""
    releases = [
        (r.name, r.origin)
        for r in all_releases(conn)
        if r.loaded and r.origin is not None and find_catalog(conn, r.name) is not None
    ]
    if not releases:
        return {}
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL("(SELECT %s::text, diaobjectid FROM {} WHERE diaobjectid = %s LIMIT 1)").format(
            _table(name, "DiaObject")
        )
        for name, _ in releases
    )
    params = [v for name, origin in releases for v in (name, int(reorigin(np.array([object_id]), origin)[0]))]
    return {name: int(oid) for name, oid in conn.execute(query, params).fetchall()}


def sample_rows(conn: psycopg.Connection, release: str, object_id: int) -> list[tuple[str, str, tuple]]:
    """(kind, sample table, (ra, dec)) of the samples of ``release`` (DPDD §4.5) that hold ``object_id``."""
    out = []
    for kind in ("Object", "DiaObject"):
        name = f"{release}_{kind.lower()}"
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"samples.{name}",)).fetchone()
        if not exists or not exists[0]:
            continue
        ra, dec = map(sql.Identifier, _position(kind))
        row = conn.execute(
            sql.SQL("SELECT {}, {} FROM {} WHERE {} = %s LIMIT 1").format(
                ra, dec, sql.Identifier("samples", name), sql.Identifier(MEASUREMENTS[kind][0])
            ),
            (object_id,),
        ).fetchone()
        if row is not None:
            out.append((kind, f"samples.{name}", (row[0], row[1])))
    return out
