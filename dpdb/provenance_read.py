"""The reads behind :func:`dpdb.provenance.provenance`: a few set-based queries per ID, values bound.

Each function takes an open connection (the caller holds one read-only
snapshot) and returns plain rows; catalog and table names are quoted by the
driver (``psycopg.sql.Identifier``), and tables are those of :mod:`dpdb.model.layout`
in lower case, as they are in the database.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from .ids import reorigin

__all__ = [
    "database_version",
    "catalog",
    "release_by_origin",
    "release_names",
    "activations",
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
_POSITION = {"Object": ("coord_ra", "coord_dec"), "DiaObject": ("ra", "dec")}
_UNLOADED = ("archived", "dropped")

# A DiaObject's versions; in the prompt catalog, the visit or relink whose processing time started
# (made_by) or closed (ended_by) each: their processing times are the versions' validity bounds.
_VERSIONS = """
SELECT o.validitystartmjdtai, o.validityendmjdtai, o.ndiasources, o.ra, o.dec,
       coalesce('visit ' || pv.visit, 'relink ' || rs.path) AS made_by, 'relink ' || re.path AS ended_by
FROM {} o
LEFT JOIN dpdb_meta.prompt_visit pv
       ON %(prompt)s AND pv.processing_time_mjd_tai = o.validitystartmjdtai
LEFT JOIN dpdb_meta.prompt_relink rs
       ON %(prompt)s AND rs.processing_time_mjd_tai = o.validitystartmjdtai
LEFT JOIN dpdb_meta.prompt_relink re
       ON %(prompt)s AND re.processing_time_mjd_tai = o.validityendmjdtai
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
SELECT m._load_id AS load_id, m.tbl, count(*) AS n, lm.path, lm.size, lm.sha256, lm.table_name,
       lm.target, lm.row_count, lm.schema_version, lm.software_version, lm.loaded_at
FROM m LEFT JOIN dpdb_meta.load_manifest lm ON lm.load_id = m._load_id
GROUP BY m._load_id, m.tbl, lm.load_id
ORDER BY m._load_id NULLS LAST, m.tbl
"""

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


def _dicts(conn: psycopg.Connection, query: sql.Composable | str, params: Any = None) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()  # type: ignore[arg-type]


def database_version(conn: psycopg.Connection) -> tuple[int | None, str | None]:
    """(schema version in force, dpdb version that applied it)."""
    row = conn.execute(
        "SELECT version, code_version FROM dpdb_meta.schema_version ORDER BY version DESC LIMIT 1"
    ).fetchone()
    return (int(row[0]), row[1]) if row else (None, None)


def catalog(conn: psycopg.Connection, name: str) -> dict[str, Any] | None:
    """The catalog registry row of ``name`` (None: no such catalog loaded)."""
    rows = _dicts(conn, "SELECT * FROM dpdb_meta.catalog WHERE name = %s", (name,))
    return rows[0] if rows else None


def release_by_origin(conn: psycopg.Connection, origin: int) -> dict[str, Any] | None:
    """The release registry row holding ID ``origin`` (without its report and row counts)."""
    rows = _dicts(
        conn,
        "SELECT name, state, origin, schema_version, source, archive_path, created_at, loaded_at, "
        "validated_at, activated_at, superseded_at, archived_at, restored_at, dropped_at "
        "FROM dpdb_meta.release WHERE origin = %s",
        (origin,),
    )
    return rows[0] if rows else None


def release_names(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM dpdb_meta.release ORDER BY created_at, name")]


def activations(conn: psycopg.Connection, name: str) -> tuple[tuple[str, ...], tuple[dict[str, Any], ...]]:
    """(roles now: current/previous, the activations that made release ``name`` current or previous)."""
    rows = _dicts(
        conn,
        "SELECT activation_id, activated_at AS at, CASE WHEN name = %(n)s THEN 'current' ELSE 'previous' END "
        "AS made, CASE WHEN name = %(n)s THEN previous ELSE name END AS other, forced "
        "FROM dpdb_meta.release_activation WHERE name = %(n)s OR previous = %(n)s ORDER BY activation_id",
        {"n": name},
    )
    last = conn.execute(
        "SELECT name, previous FROM dpdb_meta.release_activation ORDER BY activation_id DESC LIMIT 1"
    ).fetchone()
    roles = tuple(role for role, who in zip(("current", "previous"), last or (), strict=False) if who == name)
    return roles, tuple({k: v for k, v in r.items() if k != "activation_id"} for r in rows)


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
    ra, dec = map(sql.Identifier, _POSITION[table])
    if table == "Object":
        query = sql.SQL("SELECT {} AS ra, {} AS dec FROM {} WHERE objectid = %(id)s").format(
            ra, dec, _table(schema, table)
        )
        return _dicts(conn, query, {"id": object_id})
    query = sql.SQL(_VERSIONS).format(_table(schema, table))
    rows = _dicts(conn, query, {"id": object_id, "prompt": kind == "prompt"})
    for r in rows[:-1]:
        r["ended_by"] = None  # a later version replaced it
    return rows


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


def visits(conn: psycopg.Connection, schema: str, table: str, object_id: int) -> list[dict[str, Any]]:
    """Per visit of the object's measurements (CcdVisit.visitId, else the row's own visit): band,
    midpoint, CcdVisits of rows not withdrawn, rows and withdrawn rows per table; in time order."""
    query = sql.SQL(_VISITS).format(
        m=_measurements(schema, table), ccd=_table(schema, "CcdVisit"), visit=_table(schema, "Visit")
    )
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


def loads(conn: psycopg.Connection, schema: str, table: str, object_id: int) -> list[dict[str, Any]]:
    """The load-manifest entries of the object's rows and its measurements' rows, with how many of
    them (by table) came from each; rows without a ``_load_id`` come as one entry with load_id None."""
    key = sql.Identifier(MEASUREMENTS[table][0])
    query = sql.SQL(_LOADS).format(
        name=sql.Literal(table), obj=_table(schema, table), key=key, m=_measurements(schema, table)
    )
    out: dict[int | None, dict[str, Any]] = {}
    for r in _dicts(conn, query, {"id": object_id}):
        entry = out.setdefault(
            r["load_id"], {k: v for k, v in r.items() if k not in ("tbl", "n")} | {"rows": {}}
        )
        entry["rows"][r["tbl"]] = r["n"]
    return list(out.values())


def alerts(conn: psycopg.Connection, object_id: int) -> list[dict[str, Any]]:
    """One alert per DiaSource ever associated with prompt DiaObject ``object_id``: issued at the
    DiaSource's first processing time; when withdrawn from it, where the DiaSource went."""
    return _dicts(conn, _ALERTS, {"id": object_id})


def release_counterparts(conn: psycopg.Connection, object_id: int) -> dict[str, int]:
    """Loaded releases whose DiaObject table holds prompt DiaObject ``object_id`` (same local number)."""
    releases = conn.execute(
        "SELECT r.name, r.origin FROM dpdb_meta.release r JOIN dpdb_meta.catalog c USING (name) "
        "WHERE r.state <> ALL(%s) AND r.origin IS NOT NULL ORDER BY r.created_at, r.name",
        (list(_UNLOADED),),
    ).fetchall()
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
        ra, dec = map(sql.Identifier, _POSITION[kind])
        row = conn.execute(
            sql.SQL("SELECT {}, {} FROM {} WHERE {} = %s LIMIT 1").format(
                ra, dec, sql.Identifier("samples", name), sql.Identifier(MEASUREMENTS[kind][0])
            ),
            (object_id,),
        ).fetchone()
        if row is not None:
            out.append((kind, f"samples.{name}", (row[0], row[1])))
    return out
