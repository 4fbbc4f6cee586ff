"""VOSI capabilities, availability and tableset, and the DALI examples document."""

from __future__ import annotations

import datetime as dt
from xml.sax.saxutils import escape, quoteattr

from .output import FORMATS
from .run import Limits, TapError

__all__ = ["capabilities_xml", "availability_xml", "tables_xml", "examples_html", "EXAMPLES"]

_GEO = ("POINT", "CIRCLE", "BOX", "POLYGON", "CONTAINS", "INTERSECTS", "DISTANCE", "AREA", "COORD1", "COORD2",
        "COORDSYS")  # fmt: skip

# ``CURRENT`` is an ADQL reserved word: the examples quote the schema ("current") so that strict ADQL
# parsers (TOPCAT's, taplint's) accept them; this service also takes it unquoted.
EXAMPLES: list[tuple[str, str, str]] = [
    ("cone", "Cone search: objects within 3 arcminutes of a position (uses the q3c index)",
     "SELECT TOP 100 objectId, coord_ra, coord_dec, r_psfFlux FROM \"current\".Object\n"
     "WHERE 1 = CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', 150.0, 2.0, 0.05))"),
    ("polygon", "Polygon search in the prompt catalog",
     "SELECT diaObjectId, ra, dec, nDiaSources FROM prompt.DiaObject\n"
     "WHERE 1 = CONTAINS(POINT('ICRS', ra, dec),\n"
     "                   POLYGON('ICRS', 149.9, 1.9, 150.1, 1.9, 150.1, 2.1, 149.9, 2.1))"),
    ("lightcurve", "Light curve: forced photometry of one object, joined Object-ForcedSource",
     "SELECT o.objectId, f.band, f.psfFlux, f.psfFluxErr FROM \"current\".Object AS o\n"
     "JOIN \"current\".ForcedSource AS f ON f.objectId = o.objectId\n"
     "WHERE o.objectId IN (SELECT TOP 1 objectId FROM \"current\".Object ORDER BY objectId)"),
    ("aggregate", "Aggregate over a sky region: objects and mean flux per band in a 1-degree circle",
     "SELECT COUNT(*) AS n, AVG(r_psfFlux) AS mean_r FROM \"current\".Object\n"
     "WHERE 1 = CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', 150.0, 2.0, 1.0))"),
    ("crossmatch", "Cross-match an uploaded list (UPLOAD=mine,param:mine) with the current release",
     "SELECT m.ra, m.dec, o.objectId FROM TAP_UPLOAD.mine AS m JOIN \"current\".Object AS o\n"
     "ON 1 = CONTAINS(POINT('ICRS', o.coord_ra, o.coord_dec), CIRCLE('ICRS', m.ra, m.dec, 1/3600.))"),
    ("asof", "Time travel: the prompt catalog as of an instant (send ASOF=2025-11-23T05:00:00 with it)",
     "SELECT TOP 10 diaObjectId, nDiaSources, ra, dec FROM prompt.DiaObject ORDER BY diaObjectId"),
]  # fmt: skip


def capabilities_xml(base: str, limits: Limits) -> str:
    formats = []
    seen = set()
    for key, (writer, mime) in FORMATS.items():
        if "/" not in key or writer in seen:
            continue
        seen.add(writer)
        alias = {"binary2": "votable", "tabledata": "votable/td", "binary": "votable/b"}.get(writer, writer)
        formats.append(f"<outputFormat><mime>{escape(mime)}</mime><alias>{alias}</alias></outputFormat>")
    geo = "".join(f"<feature><form>{f}</form></feature>" for f in _GEO)
    lang = "".join(f'<version ivo-id="ivo://ivoa.net/std/ADQL#v{v}">{v}</version>' for v in ("2.0", "2.1"))
    # HTTP Basic logins (dpdb.tap.auth) are declared as the BasicAA security method, so clients such
    # as pyvo's AuthSession send credentials; an anonymous interface too when the service allows it
    # (one interface: an empty securityMethod is anonymous access, VOResource 1.1)
    anonymous = "<securityMethod/>" if limits.anonymous else ""
    tap_interfaces = (
        f'<interface xsi:type="vs:ParamHTTP" role="std" version="1.1">\n<accessURL use="base">{escape(base)}'
        f'</accessURL>{anonymous}<securityMethod standardID="ivo://ivoa.net/sso#BasicAA"/></interface>'
    )
    return f"""<vosi:capabilities xmlns:vosi="http://www.ivoa.net/xml/VOSICapabilities/v1.0"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1"
 xmlns:tr="http://www.ivoa.net/xml/TAPRegExt/v1.0">
<capability standardID="ivo://ivoa.net/std/TAP" xsi:type="tr:TableAccess">
{tap_interfaces}
<language><name>ADQL</name>{lang}
<description>ADQL 2.1 on PostgreSQL: geometry on q3c and pg_sphere.</description>
<languageFeatures type="ivo://ivoa.net/std/TAPRegExt#features-adqlgeo">{geo}</languageFeatures>
<languageFeatures type="ivo://ivoa.net/std/TAPRegExt#features-adql-offset"><feature><form>OFFSET</form></feature></languageFeatures>
</language>
{"".join(formats)}
<uploadMethod ivo-id="ivo://ivoa.net/std/TAPRegExt#upload-inline"/>
<uploadMethod ivo-id="ivo://ivoa.net/std/TAPRegExt#upload-http"/>
<retentionPeriod><default>{int(limits.destruction_days * 86400)}</default></retentionPeriod>
<executionDuration><default>{limits.async_max_duration_s}</default><hard>{limits.async_max_duration_s}</hard></executionDuration>
<outputLimit><default unit="row">{limits.default_maxrec}</default>
<hard unit="row">{limits.max_maxrec}</hard></outputLimit>
<uploadLimit><hard unit="byte">{limits.upload_max_bytes}</hard></uploadLimit>
</capability>
<capability standardID="ivo://ivoa.net/std/VOSI#capabilities">
<interface xsi:type="vs:ParamHTTP">
<accessURL use="full">{escape(base)}/capabilities</accessURL></interface></capability>
<capability standardID="ivo://ivoa.net/std/VOSI#availability">
<interface xsi:type="vs:ParamHTTP">
<accessURL use="full">{escape(base)}/availability</accessURL></interface></capability>
<capability standardID="ivo://ivoa.net/std/VOSI#tables-1.1">
<interface xsi:type="vs:ParamHTTP" version="1.1">
<accessURL use="base">{escape(base)}/tables</accessURL></interface></capability>
<capability standardID="ivo://ivoa.net/std/DALI#examples">
<interface xsi:type="vs:ParamHTTP">
<accessURL use="full">{escape(base)}/examples</accessURL></interface></capability>
</vosi:capabilities>
"""


def availability_xml(archive) -> str:
    try:
        archive.query_arrow("SELECT 1 AS up")
        up, note = "true", "dpdb TAP service: accepting queries"
    except Exception as e:  # noqa: BLE001 - availability reports any failure
        up, note = "false", f"the database does not answer: {str(e).splitlines()[0][:200]}"
    return (
        '<vosi:availability xmlns:vosi="http://www.ivoa.net/xml/VOSIAvailability/v1.0">'
        f"<vosi:available>{up}</vosi:available><vosi:note>{escape(note)}</vosi:note></vosi:availability>"
    )


def _rows(archive, sql: str) -> list[dict]:
    return archive.query_arrow(sql).to_pylist()


_COLUMNS_SQL = (
    "SELECT table_name, column_name, description, unit, ucd, utype, datatype, arraysize, xtype, principal, "
    "indexed, std FROM tap_schema.columns ORDER BY table_name, column_index, column_name"
)
_KEYS_SQL = (
    "SELECT k.key_id, k.from_table, k.target_table, c.from_column, c.target_column "
    "FROM tap_schema.keys k JOIN tap_schema.key_columns c ON c.key_id = k.key_id"
)


def tables_xml(archive, only: str | None, detail: bool) -> str:
    """The VOSI tableset from TAP_SCHEMA (read through the archive's query path)."""
    schemas = _rows(
        archive, "SELECT schema_name, description FROM tap_schema.schemas ORDER BY schema_index, schema_name"
    )
    tables = _rows(archive, "SELECT schema_name, table_name, table_type, description FROM tap_schema.tables "
                            "ORDER BY table_index, table_name")  # fmt: skip
    if only is not None:
        tables = [t for t in tables if t["table_name"].lower() == only.lower()]
        if not tables:
            raise TapError(f"no table {only} (see /tap/tables)", status=404)
    columns: dict[str, list[dict]] = {}
    keys: dict[str, list[dict]] = {}
    if detail or only:
        for c in _rows(archive, _COLUMNS_SQL):
            columns.setdefault(c["table_name"], []).append(c)
        for k in _rows(archive, _KEYS_SQL):
            keys.setdefault(k["from_table"], []).append(k)

    def table_xml(t: dict) -> str:
        cols = "".join(_column_xml(c) for c in columns.get(t["table_name"], []))
        fks = "".join(
            f"<foreignKey><targetTable>{escape(k['target_table'])}</targetTable><fkColumn>"
            f"<fromColumn>{escape(k['from_column'])}</fromColumn><targetColumn>{escape(k['target_column'])}"
            "</targetColumn></fkColumn></foreignKey>"
            for k in keys.get(t["table_name"], [])
        )
        return (f'<table type="{escape(t["table_type"] or "table")}"><name>{escape(t["table_name"])}</name>'
                f"{_desc(t['description'])}{cols}{fks}</table>")  # fmt: skip

    ns = (
        'xmlns:vosi="http://www.ivoa.net/xml/VOSITables/v1.0" '
        'xmlns:vs="http://www.ivoa.net/xml/VODataService/v1.1" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    )
    if only is not None:
        return f"<vosi:table {ns} " + table_xml(tables[0]).removeprefix("<table ").replace(
            "</table>", "</vosi:table>"
        )
    body = []
    for s in schemas:
        mine = "".join(table_xml(t) for t in tables if t["schema_name"] == s["schema_name"])
        body.append(
            f"<schema><name>{escape(s['schema_name'])}</name>{_desc(s['description'])}{mine}</schema>"
        )
    return f"<vosi:tableset {ns}>{''.join(body)}</vosi:tableset>"


def _desc(text: str | None) -> str:
    return f"<description>{escape(text)}</description>" if text else ""


def _column_xml(c: dict) -> str:
    size = f' arraysize="{escape(c["arraysize"])}"' if c.get("arraysize") else ""
    xtype = f" extendedType={quoteattr(c['xtype'])}" if c.get("xtype") else ""
    flags = "".join(f"<flag>{f}</flag>" for f in ("indexed", "principal", "std") if c.get(f))
    return (
        f"<column><name>{escape(c['column_name'])}</name>{_desc(c['description'])}"
        + (f"<unit>{escape(c['unit'])}</unit>" if c.get("unit") else "")
        + (f"<ucd>{escape(c['ucd'])}</ucd>" if c.get("ucd") else "")
        + (f"<utype>{escape(c['utype'])}</utype>" if c.get("utype") else "")
        + f'<dataType xsi:type="vs:VOTableType"{size}{xtype}>{escape(c["datatype"])}</dataType>'
        + f"{flags}</column>"
    )


def examples_html(base: str) -> str:
    """DALI examples: each query in RDFa (property="query"), as TOPCAT and pyvo read them."""
    items = "".join(
        f'<div typeof="example" id="{name}" resource="#{name}"><h2 property="name">{escape(title)}</h2>'
        f'<pre property="query">{escape(query)}</pre></div>\n'
        for name, title, query in EXAMPLES
    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html>\n'
        '<html xmlns="http://www.w3.org/1999/xhtml" vocab="http://www.ivoa.net/rdf/examples#">'
        f"<head><title>dpdb TAP examples</title></head><body><h1>Example queries ({stamp})</h1>"
        f'<p>Send them to <a href="{escape(base)}/sync">{escape(base)}/sync</a> with LANG=ADQL.</p>\n'
        f"{items}</body></html>"
    )
