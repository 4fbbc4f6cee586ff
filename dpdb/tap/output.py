"""TAP result documents: VOTable (BINARY2 by default, TABLEDATA, BINARY), CSV, TSV and Parquet,
and the VOTable error document (``QUERY_STATUS=ERROR``).

FIELDs carry the ``ucd``, ``unit``, ``utype``, ``xtype``, ``arraysize`` and description of the felis
column they come from; every result records, in INFO elements (and Parquet metadata), the
instant the query was evaluated at, the releases it read and the dpdb version, so a saved
result says how to reproduce it (docs/architecture.md, decision 12).
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from felis.datamodel import Column as FelisColumn

__all__ = ["FORMATS", "ResultInfo", "resolve_format", "write_result", "error_votable"]

VOTABLE_MIME = "application/x-votable+xml"

FORMATS: dict[str, tuple[str, str]] = {
    # RESPONSEFORMAT value -> (internal name, MIME type of the response)
    "votable": ("binary2", VOTABLE_MIME),
    "application/x-votable+xml": ("binary2", VOTABLE_MIME),
    "text/xml": ("binary2", "text/xml"),
    "votable/b2": ("binary2", VOTABLE_MIME),
    "application/x-votable+xml;serialization=binary2": ("binary2", VOTABLE_MIME + ";serialization=BINARY2"),
    "votable/td": ("tabledata", VOTABLE_MIME),
    "application/x-votable+xml;serialization=tabledata": (
        "tabledata", VOTABLE_MIME + ";serialization=TABLEDATA"
    ),
    "votable/b": ("binary", VOTABLE_MIME),
    "application/x-votable+xml;serialization=binary": ("binary", VOTABLE_MIME + ";serialization=BINARY"),
    "csv": ("csv", "text/csv;header=present"),
    "text/csv": ("csv", "text/csv;header=present"),
    "text/csv;header=present": ("csv", "text/csv;header=present"),
    "tsv": ("tsv", "text/tab-separated-values"),
    "text/tab-separated-values": ("tsv", "text/tab-separated-values"),
    "parquet": ("parquet", "application/vnd.apache.parquet"),
    "application/vnd.apache.parquet": ("parquet", "application/vnd.apache.parquet"),
    "application/x-parquet": ("parquet", "application/vnd.apache.parquet"),
}  # fmt: skip


def resolve_format(value: str | None) -> tuple[str, str] | None:
    """(writer, MIME type) of a RESPONSEFORMAT/FORMAT value; None if unsupported."""
    if not value:
        return FORMATS["votable"]
    key = value.strip().lower().replace(" ", "")
    return FORMATS.get(key)


@dataclass
class ResultInfo:
    """What a result says about how it was made."""

    query: str
    sql: str
    as_of_mjd_tai: float
    as_of_utc: str
    releases: dict[str, str] = field(default_factory=dict)
    """Schema named in the query -> what it read (``current`` -> ``dr2``)."""
    status: str = "OK"  # OK or OVERFLOW
    maxrec: int | None = None
    xtypes: dict[str, str] = field(default_factory=dict)
    tables: list[tuple[str, str]] = field(default_factory=list)
    citation: str | None = None
    """The identifier of the result's citation (CITE=true), see :meth:`dpdb.Archive.cite`."""

    def infos(self) -> list[tuple[str, str, str]]:
        from .._version import code_version

        read = ", ".join(f"{k}={v}" if k != v else k for k, v in sorted(self.releases.items())) or "none"
        note = "Identifier citing this result; `dpdb cite resolve` checks the rows are unchanged"
        cited = [("dpdb_citation", self.citation, note)] if self.citation else []
        return [
            ("QUERY_STATUS", self.status, ""),
            *cited,
            ("QUERY", self.query, "The ADQL query"),
            ("dpdb_sql", self.sql, "The PostgreSQL it ran as"),
            ("dpdb_as_of_mjd_tai", repr(self.as_of_mjd_tai),
             "Instant the query was evaluated at (MJD TAI); send it as ASOF to get these rows again"),
            ("dpdb_as_of_utc", self.as_of_utc, "The same instant in UTC"),
            ("dpdb_releases", read, "Catalog schemas read (current/previous resolved at that instant)"),
            ("dpdb_version", code_version(), "dpdb software version"),
        ]  # fmt: skip


# -- column metadata from felis ---------------------------------------------------------------------


@functools.cache
def _felis_columns() -> dict[str, dict[str, FelisColumn]]:
    from ..model.felis import latest_version, load_felis

    out: dict[str, dict[str, FelisColumn]] = {}
    for table in load_felis(latest_version()).tables:
        out[table.name.lower()] = {c.name.lower(): c for c in table.columns}
    return out


def _felis_column(name: str, tables: list[tuple[str, str]]) -> FelisColumn | None:
    columns = _felis_columns()
    for _, table in tables:
        found = columns.get(table, {}).get(name.lower())
        if found is not None:
            return found
    candidates = [cols[name.lower()] for cols in columns.values() if name.lower() in cols]
    if candidates and len({(c.ivoa_ucd, c.ivoa_unit or c.fits_tunit) for c in candidates}) == 1:
        return candidates[0]
    return None


# -- writing ----------------------------------------------------------------------------------------


def _plain(table: pa.Table) -> pa.Table:
    """Types every writer takes: timestamps and dates as ISO strings, durations as seconds."""
    columns, names = [], []
    for name, column in zip(table.column_names, table.columns, strict=True):
        t = column.type
        if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
            values = [None if v is None else v.isoformat() for v in column.to_pylist()]
            column = pa.chunked_array([pa.array(values, pa.string())])
        elif pa.types.is_duration(t):
            column = pc.divide(column.cast(pa.int64()).cast(pa.float64()), 1e6)
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
            column = pa.chunked_array(
                [pa.array([None if v is None else v.hex() for v in column.to_pylist()])]
            )
        columns.append(column)
        names.append(name)
    return pa.Table.from_arrays(columns, names=names)


def write_result(result: pa.Table, info: ResultInfo, writer: str) -> bytes:
    """The result document in format ``writer`` (binary2, tabledata, binary, csv, tsv, parquet)."""
    result = _plain(result)
    if writer in ("csv", "tsv"):
        return _write_text(result, "," if writer == "csv" else "\t")
    if writer == "parquet":
        return _write_parquet(result, info)
    return _write_votable(result, info, writer)


def _write_text(result: pa.Table, delimiter: str) -> bytes:
    import pyarrow.csv as pcsv

    flat = []
    for column in result.columns:
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            values = [None if v is None else " ".join(repr(x) for x in v) for v in column.to_pylist()]
            column = pa.chunked_array([pa.array(values, pa.string())])
        flat.append(column)
    buf = io.BytesIO()
    options = pcsv.WriteOptions(delimiter=delimiter, quoting_style="needed")
    pcsv.write_csv(pa.Table.from_arrays(flat, names=result.column_names), buf, options)
    return buf.getvalue()


def _write_parquet(result: pa.Table, info: ResultInfo) -> bytes:
    import pyarrow.parquet as pq

    meta = {f"dpdb:{name}": value for name, value, _ in info.infos()}
    fields = []
    for f in result.schema:
        col = _felis_column(f.name, info.tables)
        md = {}
        if col is not None:
            for key, attr in (("unit", "ivoa_unit"), ("ucd", "ivoa_ucd"), ("description", "description")):
                value = getattr(col, attr, None) or (
                    getattr(col, "fits_tunit", None) if key == "unit" else None
                )
                if value:
                    md[key] = str(value)
        fields.append(f.with_metadata(md) if md else f)
    schema = pa.schema(fields, metadata={**(result.schema.metadata or {}), **meta})
    buf = io.BytesIO()
    # dictionary encoding only for text: on measured values (floats, IDs) it costs 4x the write time
    # for nothing (every value differs); snappy, which every Parquet reader has (TOPCAT's too)
    text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    pq.write_table(result.cast(schema), buf, use_dictionary=text, compression="snappy")
    return buf.getvalue()


def _column_values(column: pa.ChunkedArray) -> tuple[np.ndarray, str | None]:
    """numpy values for astropy (masked where NULL) and a VOTable arraysize for arrays."""
    t = column.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        pylist = column.to_pylist()
        lengths = {len(v) for v in pylist if v is not None}
        value_type = t.value_type.to_pandas_dtype()
        if len(lengths) == 1 and None not in pylist and pylist:
            return np.array(pylist, dtype=value_type), str(lengths.pop())
        cells = np.empty(len(pylist), dtype=object)
        for i, v in enumerate(pylist):
            cells[i] = np.array(v if v is not None else [], dtype=value_type)
        return cells, "*"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        pylist = column.to_pylist()
        mask = [v is None for v in pylist]
        values = (
            np.array(["" if v is None else v for v in pylist], dtype=str) if pylist else np.array([], str)
        )
        return (np.ma.masked_array(values, mask=mask) if any(mask) else values), "*"
    if column.null_count:
        filled = column.fill_null(False if pa.types.is_boolean(t) else 0).to_numpy(zero_copy_only=False)
        mask = column.is_null().to_numpy(zero_copy_only=False)
        if pa.types.is_floating(t):
            filled = filled.copy()
            filled[mask] = np.nan
        return np.ma.masked_array(filled, mask=mask), None
    return column.to_numpy(zero_copy_only=False), None


def _write_votable(result: pa.Table, info: ResultInfo, writer: str) -> bytes:
    from astropy.io.votable.tree import Field, Info, Resource, TableElement, VOTableFile

    if writer == "binary2":
        from .binary2 import binary2_stream

        stream = binary2_stream(result)
        if stream is not None:  # every column numeric, boolean or ASCII text: rows built with numpy
            seen_fast: dict[str, int] = {}
            tables = tuple(info.tables)
            fast_fields = []
            for name, column in zip(result.column_names, result.columns, strict=True):
                count = seen_fast.get(name.lower(), 0)
                seen_fast[name.lower()] = count + 1
                xtype = info.xtypes.get(name.lower())
                fast_fields.append(_field_xml(name, column.type, count, tables, xtype))
            return _binary2_document(info, fast_fields, stream)
    votable = VOTableFile(version="1.4")
    resource = Resource(type="results")
    votable.resources.append(resource)
    for name, value, content in info.infos():
        item = Info(name=name, value=value, ID=f"info_{name}")
        if content:
            item.content = content
        resource.infos.append(item)
    arrays = []
    fields = []
    seen: dict[str, int] = {}
    for name, column in zip(result.column_names, result.columns, strict=True):
        values, arraysize = _column_values(column)
        arrays.append(values)
        f = _field(votable, name, column.type, arraysize, info, seen, Field)
        if f.datatype == "char" and any(not v.isascii() for v in column.to_pylist() if isinstance(v, str)):
            f.datatype = "unicodeChar"
        fields.append(f)
    table = TableElement(votable, name="result")
    resource.tables.append(table)
    table.fields.extend(fields)
    table.create_arrays(len(result))
    for field_, values in zip(fields, arrays, strict=True):
        table.array[field_.ID] = values
        if isinstance(values, np.ma.MaskedArray):
            table.array.mask[field_.ID] = values.mask
    table.format = writer
    buf = io.BytesIO()
    votable.to_xml(buf, tabledata_format=writer)
    return _verbatim_units(buf.getvalue(), fields)


@functools.lru_cache(maxsize=4096)
def _field_xml(name: str, dtype: pa.DataType, count: int, tables: tuple[tuple[str, str], ...],
               xtype: str | None) -> str:  # fmt: skip
    """The FIELD element of a BINARY2 result column (the ``count``-th of that name), written once."""
    from types import SimpleNamespace

    from astropy.io.votable.tree import Field, VOTableFile

    info = SimpleNamespace(tables=list(tables), xtypes={name.lower(): xtype} if xtype else {})
    f = _field(VOTableFile(version="1.4"), name, dtype, None, info, {name.lower(): count}, Field)
    field_attrs = [("ID", f.ID), ("unit", getattr(f, "_dpdb_unit", None)), ("arraysize", f.arraysize),
                   ("datatype", f.datatype), ("name", f.name), ("ucd", f.ucd), ("utype", f.utype),
                   ("xtype", f.xtype)]  # fmt: skip
    text = " ".join(f"{k}={quoteattr(str(v))}" for k, v in field_attrs if v)
    if f.description:
        return f"   <FIELD {text}>\n    <DESCRIPTION>{escape(f.description)}</DESCRIPTION>\n   </FIELD>\n"
    return f"   <FIELD {text}/>\n"


def _binary2_document(info: ResultInfo, fields: list[str], stream: bytes) -> bytes:
    """The VOTable of a BINARY2 result, written directly (astropy's tree costs milliseconds per query)."""
    out = [
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<VOTABLE version="1.4" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xmlns="http://www.ivoa.net/xml/VOTable/v1.3" '
        'xsi:schemaLocation="http://www.ivoa.net/xml/VOTable/v1.3 http://www.ivoa.net/xml/VOTable/v1.3">\n'
        ' <RESOURCE type="results">\n'
    ]
    for name, value, content in info.infos():
        attrs = f"ID={quoteattr('info_' + name)} name={quoteattr(name)} value={quoteattr(value)}"
        out.append(f"  <INFO {attrs}>{escape(content)}</INFO>\n" if content else f"  <INFO {attrs}/>\n")
    out.append('  <TABLE ID="result" name="result">\n')
    out += fields
    out.append('   <DATA>\n    <BINARY2>\n     <STREAM encoding="base64">\n')
    tail = "     </STREAM>\n    </BINARY2>\n   </DATA>\n  </TABLE>\n </RESOURCE>\n</VOTABLE>\n"
    return "".join(out).encode() + stream + tail.encode()


def _verbatim_units(text: bytes, fields: list) -> bytes:
    """Put each FIELD's unit in as felis (and so TAP_SCHEMA) spells it: astropy would rewrite
    ``mas/yr`` as ``mas.yr**-1``, and clients compare the two as text (taplint MDQ-DRUN)."""
    head_end = text.find(b"<DATA>")
    head, rest = (text, b"") if head_end < 0 else (text[:head_end], text[head_end:])
    for f in fields:
        unit = getattr(f, "_dpdb_unit", None)
        if unit:
            tag = f"<FIELD ID={quoteattr(f.ID)}".encode()
            head = head.replace(tag, tag + f" unit={quoteattr(unit)}".encode(), 1)
    return head + rest


_VOTABLE_TYPES = {
    "bool": "boolean", "int8": "short", "int16": "short", "int32": "int", "int64": "long",
    "uint8": "unsignedByte",
    "uint16": "int", "uint32": "long", "halffloat": "float", "float": "float", "double": "double",
    "string": "char", "large_string": "char",
}  # fmt: skip


def _field(votable, name, dtype, arraysize, info, seen, field_cls):
    base = dtype.value_type if hasattr(dtype, "value_type") else dtype
    datatype = _VOTABLE_TYPES.get(str(base), "char")
    count = seen.get(name.lower(), 0)
    seen[name.lower()] = count + 1
    ident = f"{name}_{count}" if count else name
    col = _felis_column(name, info.tables)
    xtype = info.xtypes.get(name.lower()) or (
        getattr(col, "votable_xtype", None) if col is not None else None
    )
    if datatype == "char":
        arraysize = "*"
    kwargs = {"name": name, "ID": _xml_id(ident), "datatype": datatype}
    if arraysize:
        kwargs["arraysize"] = arraysize
    if xtype:
        kwargs["xtype"] = xtype
        if xtype in ("point", "circle", "polygon"):
            kwargs["datatype"] = "double"
    unit = None
    if col is not None:
        unit = getattr(col, "ivoa_unit", None) or getattr(col, "fits_tunit", None)
        if getattr(col, "ivoa_ucd", None):
            kwargs["ucd"] = col.ivoa_ucd
        if getattr(col, "votable_utype", None):
            kwargs["utype"] = col.votable_utype
    elif xtype in ("point", "circle", "polygon"):
        unit = "deg"
    f = field_cls(votable, **kwargs)
    f._dpdb_unit = str(unit) if unit else None  # written verbatim by _verbatim_units
    if col is not None and getattr(col, "description", None):
        f.description = col.description
    return f


def _xml_id(text: str) -> str:
    clean = "".join(c if c.isalnum() or c in "_-." else "_" for c in text)
    return clean if clean[:1].isalpha() or clean[:1] == "_" else f"_{clean}"


def error_votable(message: str, *, query: str | None = None) -> bytes:
    """The TAP error document: a VOTable whose results RESOURCE holds INFO QUERY_STATUS=ERROR."""
    from .._version import code_version

    extra = f'\n    <INFO name="QUERY" value={quoteattr(query)}/>' if query else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        '  <RESOURCE type="results">\n'
        f'    <INFO name="QUERY_STATUS" value="ERROR">{escape(message)}</INFO>{extra}\n'
        f'    <INFO name="dpdb_version" value={quoteattr(code_version())}/>\n'
        "  </RESOURCE>\n"
        "</VOTABLE>\n"
    ).encode()
