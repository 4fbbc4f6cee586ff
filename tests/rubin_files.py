"""Parquet files in Rubin's as-built layouts, generated at test time from lsst-sdm-schemas' YAML.

Every column of the named table of ``apdb.yaml`` / ``dp1.yaml`` is written, in YAML order, with the
Arrow type felis' datatype means (float: float32, double: float64, short: int16, int: int32, long:
int64, char/string: string within ``length``, timestamp: timestamp[us] for ``precision: 6``) and
the YAML's nullability. Values are plausible: positions in the demo's footprint (around ra 150,
dec 2), fluxes in nJy, times in MJD TAI, ids unique; the caller sets keys and links.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import numpy as np
import pyarrow as pa
import yaml
from felis.datamodel import Column, Schema, Table

__all__ = ["rubin_schema", "rubin_table", "arrow_type", "generate", "FOOTPRINT"]

FOOTPRINT = (149.0, 151.0, 1.0, 3.0)
"""ra_min, ra_max, dec_min, dec_max (deg): inside the demo survey's 30 deg² around (150, 2)."""

_TYPES = {
    "boolean": pa.bool_(),
    "byte": pa.int8(),
    "short": pa.int16(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "char": pa.string(),
    "string": pa.string(),
    "unicode": pa.string(),
    "text": pa.string(),
}


@functools.cache
def rubin_schema(name: str) -> Schema:
    """``apdb.yaml`` or ``dp1.yaml`` of the installed lsst-sdm-schemas, read with felis."""
    text = (resources.files("lsst.sdm.schemas") / name).read_text()
    return Schema.model_validate(yaml.safe_load(text), context={"id_generation": True})


def rubin_table(schema: str, table: str) -> Table:
    for t in rubin_schema(schema).tables:
        if t.name == table:
            return t
    raise KeyError(f"{schema} has no table {table}")


def arrow_type(col: Column) -> pa.DataType:
    """The Arrow type a Rubin writer gives a felis column."""
    kind = col.datatype.value
    if kind == "timestamp":
        precision = getattr(col, "precision", None)
        return pa.timestamp("us" if precision is None or precision > 3 else "ms")
    size = getattr(col, "votable_arraysize", None)
    if kind not in ("char", "string", "unicode", "text") and size not in (None, "1"):
        raise NotImplementedError(f"{col.name}: numeric arraysize {size} (none in the tables tested)")
    return _TYPES[kind]


def _values(col: Column, n: int, rng: np.random.Generator, t0: float) -> pa.Array:
    name, kind = col.name, col.datatype.value
    typ = arrow_type(col)
    low = name.lower()
    if kind == "boolean":
        return pa.array(rng.random(n) < 0.1, typ)
    if kind in ("char", "string", "unicode", "text"):
        length = col.length or 8
        if low == "band" or low.endswith("_band") or low.endswith("band"):
            return pa.array(rng.choice(list("ugrizy"), n).tolist(), typ)
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        return pa.array(["".join(rng.choice(letters, rng.integers(1, length + 1))) for _ in range(n)], typ)
    if kind == "timestamp":
        mjd = t0 + rng.random(n)
        us = ((mjd - 40587.0) * 86_400e6).astype("int64")  # MJD 40587 = 1970-01-01 (on the same clock)
        return pa.array(us.astype("datetime64[us]")).cast(typ)
    if kind in ("byte", "short", "int", "long"):
        return pa.array(rng.integers(0, 100, n), typ)
    ra_lo, ra_hi, dec_lo, dec_hi = FOOTPRINT
    ucd = (col.ivoa_ucd or "").lower()
    if "stat." in ucd or low.endswith("err") or "cov" in low or "sigma" in low:
        v = rng.uniform(1e-6, 1e-3, n) if "pos.eq" in ucd else rng.uniform(1.0, 50.0, n)
    elif "pos.eq.ra" in ucd:
        v = rng.uniform(ra_lo, ra_hi, n)
    elif "pos.eq.dec" in ucd:
        v = rng.uniform(dec_lo, dec_hi, n)
    elif "mjd" in low:
        v = t0 + rng.random(n)
    elif "flux" in low:
        v = rng.normal(5_000.0, 1_500.0, n)
    elif "mag" in low:
        v = rng.uniform(16.0, 25.0, n)
    else:
        v = rng.uniform(0.0, 1.0, n)
    return pa.array(v, typ)


def generate(
    schema: str,
    table: str,
    n: int,
    *,
    seed: int = 0,
    t0: float = 60_600.0,
    values: dict[str, Any] | None = None,
    null_fraction: float = 0.1,
    no_nulls: frozenset[str] = frozenset(),
) -> pa.Table:
    """``n`` rows of Rubin's ``table`` from YAML ``schema``, every column, Rubin's types and nullability.

    ``values`` sets columns (keys, links, positions); a nullable column not set and not in ``no_nulls``
    gets ``null_fraction`` of nulls, as Rubin's files have.
    """
    rng = np.random.default_rng(seed)
    values = values or {}
    arrays, fields = [], []
    for col in rubin_table(schema, table).columns:
        typ = arrow_type(col)
        if col.name in values:
            given = values[col.name]
            arr = given.cast(typ) if isinstance(given, pa.Array) else pa.array(given, typ)
        else:
            arr = _values(col, n, rng, t0)
            if col.nullable and col.name not in no_nulls and null_fraction:
                mask = rng.random(n) < null_fraction
                arr = pa.array(arr.to_pylist(), typ, mask=mask) if mask.any() else arr
        arrays.append(arr)
        fields.append(pa.field(col.name, typ, nullable=bool(col.nullable)))
    # a timestamp and its MJD twin (dp1's expMidpt/expMidptMJD) tell the same instant, as in Rubin's files
    names = [f.name for f in fields]
    for i, f in enumerate(fields):
        twin = f"{f.name}MJD"
        if pa.types.is_timestamp(f.type) and twin in names and f.name not in values:
            mjd = arrays[names.index(twin)].to_numpy(zero_copy_only=False).astype(float)
            us = np.round((np.nan_to_num(mjd) - 40587.0) * 86_400e6).astype("int64")
            arrays[i] = pa.array(us.astype("datetime64[us]"), mask=np.isnan(mjd)).cast(f.type)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
