"""Alerts regenerated from the prompt catalog (DPDD §3.5.1).

An alert is identified by its DiaSource and the instant it was issued: the
prompt catalog is append-only and every table can be read as of an instant
(``sql/as_of.sql``), so the alert a DiaSource triggered can be rebuilt at any
later time, identical to the byte, from its ``diaSourceId`` alone. Its content,
all read as of the instant T (default: the issue time, the smallest
``timeProcessedMjdTai`` of the DiaSource, i.e. its first version):

- ``diaSource``: the version of the DiaSource visible at T;
- ``diaObject``: the version of its DiaObject valid at T;
- ``prvDiaSources`` / ``prvDiaForcedSources``: the other DiaSources and the
  forced measurements of that DiaObject visible at T whose ``midpointMjdTai``
  lies in ``[midpoint - characterization_cutoff, midpoint)`` (the previous 12
  months), ordered by ``midpointMjdTai`` and ID; an empty list for a DiaObject
  without history, null for a DiaSource attributed to an SSObject;
- ``ssSource`` and ``mpc_orbits`` for a DiaSource attributed to an SSObject:
  its SSSource row and the orbit of its SSObject version valid at T (the alert
  schema has no SSObject record since v8; ``mpc_orbits`` is where the orbit goes).

The record follows the Rubin alert schema of lsst-alert-packet, pinned to
:data:`SCHEMA_VERSION` (11.1) so that an alert regenerated after the package
ships a newer schema is still the same bytes. Our columns fill the schema's
fields of the same name (case-insensitive), converted to the field's type
(``real`` -> float, ``smallint`` -> int, ``char(1)`` band -> string, NULL ->
null); our columns without a field are dropped. Besides names, a few fields
are derived:

- ``alert.diaSourceId`` is the DiaSource's ID (the alert ID);
- ``mpc_orbits``: ``i``, ``mean_anomaly``, ``epoch_mjd`` and ``earth_moid``
  from SSObject ``incl``, ``meanAnomaly``, ``epochMjdTai`` (converted from TAI
  to TT, the MPC's time scale) and ``MOIDEarth``; ``unpacked_primary_provisional_designation`` and
  ``packed_primary_provisional_designation`` from ``designation`` when it is a
  provisional designation (``2025 BA``, packed ``K25B00A``);
- ``ssSource``: ``eclLambda``, ``eclBeta`` (mean ecliptic of J2000), ``galLon``
  and ``galLat`` from the DiaSource's ``ra``, ``dec`` when the catalog has none.

The fields no column of ours fills are listed in :data:`UNFILLED_FIELDS` (and
in the README): ``observation_reason``, ``target_name``, the three cutouts
(always null: the catalog holds no images) and most of ``mpc_orbits`` (MPC
bookkeeping, non-gravitational terms, uncertainties, ``a``, ``h``, ``g``...);
every field of ``diaSource``, ``diaObject``, ``diaForcedSource`` and
``ssSource`` has a column. A field left NULL is null when the schema allows it,
else the default of :data:`DEFAULTS` by type (0 for counts and
``mpc_orbits.id``, NaN for floats, false, empty string).

Wire format: Rubin's, the Confluent wire format of the alert Kafka stream: a
zero magic byte, the schema ID as a 4-byte big-endian integer
(``Schema.get_schema_id()``, 1101 for 11.1), then the schemaless Avro datum.
:func:`read_alert_avro` reads it back with the schema the ID names.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import math
import re
import struct
from functools import cache
from pathlib import PurePath
from typing import Any

import fastavro
import fastavro.validation
import numpy as np
import psycopg
from lsst.alert.packet import Schema, get_schema_path

from dpdb.config import Settings
from dpdb.db import connect
from dpdb.errors import AlertError, first_line
from dpdb.readers import read_snapshot
from dpdb.registry.catalogs import find_catalog
from dpdb.timeutil import iso_utc

__all__ = [
    "SCHEMA_VERSION",
    "UNFILLED_FIELDS",
    "DEFAULTS",
    "alert_schema",
    "issue_time",
    "alert_record",
    "alert_avro",
    "read_alert_avro",
    "alert_json",
    "unfilled_fields",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = (11, 1)
"""(major, minor) of the Rubin alert schema (lsst-alert-packet) alerts are written in."""

UNFILLED_FIELDS = tuple(
    """
    observation_reason target_name cutoutDifference cutoutScience cutoutTemplate mpc_orbits.id
    mpc_orbits.mpc_orb_jsonb mpc_orbits.created_at mpc_orbits.updated_at mpc_orbits.orbit_type_int
    mpc_orbits.u_param mpc_orbits.nopp mpc_orbits.arc_length_total mpc_orbits.arc_length_sel
    mpc_orbits.nobs_total mpc_orbits.nobs_total_sel mpc_orbits.a mpc_orbits.peri_time
    mpc_orbits.yarkovsky mpc_orbits.srp mpc_orbits.a1 mpc_orbits.a2 mpc_orbits.a3 mpc_orbits.dt
    mpc_orbits.period mpc_orbits.mean_motion mpc_orbits.a_unc mpc_orbits.q_unc mpc_orbits.e_unc
    mpc_orbits.i_unc mpc_orbits.node_unc mpc_orbits.argperi_unc mpc_orbits.peri_time_unc
    mpc_orbits.yarkovsky_unc mpc_orbits.srp_unc mpc_orbits.a1_unc mpc_orbits.a2_unc
    mpc_orbits.a3_unc mpc_orbits.dt_unc mpc_orbits.mean_anomaly_unc mpc_orbits.period_unc
    mpc_orbits.mean_motion_unc mpc_orbits.h mpc_orbits.g mpc_orbits.not_normalized_rms
    mpc_orbits.normalized_rms mpc_orbits.fitting_datetime
    """.split()
)
"""Alert fields (``record.field`` in sub-records) that no column of the prompt catalog fills."""

DEFAULTS: dict[str, Any] = {
    "int": 0,
    "long": 0,
    "float": math.nan,
    "double": math.nan,
    "boolean": False,
    "string": "",
    "bytes": b"",
}
"""Value of a non-nullable field the catalog leaves NULL, by Avro type."""

# The alert's sub-records and the prompt table (as-of function) that fills each.
_TABLES = {
    "diaSource": "diasource",
    "diaForcedSource": "diaforcedsource",
    "diaObject": "diaobject",
    "ssSource": "sssource",
    "mpc_orbits": "ssobject",
}
# Alert fields filled from a column of another name (record -> field -> our column).
_ALIASES = {
    "mpc_orbits": {
        "i": "incl",
        "mean_anomaly": "meananomaly",
        "epoch_mjd": "epochmjdtai",
        "earth_moid": "moidearth",
    }
}
# Fields derived in code (see the module docstring), so not "unfilled" when no column has their name.
_DERIVED = {
    "diaSourceId",
    "diaSource",
    "prvDiaSources",
    "prvDiaForcedSources",
    "diaObject",
    "ssSource",
    "mpc_orbits",
    "ssSource.eclLambda",
    "ssSource.eclBeta",
    "ssSource.galLon",
    "ssSource.galLat",
    "mpc_orbits.unpacked_primary_provisional_designation",
    "mpc_orbits.packed_primary_provisional_designation",
}
TT_MINUS_TAI = 32.184 / 86400  # d; a definition (IAU), not a leap-second table
WIRE_MAGIC = 0


# -- schema -------------------------------------------------------------------------------------------------
@cache
def alert_schema(version: tuple[int, int] = SCHEMA_VERSION) -> Schema:
    """The Rubin alert schema ``version`` (major, minor) as shipped by lsst-alert-packet.

    Parameters
    ----------
    version : tuple of int
        (major, minor); default :data:`SCHEMA_VERSION`.

    Returns
    -------
    lsst.alert.packet.Schema
        The parsed schema (``.definition`` for fastavro, ``.get_schema_id()`` for the wire header).
    """
    major, minor = version
    path = PurePath(get_schema_path(major, minor)) / f"lsst.v{major}_{minor}.alert.avsc"
    try:
        return Schema.from_file(str(path))
    except (OSError, ValueError) as e:
        raise AlertError(f"alert schema {major}.{minor} not found in lsst-alert-packet ({path})") from e


@cache
def _records(version: tuple[int, int] = SCHEMA_VERSION) -> dict[str, dict[str, Any]]:
    """The record types of alert schema ``version`` by short name (``diaSource``, ``alert``...)."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "record" and isinstance(node.get("name"), str):
                found.setdefault(node["name"].rsplit(".", 1)[-1], node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(alert_schema(version).definition)
    return found


def _split_type(avro_type: Any) -> tuple[str, bool]:
    """(base type name, nullable) of a field type: ``["null", "float"]`` -> ("float", True)."""
    nullable = isinstance(avro_type, list) and "null" in avro_type
    if isinstance(avro_type, list):
        avro_type = next(t for t in avro_type if t != "null")
    if isinstance(avro_type, dict):
        avro_type = avro_type["type"]
    return str(avro_type), nullable


# -- reading the catalog as of an instant ------------------------------------------------------------------
def issue_time(settings: Settings, dia_source_id: int) -> float:
    """The instant (MJD TAI) DiaSource ``dia_source_id`` was first processed, i.e. its alert was issued.

    Raises
    ------
    AlertError
        When the prompt catalog holds no such DiaSource.
    """
    with connect(settings) as conn:
        return _issue_time(conn, dia_source_id)


def _issue_time(conn: psycopg.Connection, dia_source_id: int) -> float:
    row = conn.execute(
        "SELECT min(timeprocessedmjdtai) FROM prompt.diasource WHERE diasourceid = %s", (dia_source_id,)
    ).fetchone()
    if row is None or row[0] is None:
        raise AlertError(f"no DiaSource {dia_source_id} in the prompt catalog")
    return float(row[0])


def _rows(conn: psycopg.Connection, query: str, params: tuple) -> list[dict[str, Any]]:
    cur = conn.execute(query, params)
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def alert_record(settings: Settings, dia_source_id: int, as_of: float | None = None) -> dict[str, Any]:
    """The alert of DiaSource ``dia_source_id`` as the prompt catalog held it at instant ``as_of``.

    Parameters
    ----------
    settings : Settings
        The database.
    dia_source_id : int
        The triggering DiaSource (also the alert ID).
    as_of : float, optional
        Instant in MJD TAI; default: when the alert was issued (the DiaSource's first processing time),
        which regenerates the alert as it was sent.

    Returns
    -------
    dict
        An alert record of the schema :data:`SCHEMA_VERSION`, keys in schema order.

    Raises
    ------
    AlertError
        When the DiaSource is unknown or not in the catalog at ``as_of``.
    """
    # One snapshot for every read, so a concurrent ingest cannot split the alert.
    with read_snapshot(settings) as conn:
        if find_catalog(conn, "prompt") is None:
            raise AlertError("this database has no prompt catalog")
        parts = _read(conn, dia_source_id, as_of, settings.characterization_cutoff)
    log.debug(
        "alert of DiaSource %d: %s",
        dia_source_id,
        {k: len(v) for k, v in parts.items() if isinstance(v, list)},
    )
    return _assemble(parts)


def _read(conn: psycopg.Connection, dia_source_id: int, as_of: float | None, cutoff: float) -> dict[str, Any]:
    """The catalog rows of the alert, as of ``as_of`` (default: issue time), by alert field."""
    first = _issue_time(conn, dia_source_id)
    t = first if as_of is None else float(as_of)
    found = _rows(
        conn,
        "SELECT * FROM prompt.diasource_as_of(%s::float8) WHERE diasourceid = %s "
        "ORDER BY timeprocessedmjdtai DESC LIMIT 1",
        (t, dia_source_id),
    )
    if not found:
        raise AlertError(
            f"DiaSource {dia_source_id} is not in the prompt catalog as of {iso_utc(t)} (MJD TAI {t}); "
            f"its alert was issued at {iso_utc(first)} (MJD TAI {first})"
        )
    source = found[0]
    parts: dict[str, Any] = {"diaSourceId": dia_source_id, "diaSource": ("diaSource", source)}
    object_id, ss_object_id = source.get("diaobjectid"), source.get("ssobjectid")
    if object_id is not None:
        objects = _rows(
            conn,
            "SELECT * FROM prompt.diaobject_as_of(%s::float8) WHERE diaobjectid = %s "
            "ORDER BY validitystartmjdtai DESC LIMIT 1",
            (t, object_id),
        )
        if objects:
            parts["diaObject"] = ("diaObject", objects[0])
        window = (t, object_id, source["midpointmjdtai"] - cutoff, source["midpointmjdtai"])
        previous = _rows(
            conn,
            "SELECT * FROM prompt.diasource_as_of(%s::float8) WHERE diaobjectid = %s "
            "AND midpointmjdtai >= %s AND midpointmjdtai < %s ORDER BY midpointmjdtai, diasourceid",
            window,
        )
        forced = _rows(
            conn,
            "SELECT * FROM prompt.diaforcedsource_as_of(%s::float8) WHERE diaobjectid = %s "
            "AND midpointmjdtai >= %s AND midpointmjdtai < %s ORDER BY midpointmjdtai, diaforcedsourceid",
            window,
        )
        parts["prvDiaSources"] = [("diaSource", r) for r in previous]
        parts["prvDiaForcedSources"] = [("diaForcedSource", r) for r in forced]
    if ss_object_id is not None:
        ss_sources = _rows(
            conn,
            "SELECT * FROM prompt.sssource_as_of(%s::float8) WHERE diasourceid = %s AND ssobjectid = %s",
            (t, dia_source_id, ss_object_id),
        )
        if ss_sources:
            parts["ssSource"] = ("ssSource", _with_sky_frames(ss_sources[0], source))
        ss_objects = _rows(
            conn,
            "SELECT * FROM prompt.ssobject_as_of(%s::float8) WHERE ssobjectid = %s "
            "ORDER BY validitystartmjdtai DESC LIMIT 1",
            (t, ss_object_id),
        )
        if ss_objects:
            parts["mpc_orbits"] = ("mpc_orbits", _orbit(ss_objects[0]))
    return parts


def _assemble(parts: dict[str, Any]) -> dict[str, Any]:
    """The alert record in schema order: sub-records from catalog rows, every other field null/default."""
    records = _records()
    out: dict[str, Any] = {}
    for field in records["alert"]["fields"]:
        name = field["name"]
        value = parts.get(name)
        if isinstance(value, tuple):
            out[name] = _record(records[value[0]], value[0], value[1])
        elif isinstance(value, list):
            out[name] = [_record(records[kind], kind, row) for kind, row in value]
        else:
            out[name] = _convert(field["type"], value)
    return out


def _record(avro_record: dict[str, Any], kind: str, row: dict[str, Any]) -> dict[str, Any]:
    """One sub-record from a catalog row (lower-case column names), matched by field name."""
    aliases = _ALIASES.get(kind, {})
    return {
        f["name"]: _convert(f["type"], row.get(aliases.get(f["name"], f["name"].lower())))
        for f in avro_record["fields"]
    }


def _convert(avro_type: Any, value: Any) -> Any:
    """``value`` as the Avro type wants it (floats rounded to float32); NULL or NaN -> null/default."""
    base, nullable = _split_type(avro_type)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None if nullable else DEFAULTS.get(base)
    if base == "float":
        with np.errstate(over="ignore"):
            return float(np.float32(value))  # what the reader gets back from 4 bytes
    if base == "double":
        return float(value)
    if base in ("int", "long"):
        return int(value)
    if base == "boolean":
        return bool(value)
    if base == "string":
        return str(value)
    return value


def _with_sky_frames(ss_source: dict[str, Any], dia_source: dict[str, Any]) -> dict[str, Any]:
    """The SSSource row, with ecliptic (J2000 mean) and galactic coordinates of its DiaSource if NULL."""
    names = ("ecllambda", "eclbeta", "gallon", "gallat")
    if all(ss_source.get(n) is not None for n in names):
        return ss_source
    from astropy import units as u
    from astropy.coordinates import BarycentricMeanEcliptic, Galactic, SkyCoord

    icrs = SkyCoord(dia_source["ra"] * u.deg, dia_source["dec"] * u.deg, frame="icrs")
    ecl = icrs.transform_to(BarycentricMeanEcliptic())
    gal = icrs.transform_to(Galactic())
    derived = (ecl.lon.deg, ecl.lat.deg, gal.l.deg, gal.b.deg)
    return ss_source | {
        n: float(v) if ss_source.get(n) is None else ss_source[n] for n, v in zip(names, derived, strict=True)
    }


_PROVISIONAL = re.compile(r"^(1[89]|20)(\d\d) ([A-HJ-Y])([A-HJ-Z])(\d*)$")
_CYCLE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _orbit(ss_object: dict[str, Any]) -> dict[str, Any]:
    """An SSObject row as the columns of an MPC orbit: TT epoch and provisional designations."""
    out = dict(ss_object)
    if out.get("epochmjdtai") is not None:
        out["epochmjdtai"] = out["epochmjdtai"] + TT_MINUS_TAI
    designation: str = out.get("designation") or ""
    match = _PROVISIONAL.match(designation.strip()) if designation else None
    n = int(match.group(5) or 0) if match else 0
    if match and n < 620:  # the largest cycle count the packed form can hold
        century, year, half_month, letter, _ = match.groups()
        packed_cycle = f"{n:02d}" if n < 100 else f"{_CYCLE_LETTERS[n // 10 - 10]}{n % 10}"
        out["unpacked_primary_provisional_designation"] = designation.strip()
        out["packed_primary_provisional_designation"] = (
            "IJK"[int(century) - 18] + year + half_month + packed_cycle + letter
        )
    return out


# -- encodings ----------------------------------------------------------------------------------------------
def alert_avro(record: dict[str, Any]) -> bytes:
    """The alert as Rubin sends it: Confluent wire format (magic 0, 4-byte schema ID) + schemaless Avro.

    The record is validated against the schema first. The same record always gives the same bytes.

    Parameters
    ----------
    record : dict
        An alert record, e.g. from :func:`alert_record`.

    Returns
    -------
    bytes
        The packet.

    Raises
    ------
    AlertError
        When the record does not conform to the schema (the first offending field is named).
    """
    schema = alert_schema()
    try:
        fastavro.validation.validate(record, schema.definition, raise_errors=True)
    except fastavro.validation.ValidationError as e:
        first = first_line(e, "invalid")
        raise AlertError(
            f"alert {record.get('diaSourceId')} does not conform to the alert schema: {first}"
        ) from e
    return struct.pack(">bI", WIRE_MAGIC, schema.get_schema_id()) + schema.serialize(record)


def read_alert_avro(data: bytes) -> dict[str, Any]:
    """The alert record in a packet of :func:`alert_avro` (any schema version lsst-alert-packet ships).

    Parameters
    ----------
    data : bytes
        Confluent wire format: magic byte 0, 4-byte big-endian schema ID, schemaless Avro datum.

    Returns
    -------
    dict
        The alert record.
    """
    if len(data) < 5 or data[0] != WIRE_MAGIC:
        raise AlertError("not an alert packet (expected magic byte 0 and a 4-byte schema ID)")
    (schema_id,) = struct.unpack(">I", data[1:5])
    version = divmod(schema_id, 100)  # lsst.alert.packet's IDs: major followed by the 2-digit minor
    try:
        schema = alert_schema(version)
    except AlertError:
        raise AlertError(f"alert packet has unknown schema ID {schema_id}") from None
    if schema.get_schema_id() != schema_id:
        raise AlertError(f"alert packet has unknown schema ID {schema_id}")
    try:
        return schema.deserialize(data[5:])
    except (EOFError, ValueError, IndexError, struct.error) as e:
        raise AlertError(f"alert packet does not decode with schema {version[0]}.{version[1]}: {e}") from e


def alert_json(record: dict[str, Any]) -> str:
    """The alert as JSON: what the Avro packet holds, keys in schema order, null for NaN and infinities.

    Parameters
    ----------
    record : dict
        An alert record, e.g. from :func:`alert_record`.

    Returns
    -------
    str
        Indented JSON (no trailing newline); bytes (cutouts) in base64.
    """
    packet = read_alert_avro(alert_avro(record))  # exactly the Avro content, in schema order
    return json.dumps(_jsonable(packet), indent=2, allow_nan=False, ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return value


def unfilled_fields(catalog_version: int | None = None) -> list[str]:
    """Fields of the alert schema that no column of the prompt catalog fills (:data:`UNFILLED_FIELDS`).

    Parameters
    ----------
    catalog_version : int, optional
        dpdb schema version of the catalog; default: the newest.

    Returns
    -------
    list of str
        ``field`` for the alert's own fields, ``record.field`` for the fields of its sub-records.
    """
    from dpdb.model.felis import latest_version
    from dpdb.model.table import canonical_names

    names = canonical_names(catalog_version or latest_version())
    columns = {table: set(names[table]) for table in _TABLES.values()}
    records = _records()
    out = [f["name"] for f in records["alert"]["fields"] if f["name"] not in _DERIVED]
    for kind, table in _TABLES.items():
        aliases = _ALIASES.get(kind, {})
        for f in records[kind]["fields"]:
            dotted = f"{kind}.{f['name']}"
            if dotted in _DERIVED or aliases.get(f["name"], f["name"].lower()) in columns[table]:
                continue
            out.append(dotted)
    return out
