"""Rubin's as-built Parquet (lsst-sdm-schemas ``apdb.yaml``, ``dp1.yaml``) onto dpdb's tables.

dpdb's felis schema takes Rubin's as-built column names (docs/architecture.md, decision 3), so a
column of a file written with Rubin's schemas loads by its name (matched case-insensitively, types
cast with range checks by ``etl/validate.py``). This module is the one place that knows where the
two layouts differ in substance:

* **Derived columns** (:data:`DERIVATIONS`): a dpdb column a Rubin file does not carry but that
  follows from columns it does carry. ``ccdVisitId`` (the DPDD's link from a measurement to its
  CcdVisit, part of ForcedSource's primary key) comes from ``visit`` and ``detector``;
  ``expMidptMJD`` and ``obsStartMJD`` come from Rubin's TAI timestamps ``expMidpt`` and
  ``obsStart``.
* **Columns held in another form**: a Rubin column that is the source of a derivation is not an
  unknown column even when dpdb has no column of its name (``expMidpt`` is held as
  ``expMidptMJD``). When a file carries both forms, they must agree (row by row), so nothing a
  file says is silently dropped.

Every other column a file has and dpdb lacks is unknown (refused unless ``--ignore-extra``, which
skips it and says so); every nullable dpdb column a file lacks is NULL. ``schema/DPDD_COVERAGE.md``
lists the outcome column by column for each of Rubin's tables (tests/test_rubin_parquet.py keeps
it in step with the installed lsst-sdm-schemas).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dpdb.errors import ValidationError, first_line

if TYPE_CHECKING:
    import psycopg

    from .validate import TargetTable

__all__ = [
    "CCD_VISIT_FACTOR",
    "MAX_DETECTOR",
    "TIME_TOLERANCE_DAYS",
    "Derivation",
    "Step",
    "CcdVisitLookup",
    "DERIVATIONS",
    "plan_steps",
    "apply_steps",
    "catalog_ccd_visits",
    "table_ccd_visits",
]

log = logging.getLogger(__name__)

CCD_VISIT_FACTOR = 1000
"""``ccdVisitId = visit * 1000 + detector`` when the catalog holds no CcdVisit row for the pair."""

MAX_DETECTOR = CCD_VISIT_FACTOR - 1
"""Largest detector number the fallback formula keeps collision-free (LSSTCam has 0..204)."""

TIME_TOLERANCE_DAYS = 1e-3 / 86_400
"""A timestamp and its MJD column, when a file carries both, agree within 1 ms (both are given to
10 ms by Rubin; a float64 MJD resolves ~1 µs)."""

_MJD_EPOCH_NS = int(np.datetime64("1858-11-17T00:00:00", "ns").astype(np.int64))
_DAY_NS = 86_400 * 10**9

CcdVisitLookup = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``(visits, detectors) -> (ccdVisitIds, found)``: the ccdVisitId of each (visit, detector) pair
that the catalog (or the visit's CcdVisit file) holds; ``found`` is false where it holds none."""


@dataclass(frozen=True)
class Derivation:
    """A dpdb column computed from columns of Rubin's files."""

    table: str
    """Canonical dpdb table."""
    column: str
    """Canonical dpdb column it fills."""
    sources: tuple[str, ...]
    """Canonical Rubin columns it is computed from."""
    formula: str
    """One line for messages and schema/DPDD_COVERAGE.md."""
    compute: Callable[[list[pa.Array], tuple[str, ...], Path, int, CcdVisitLookup | None], pa.Array]
    """(source arrays, their names in the file, file, first row, ccdVisitId lookup) -> the column."""


@dataclass(frozen=True)
class Step:
    """One derivation bound to a file: its source columns by their names in the file."""

    derivation: Derivation
    sources: tuple[str, ...]
    """File column names of the sources."""
    given: str | None
    """File column name of the derived column when the file carries it too (then the two must agree)."""

    @property
    def output(self) -> str:
        """The name the derived column has in a prepared batch (the canonical dpdb name)."""
        return self.derivation.column


def _values(arr: pa.Array, name: str, path: Path, row0: int, what: str) -> np.ndarray:
    """Non-null int64 values of a source column, or a one-line error naming the first null."""
    if arr.null_count:
        i = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValidationError(f"{path}: column {name}, row {row0 + i}: null, so {what} cannot be derived")
    return np.asarray(arr.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _ccd_visit_id(
    arrays: list[pa.Array], names: tuple[str, ...], path: Path, row0: int, lookup: CcdVisitLookup | None
) -> pa.Array:
    """ccdVisitId of each row: the catalog's CcdVisit row for (visit, detector), else visit*1000+detector.

    Rubin packs ccdVisitId from the data ID with the instrument's dimension packer (pipe_tasks'
    MakeCcdVisitTableTask), which needs the Butler; a catalog that holds Rubin's CcdVisit table has
    those values, so they are looked up first and measurements join their CcdVisit. The fallback is
    collision-free for detectors 0..999 and keeps visit and detector readable in the number.
    """
    visit = _values(arrays[0], names[0], path, row0, "ccdVisitId")
    detector = _values(arrays[1], names[1], path, row0, "ccdVisitId")
    out = np.empty(len(visit), dtype=np.int64)
    found = np.zeros(len(visit), dtype=bool)
    if lookup is not None and len(visit):
        out, found = lookup(visit, detector)
        out = np.array(out, dtype=np.int64)
    rest = ~found
    if rest.any():
        max_visit = (np.iinfo(np.int64).max - MAX_DETECTOR) // CCD_VISIT_FACTOR
        for name, values, lo, hi in (
            (names[1], detector, 0, MAX_DETECTOR),
            (names[0], visit, 0, max_visit),
        ):
            bad = rest & ((values < lo) | (values > hi))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                span = values[rest]
                raise ValidationError(
                    f"{path}: column {name}, row {row0 + i}: value {int(values[i])} outside {lo}..{hi}, so "
                    f"ccdVisitId = visit * {CCD_VISIT_FACTOR} + detector cannot be derived (the file's "
                    f"values span {int(span.min())}..{int(span.max())}; load its CcdVisit rows first)"
                )
        out[rest] = visit[rest] * CCD_VISIT_FACTOR + detector[rest]
    return pa.array(out, pa.int64())


def _mjd_tai(
    arrays: list[pa.Array], names: tuple[str, ...], path: Path, row0: int, lookup: CcdVisitLookup | None
) -> pa.Array:
    """MJD of a TAI timestamp: days since 1858-11-17T00:00 TAI, counted on the TAI scale itself.

    dp1.yaml gives ``expMidpt``/``obsStart`` in TAI, and TAI has no leap seconds, so the MJD is the
    plain day count since the epoch read on the same clock (astropy's Time(..., scale='tai').mjd
    gives the same number; no UTC conversion is involved).
    """
    arr = arrays[0]
    if not pa.types.is_timestamp(arr.type):
        raise ValidationError(f"{path}: column {names[0]} has type {arr.type}; a TAI timestamp was expected")
    if arr.type.tz not in (None, "UTC", "utc", "+00:00"):
        raise ValidationError(
            f"{path}: column {names[0]} has time zone {arr.type.tz}; Rubin's timestamps are TAI readings"
        )
    try:
        ns = arr.cast(pa.timestamp("ns", tz=arr.type.tz)).cast(pa.int64())
    except pa.ArrowInvalid as e:
        raise ValidationError(
            f"{path}: column {names[0]}: a timestamp outside 1677..2262 ({first_line(e)})"
        ) from None
    valid = ns.is_valid().to_numpy(zero_copy_only=False)
    whole, rest = np.divmod(ns.fill_null(0).to_numpy(zero_copy_only=False) - _MJD_EPOCH_NS, _DAY_NS)
    return pa.array(whole + rest / _DAY_NS, pa.float64(), mask=~valid)


_CCD = "visit * 1000 + detector, unless the catalog's CcdVisit holds (visit, detector): its ccdVisitId"
_TAI = "MJD of the TAI timestamp {src} (days since 1858-11-17T00:00 TAI)"

DERIVATIONS: dict[str, tuple[Derivation, ...]] = {
    **{
        table: (Derivation(table, "ccdVisitId", ("visit", "detector"), _CCD, _ccd_visit_id),)
        for table in ("DiaSource", "DiaForcedSource", "Source", "ForcedSource")
    },
    **{
        table: (
            Derivation(table, "expMidptMJD", ("expMidpt",), _TAI.format(src="expMidpt"), _mjd_tai),
            Derivation(table, "obsStartMJD", ("obsStart",), _TAI.format(src="obsStart"), _mjd_tai),
        )
        for table in ("Visit", "CcdVisit")
    },
}
"""Per canonical dpdb table, the columns dpdb derives from Rubin's."""


def plan_steps(path: Path, by_lower: Mapping[str, str], target: TargetTable) -> tuple[Step, ...]:
    """The derivations that apply to a file with columns ``by_lower`` (lower-case name -> file name).

    A derivation applies when the target has its column and the file has all of its sources, and
    either the file lacks the column (derive it) or one of the sources is not a dpdb column (the
    file carries two forms of one quantity: check they agree).
    """
    steps = []
    for d in DERIVATIONS.get(target.canonical, ()):
        low = d.column.lower()
        if low not in target.columns or not all(s.lower() in by_lower for s in d.sources):
            continue
        given = by_lower.get(low)
        if given is not None and all(s.lower() in target.columns for s in d.sources):
            continue
        steps.append(Step(d, tuple(by_lower[s.lower()] for s in d.sources), given))
    return tuple(steps)


def apply_steps(
    batch: pa.RecordBatch,
    steps: tuple[Step, ...],
    path: Path,
    row0: int,
    lookup: CcdVisitLookup | None,
) -> pa.RecordBatch:
    """``batch`` with each derived column appended (under its canonical name), or checked against
    the file's own column when the file carries it too."""
    for step in steps:
        d = step.derivation
        derived = d.compute([batch.column(s) for s in step.sources], step.sources, path, row0, lookup)
        if step.given is None:
            batch = batch.append_column(d.column, derived)
            continue
        given = batch.column(step.given).cast(pa.float64())
        diff = pc.abs(pc.subtract(given, derived))
        bad = pc.or_kleene(pc.greater(diff, TIME_TOLERANCE_DAYS), pc.xor(given.is_null(), derived.is_null()))
        if pc.any(bad).as_py():
            i = int(np.flatnonzero(bad.fill_null(False).to_numpy(zero_copy_only=False))[0])
            raise ValidationError(
                f"{path}: columns {step.given} and {', '.join(step.sources)} disagree at row {row0 + i}: "
                f"{given[i].as_py()} vs {derived[i].as_py()} ({d.formula})"
            )
    return batch


def table_ccd_visits(ccd_visits: pa.Table) -> CcdVisitLookup:
    """A lookup over a CcdVisit table already read (database names: visitid, detector, ccdvisitid)."""
    known = {
        (int(v), int(d)): int(c)
        for v, d, c in zip(
            ccd_visits["visitid"].to_pylist(),
            ccd_visits["detector"].to_pylist(),
            ccd_visits["ccdvisitid"].to_pylist(),
            strict=True,
        )
        if v is not None and d is not None and c is not None
    }
    return _dict_lookup(known)


def _dict_lookup(known: dict[tuple[int, int], int]) -> CcdVisitLookup:
    """A vectorized lookup over ``known`` (which may grow between calls): pairs packed into one
    sortable int64 key, found with a binary search."""
    cache: dict[str, object] = {"size": -1}

    def pack(visits: np.ndarray, detectors: np.ndarray) -> np.ndarray:
        return (visits.astype(np.int64) << 16) + (detectors.astype(np.int64) + 32_768)

    def lookup(visits: np.ndarray, detectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = np.zeros(len(visits), dtype=np.int64)
        found = np.zeros(len(visits), dtype=bool)
        if not known or not len(visits):
            return out, found
        if cache["size"] != len(known):
            pairs = np.array(list(known), dtype=np.int64)
            keys = pack(pairs[:, 0], pairs[:, 1])
            order = np.argsort(keys)
            cache.update(size=len(known), keys=keys[order], ids=np.array(list(known.values()))[order],
                         fits=bool((pairs[:, 0] >= 0).all() and (pairs[:, 0] < 1 << 47).all()))  # fmt: skip
        fits = cache["fits"] and (visits >= 0).all() and (visits < 1 << 47).all()
        fits = fits and (detectors >= -32_768).all() and (detectors < 32_768).all()
        if not fits:  # beyond the packed key's range: pair by pair
            for i, (v, d) in enumerate(zip(visits.tolist(), detectors.tolist(), strict=True)):
                c = known.get((v, d))
                if c is not None:
                    out[i], found[i] = c, True
            return out, found
        held, held_ids = cache["keys"], cache["ids"]
        assert isinstance(held, np.ndarray) and isinstance(held_ids, np.ndarray)
        wanted = pack(visits, detectors)
        pos = np.clip(np.searchsorted(held, wanted), 0, len(held) - 1)
        found = held[pos] == wanted
        out[found] = held_ids[pos[found]]
        return out, found

    return lookup


def catalog_ccd_visits(conn: psycopg.Connection, catalog: str) -> CcdVisitLookup:
    """A lookup over ``catalog``.CcdVisit, reading each visit's rows once (cached for the whole load)."""
    from psycopg import sql

    known: dict[tuple[int, int], int] = {}
    asked: set[int] = set()
    query = sql.SQL("SELECT visitid, detector, ccdvisitid FROM {} WHERE visitid = ANY(%s)").format(
        sql.Identifier(catalog, "ccdvisit")
    )
    by_dict = _dict_lookup(known)

    def lookup(visits: np.ndarray, detectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        new = [int(v) for v in np.unique(visits) if int(v) not in asked]
        if new:
            for v, d, c in conn.execute(query, (new,)).fetchall():
                if v is not None and d is not None and c is not None:
                    known[(int(v), int(d))] = int(c)
            asked.update(new)
        return by_dict(visits, detectors)

    return lookup
