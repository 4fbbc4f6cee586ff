"""Small BINARY2 results written straight from PostgreSQL's binary rows: no Arrow, no numpy.

PostgreSQL's binary format of ``smallint``, ``integer``, ``bigint``, ``real`` and ``double precision``
is the big-endian value a VOTable BINARY2 stream holds for ``short``, ``int``, ``long``, ``float`` and
``double`` (VOTable 1.4, section 5.5), and ``boolean`` is one byte 0/1 where BINARY2 has ``T``/``F``.
So for a small result of such columns (a cone, a light curve: the common sync query) the service's
event-loop path (:mod:`dpdb.tap.fastsync`) copies each cell's bytes out of the libpq result and
writes the document around them, instead of loading the rows into Python values, then Arrow, then
numpy (about a tenth of a millisecond a query, a twentieth of a cone's time). The document is the
one :func:`dpdb.tap.output.write_result` writes from the same rows as Arrow, byte for byte (the same
FIELDs, INFOs and stream; tests/test_tap_fastsync.py compares them); any other column type, a
text-format result or more than :data:`MAX_ROWS` rows goes the Arrow way.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import pyarrow as pa

__all__ = ["MAX_ROWS", "binary2_body"]

MAX_ROWS = 1_000
"""Results up to this many rows are written here (on the event loop); larger ones the Arrow way."""

_CELLS: dict[int, tuple[pa.DataType, int, bytes]] = {
    21: (pa.int16(), 2, b"\0" * 2),
    23: (pa.int32(), 4, b"\0" * 4),
    20: (pa.int64(), 8, b"\0" * 8),
    700: (pa.float32(), 4, struct.pack(">f", math.nan)),
    701: (pa.float64(), 8, struct.pack(">d", math.nan)),
    16: (pa.bool_(), 1, b"?"),
}
"""PostgreSQL type OID -> (the Arrow type dpdb.query gives it, its binary width, the BINARY2 cell of a
NULL: what dpdb.tap.binary2 writes, 0 or NaN, and ``?`` for a boolean)."""
_BOOL = {b"\x01": b"T", b"\x00": b"F"}


def binary2_body(pgresult: Any, translation: Any, instant: float, read: dict[str, str], params: Any
                 ) -> tuple[bytes, int] | None:  # fmt: skip
    """(the BINARY2 VOTable of ``pgresult``'s rows, rows written) as :func:`dpdb.tap.run.outcome` makes
    it (MAXREC cut, OVERFLOW, INFOs), or None: not a result this module writes (see the module)."""
    from ..query import _canonical_columns
    from .output import ResultInfo, _binary2_document, _field_xml
    from .run import _utc

    n, k = pgresult.ntuples, pgresult.nfields
    if n > MAX_ROWS or not k:
        return None
    cells = []
    for c in range(k):
        found = _CELLS.get(pgresult.ftype(c))
        if found is None or pgresult.fformat(c) != 1:
            return None
        cells.append(found)
    overflow = translation.overflow_possible and (params.maxrec == 0 or n > params.maxrec)
    n = min(n, params.maxrec)
    width = (k + 7) // 8
    top = 8 * width - 1
    get = pgresult.get_value
    out: list[bytes] = []
    for r in range(n):
        mask = 0
        row: list[bytes] = []
        for c, (_, size, null) in enumerate(cells):
            value = get(r, c)
            if value is None:
                mask |= 1 << (top - c)
                row.append(null)
            elif size == 1:
                row.append(_BOOL[value])
            elif len(value) == size:
                row.append(value)
            else:
                return None
        out.append(mask.to_bytes(width, "big"))
        out += row
    canonical = _canonical_columns()
    tables = tuple(translation.tables)
    seen: dict[str, int] = {}
    fields = []
    for c, (dtype, _, _) in enumerate(cells):
        name = pgresult.fname(c).decode()
        name = canonical.get(name, name)
        count = seen.get(name.lower(), 0)
        seen[name.lower()] = count + 1
        fields.append(_field_xml(name, dtype, count, tables, translation.xtypes.get(name.lower())))
    info = ResultInfo(
        query=params.query, sql=translation.sql, as_of_mjd_tai=instant, as_of_utc=_utc(instant),
        releases=read, status="OVERFLOW" if overflow else "OK", maxrec=params.maxrec,
        xtypes=translation.xtypes, tables=translation.tables,
    )  # fmt: skip
    return _binary2_document(info, fields, base64.encodebytes(b"".join(out))), n
