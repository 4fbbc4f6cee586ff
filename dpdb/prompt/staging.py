"""Reading and validating the Parquet of one visit before it is ingested.

A visit directory holds ``Visit.parquet``, ``CcdVisit.parquet``,
``DiaSource.parquet`` and optionally ``DiaForcedSource.parquet`` and
``SSEphemeris.parquet`` (predicted positions of known SSObjects at the visit
time, as an ephemeris service gives them). Everything is checked with the ETL's
validation (required columns, types, nulls, ranges, repeated keys) before the
visit's transaction starts, so a bad file fails with a one-line error and
writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dpdb.errors import ValidationError
from dpdb.etl.files import ParquetFile, fingerprint, open_parquet
from dpdb.etl.rubin_columns import CcdVisitLookup, table_ccd_visits
from dpdb.etl.validate import TargetTable, check_unique, plan_columns, prepare_batch, target_table
from dpdb.healpix import pixels

__all__ = [
    "ASSIGNED_COLUMNS",
    "EPHEMERIS_COLUMNS",
    "VisitInput",
    "input_target",
    "find_visits",
    "read_visit",
]

ASSIGNED_COLUMNS: dict[str, tuple[str, ...]] = {
    "DiaSource": (
        "diaObjectId",
        "ssObjectId",
        "ssObjectReassocTimeMjdTai",
        "timeProcessedMjdTai",
        "timeWithdrawnMjdTai",
    ),
    "DiaForcedSource": ("diaObjectId", "timeProcessedMjdTai", "timeWithdrawnMjdTai"),
    "SSObject": ("validityStartMjdTai", "validityEndMjdTai"),
    "SSSource": ("timeProcessedMjdTai", "timeWithdrawnMjdTai"),
    "Visit": ("timeProcessedMjdTai",),
    "CcdVisit": ("timeProcessedMjdTai",),
}
"""Columns the prompt ingest fills in (associations and times); input files must not carry them."""

EPHEMERIS_COLUMNS: dict[str, pa.DataType] = {
    "ssObjectId": pa.int64(),
    "ra": pa.float64(),
    "dec": pa.float64(),
    "ephRate": pa.float32(),
    "ephRateRa": pa.float32(),
    "ephRateDec": pa.float32(),
    "ephVmag": pa.float32(),
}
"""SSEphemeris.parquet: ssObjectId, ra and dec are required, the rest optional."""

OWN_PIXEL = "own_pixel"


@dataclass
class VisitInput:
    """One visit's validated input, ready to stage."""

    path: Path
    visit: int
    midpoint: float  # MJD TAI
    center: tuple[float, float]
    files: dict[str, ParquetFile]  # by table name (Visit, CcdVisit, DiaSource, ...)
    tables: dict[str, pa.Table]  # database column names, exact types; sources carry own_pixel

    def field_radius(self, margin_deg: float) -> float:
        """Radius (deg) of a cone around the visit centre holding every measurement, plus ``margin_deg``."""
        radius = 0.0
        for name in ("DiaSource", "DiaForcedSource"):
            t = self.tables.get(name)
            if t is not None and t.num_rows:
                radius = max(radius, float(np.max(_separation(self.center, t["ra"], t["dec"]))))
        return radius + margin_deg


def input_target(table: str, version: int) -> TargetTable:
    """The prompt table ``table`` minus the columns the ingest assigns."""
    target = target_table("prompt", version, "prompt", table)
    return target.without(ASSIGNED_COLUMNS.get(target.canonical, ()))


def find_visits(paths: list[Path]) -> list[Path]:
    """Visit directories named by ``paths``: a visit directory, a file in one, or a tree holding them."""
    found: set[Path] = set()
    for path in paths:
        if path.is_file():
            path = path.parent
        if not path.is_dir():
            raise ValidationError(f"{path}: no such file or directory")
        if (path / "Visit.parquet").is_file():
            found.add(path)
            continue
        below = {p.parent for p in path.rglob("Visit.parquet")}
        if not below:
            raise ValidationError(f"{path}: no visit directories (with Visit.parquet) found")
        found |= below
    return sorted(found)


def read_visit(path: Path, version: int) -> VisitInput:
    """Validate and read one visit directory."""
    tables: dict[str, pa.Table] = {}
    files: dict[str, ParquetFile] = {}
    for name, required in (
        ("Visit", True),
        ("CcdVisit", True),
        ("DiaSource", True),
        ("DiaForcedSource", False),
        ("SSEphemeris", False),
    ):
        file = path / f"{name}.parquet"
        if not file.is_file():
            if required:
                raise ValidationError(f"{path}: missing {name}.parquet")
            if name == "DiaForcedSource":  # no forced photometry: an empty table of the right shape
                target = input_target(name, version)
                fields = [pa.field(c.name, c.arrow_type, c.nullable) for c in target.columns.values()]
                tables[name] = pa.schema(fields).empty_table()
            continue
        files[name] = fingerprint(file)
        if name == "SSEphemeris":
            tables[name] = _read_ephemeris(file)
        else:  # ccdVisitIds derived from visit and detector (Rubin's layout) are the visit's own
            ccds = tables.get("CcdVisit")
            tables[name] = read_table(file, name, version, table_ccd_visits(ccds) if ccds else None)
    visit_rows = tables["Visit"]
    if visit_rows.num_rows != 1:
        raise ValidationError(f"{path}/Visit.parquet: expected one row, found {visit_rows.num_rows}")
    visit = int(visit_rows["visit"][0].as_py())
    for name in ("CcdVisit", "DiaSource", "DiaForcedSource"):
        t = tables.get(name)
        column = "visitid" if name == "CcdVisit" else "visit"
        if t is not None and t.num_rows and not pc.all(pc.equal(t[column], visit)).as_py():
            raise ValidationError(f"{path}/{name}.parquet: rows of a visit other than {visit}")
    for name in ("DiaSource", "DiaForcedSource"):
        t = tables.get(name)
        if t is not None:
            own = pixels(t["ra"].to_numpy(), t["dec"].to_numpy())
            tables[name] = t.append_column(OWN_PIXEL, pa.array(own, pa.int64()))
    center = (float(visit_rows["ra"][0].as_py()), float(visit_rows["dec"][0].as_py()))
    return VisitInput(path, visit, float(visit_rows["expmidptmjd"][0].as_py()), center, files, tables)


def read_table(path: Path, table: str, version: int, ccd_visits: CcdVisitLookup | None = None) -> pa.Table:
    """A whole Parquet file validated against prompt ``table`` (database names, exact types).

    ``ccd_visits`` gives the ccdVisitId of a (visit, detector) pair for files in Rubin's APDB layout,
    which carry no ccdVisitId (dpdb/etl/rubin_columns.py).
    """
    target = input_target(table, version)
    pf = open_parquet(path)
    given = {n.lower(): n for n in pf.schema_arrow.names}
    for col in ASSIGNED_COLUMNS.get(target.canonical, ()):
        if col.lower() in given:
            raise ValidationError(
                f"{path}: column {given[col.lower()]} is assigned by the prompt ingest; "
                "remove it from the file"
            )
    plan = plan_columns(path, pf.schema_arrow, target, ignore_extra=False)
    batches, keys, row0 = [], [], 0
    for raw in pf.iter_batches(batch_size=65_536, columns=plan.read):
        batch = prepare_batch(raw, plan, target, row0, ccd_visits)
        keys.append([batch.column(k).to_numpy(zero_copy_only=False) for k in target.primary_key])
        batches.append(batch)
        row0 += raw.num_rows
    check_unique(path, target, keys)
    schema = pa.schema([pa.field(c.name, c.arrow_type, c.nullable) for c in plan.mapping.values()])
    return pa.Table.from_batches(batches, schema=schema)


def _read_ephemeris(path: Path) -> pa.Table:
    table = open_parquet(path).read()
    given = {n.lower(): n for n in table.column_names}
    arrays, fields = [], []
    for name, dtype in EPHEMERIS_COLUMNS.items():
        src = given.get(name.lower())
        if src is None:
            if name in ("ssObjectId", "ra", "dec"):
                raise ValidationError(f"{path}: missing required column {name} of SSEphemeris")
            arrays.append(pa.nulls(table.num_rows, dtype))
        else:
            try:
                arrays.append(pc.cast(table[src], dtype))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise ValidationError(f"{path}: column {src} cannot be read as {dtype}") from None
        fields.append(pa.field(name.lower(), dtype))
    out = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    for name, lo, hi in (("ra", 0.0, 360.0), ("dec", -90.0, 90.0)):
        values = out[name].to_numpy(zero_copy_only=False)
        bad = ~((values >= lo) & (values <= hi))
        if bad.any():
            raise ValidationError(
                f"{path}: column {name}, row {int(np.flatnonzero(bad)[0])}: outside [{lo}, {hi}]"
            )
    return out


def _separation(center: tuple[float, float], ra: pa.ChunkedArray, dec: pa.ChunkedArray) -> np.ndarray:
    """Angular distance (deg) of each position from ``center`` (haversine)."""
    ra0, dec0 = np.radians(center)
    r, d = np.radians(ra.to_numpy()), np.radians(dec.to_numpy())
    h = np.sin((d - dec0) / 2) ** 2 + np.cos(d) * np.cos(dec0) * np.sin((r - ra0) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1))))
