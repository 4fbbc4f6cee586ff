"""Deterministic simulator of a data release's catalogs over a given set of visits (DPDD §4.3, §3.3.5).

The sky is a fixed set of static objects (about 60% stars, 40% galaxies) drawn
uniformly over the bounding box of the visits' detectors; a fraction of the
stars vary sinusoidally. Every (Object, CcdVisit) pair whose detector box
holds the Object's catalog position gets forced photometry; the pairs above
5 sigma in the science image are Sources, and those of variable stars above 5
sigma in the difference image are DiaSources. One measurement per pair feeds
every table, so a pair's ForcedSource, Source, DiaSource and DiaForcedSource
fluxes agree.

Geometry is that of processing/survey.py: a detector is an axis-aligned box in
(ra, dec), which is exact enough for small fields away from the poles (and away
from ra = 0). Positional errors are in degrees (ra errors as dRA cos(dec)),
fluxes in nJy. IDs are ``make_id(origin, block << 52 | row)`` with one block per
table, so they are unique across the whole release. Same inputs, same tables:
every random draw comes from ``default_rng([seed, stream])``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dpdb.errors import ConfigError
from dpdb.ids import make_id

from .outputs import arrow_table
from .survey import (
    BANDS,
    EXPOSURE,
    M5,
    PIXEL_SCALE,
    ZERO_POINT,
    _ccd_visit_table,
    _Geometry,
    _plan_visit,
    _visit_table,
)
from .survey_config import SurveyConfig

__all__ = ["plan_visits", "simulate_static_sky"]

log = logging.getLogger(__name__)

STAR_FRACTION = 0.6
THRESHOLD = 5.0  # detection S/N, science and difference image alike
SEEING = 0.7  # arcsec, FWHM
ASTROMETRY_FLOOR = 0.01 / 3600  # deg
COLOUR_SCATTER = 0.05  # mag

NB = len(BANDS)
_BAND_NAMES = np.array(list(BANDS))
_REF_BAND = BANDS.index("r")

# RNG streams: every draw comes from default_rng([seed, stream]).
_SKY, _VARIABLES, _OBJECT_POSITION, _COADD, _NOISE, _SOURCE_POSITION, _DIA_POSITION, _COUNTERPART = range(8)

# ID blocks: local part of an ID = block << _BLOCK_SHIFT | row number.
_BLOCK_SHIFT = 52
_OBJECT, _SOURCE, _DIA_OBJECT, _DIA_SOURCE, _DIA_FORCED_SOURCE = range(1, 6)


def plan_visits(
    seed: int,
    nights: int,
    visits_per_night: int = 10,
    center: tuple[float, float] = (150.0, 2.0),
    area_deg2: float = 30.0,
) -> tuple[pa.Table, pa.Table]:
    """Visit and CcdVisit tables of a survey's first ``nights`` nights.

    Parameters
    ----------
    seed, visits_per_night, center, area_deg2
        As in :class:`~dpdb.processing.survey.SurveyConfig`; the same values give the same
        visits (numbers, times, bands and footprints) as the prompt survey simulator.
    nights
        Number of nights, from night 0.

    Returns
    -------
    visits, ccd_visits
        One row per visit and one per (visit, detector), in time order.
    """
    if nights < 0:
        raise ConfigError("nights must not be negative")
    config = SurveyConfig(seed=seed, visits_per_night=visits_per_night, center=center, area_deg2=area_deg2)
    geo = _Geometry.of(config)
    planned = [_plan_visit(config, geo, night, j) for night in range(nights) for j in range(visits_per_night)]
    if not planned:  # empty tables of the right schema
        first = _plan_visit(config, geo, 0, 0)
        return _visit_table(geo, first).slice(0, 0), _ccd_visit_table(geo, first).slice(0, 0)
    visits = pa.concat_tables([_visit_table(geo, v) for v in planned])
    ccd_visits = pa.concat_tables([_ccd_visit_table(geo, v) for v in planned])
    return visits, ccd_visits


def simulate_static_sky(
    visits: pa.Table,
    ccd_visits: pa.Table,
    origin: int,
    *,
    seed: int = 1,
    objects: int = 20_000,
    variable_fraction: float = 0.05,
    counterparts: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, pa.Table]:
    """The direct-image and difference-image tables of a data release over these visits.

    Parameters
    ----------
    visits
        Visit table (canonical column names); every CcdVisit's visit must be in it.
    ccd_visits
        CcdVisit table with at least ccdVisitId, visitId, detector, band, expMidptMJD, magLim and
        the four corners (llc, ulc, urc, lrc ra/dec); pixelScale and expTime are used if present.
    origin
        ID origin of the release (:func:`dpdb.ids.release_origin`); every generated ID carries it.
    seed
        Seed of every random draw; the same inputs give identical tables.
    objects
        Number of static objects on the sky.
    variable_fraction
        Share of the stars that vary (and so make DiaSources).
    counterparts
        True (ra, dec) of further stars, after the ``objects`` drawn ones: the static
        counterparts of sources found by difference imaging (a release made from the prompt
        catalog has an Object for each of its persistent DiaObjects). They do not vary here.

    Returns
    -------
    dict of pyarrow.Table
        "Object", "Source", "ForcedSource", "DiaObject", "DiaSource" and "DiaForcedSource",
        each with exactly the columns and types of the release schema.

    Raises
    ------
    ConfigError
        Bad counts or fraction, a CcdVisit of an unknown visit or band, or objects but no CcdVisits.
    ValueError
        ``origin`` outside the ID layout's range.
    """
    if objects < 0:
        raise ConfigError("objects must not be negative")
    if not 0 <= variable_fraction <= 1:
        raise ConfigError(f"variable_fraction {variable_fraction} outside 0..1")
    make_id(origin, 0)  # refuses a bad origin before any work
    ccds = _Ccds.of(ccd_visits, visits)
    if objects and not len(ccds.ident):
        raise ConfigError("no CcdVisits to place the sky in")
    sky = _draw_sky(seed, objects, ccds.bounding_box(), variable_fraction, counterparts)
    pairs = _measure(seed, sky, ccds, *_pairs(sky, ccds))
    run = _Run(seed, origin, sky, ccds, float(ccds.mjd.max()) + 1.0 if len(ccds.mjd) else 0.0)
    object_ids = _ids(origin, _OBJECT, np.arange(len(sky.ra)))
    tables = {
        "Object": _object_table(run, pairs, object_ids),
        "Source": _source_table(run, pairs, object_ids),
        "ForcedSource": _forced_source_table(run, pairs, object_ids),
        **_dia_tables(run, pairs),
    }
    log.debug("static sky: %s", {k: t.num_rows for k, t in tables.items()})
    return tables


# ---------------------------------------------------------------- inputs and sky


@dataclass(frozen=True)
class _Ccds:
    """The CcdVisits, sorted by ccdVisitId, one array element each."""

    ident: np.ndarray
    visit: np.ndarray
    detector: np.ndarray
    band: np.ndarray  # index in BANDS
    mjd: np.ndarray
    sigma: np.ndarray  # flux error of a point source, nJy
    ra_lo: np.ndarray
    ra_hi: np.ndarray
    dec_lo: np.ndarray
    dec_hi: np.ndarray
    pixel_scale: np.ndarray  # arcsec
    exp_time: np.ndarray  # s

    @classmethod
    def of(cls, ccd_visits: pa.Table, visits: pa.Table) -> _Ccds:
        table = ccd_visits.take(pc.sort_indices(ccd_visits, [("ccdVisitId", "ascending")]))

        def col(name: str, default: float | None = None) -> np.ndarray:
            if name not in table.column_names and default is not None:
                return np.full(table.num_rows, default)
            return table.column(name).to_numpy()

        band = pc.index_in(table.column("band"), value_set=pa.array(list(BANDS))).to_numpy(
            zero_copy_only=False
        )
        if np.isnan(band.astype(np.float64)).any():
            raise ConfigError(f"CcdVisit bands must be among {BANDS}")
        visit = col("visitId").astype(np.int64)
        missing = np.setdiff1d(visit, visits.column("visit").to_numpy())
        if len(missing):
            raise ConfigError(f"CcdVisit refers to visit {missing[0]}, which is not in Visit")
        ras = np.stack([col(f"{c}ra") for c in ("llc", "ulc", "urc", "lrc")])
        decs = np.stack([col(f"{c}dec") for c in ("llc", "ulc", "urc", "lrc")])
        return cls(
            ident=col("ccdVisitId").astype(np.int64),
            visit=visit,
            detector=col("detector").astype(np.int16),
            band=band.astype(np.int64),
            mjd=col("expMidptMJD").astype(np.float64),
            sigma=_flux(col("magLim").astype(np.float64)) / THRESHOLD,
            ra_lo=ras.min(axis=0),
            ra_hi=ras.max(axis=0),
            dec_lo=decs.min(axis=0),
            dec_hi=decs.max(axis=0),
            pixel_scale=col("pixelScale", PIXEL_SCALE).astype(np.float64),
            exp_time=col("expTime", EXPOSURE).astype(np.float64),
        )

    def bounding_box(self) -> tuple[float, float, float, float]:
        if not len(self.ident):
            return 0.0, 0.0, 0.0, 0.0  # no sky to draw
        return self.ra_lo.min(), self.ra_hi.max(), self.dec_lo.min(), self.dec_hi.max()


@dataclass(frozen=True)
class _Sky:
    """Static objects, one array element (or row) each; the index is the object's local number."""

    ra: np.ndarray  # true position, deg
    dec: np.ndarray
    coord_ra: np.ndarray  # catalog (measured) position, deg
    coord_dec: np.ndarray
    coord_err: np.ndarray  # deg
    galaxy: np.ndarray  # bool
    flux: np.ndarray  # (n, NB) mean true flux, nJy
    amplitude: np.ndarray  # relative amplitude of the variation; 0 for constant objects
    period: np.ndarray  # d
    phase: np.ndarray  # rad

    def true_flux(self, obj: np.ndarray, band: np.ndarray, mjd: np.ndarray) -> np.ndarray:
        """True flux of objects ``obj`` in ``band`` at ``mjd`` (nJy)."""
        wave = np.sin(2 * math.pi * mjd / self.period[obj] + self.phase[obj])
        return self.flux[obj, band] * (1 + self.amplitude[obj] * wave)


def _flux(mag: np.ndarray) -> np.ndarray:
    return 10 ** ((ZERO_POINT - mag) / 2.5)


def _position_error(snr: np.ndarray) -> np.ndarray:
    """Centroid error (deg) at signal-to-noise ``snr``."""
    return SEEING / 3600 / (2.35 * np.maximum(snr, 1e-3)) + ASTROMETRY_FLOOR


def _magnitudes(rng: np.random.Generator, galaxy: np.ndarray) -> np.ndarray:
    """AB magnitudes (n, NB): stars near the stellar locus, galaxies with redder r-i and bluer u-g."""
    n = len(galaxy)
    r = np.where(galaxy, 18 + 7 * np.sqrt(rng.random(n)), rng.uniform(17, 25, n))
    gr = np.where(galaxy, rng.uniform(0.3, 1.0, n), rng.uniform(0.2, 1.5, n))
    ug = np.where(galaxy, 0.6 + 1.0 * gr, 0.7 + 1.3 * gr)
    ri = np.where(galaxy, 0.2 + 0.3 * gr, np.maximum(0.45 * gr - 0.1, 0.0))
    iz = np.where(galaxy, 0.15 + 0.2 * gr, 0.5 * ri)
    zy = np.where(galaxy, 0.1, 0.3 * iz + 0.02)
    ug, ri, iz, zy = (c + rng.normal(0, COLOUR_SCATTER, n) for c in (ug, ri, iz, zy))
    g = r + gr
    i = r - ri
    z = i - iz
    return np.column_stack([g + ug, g, r, i, z, z - zy])


def _draw_sky(
    seed: int,
    n: int,
    box: tuple[float, float, float, float],
    variable_fraction: float,
    counterparts: tuple[np.ndarray, np.ndarray] | None = None,
) -> _Sky:
    """``n`` objects uniform (in area) over ``box`` = (ra_lo, ra_hi, dec_lo, dec_hi), then the
    ``counterparts`` stars at their given positions."""
    rng = np.random.default_rng([seed, _SKY])
    ra_lo, ra_hi, dec_lo, dec_hi = box
    ra = rng.uniform(ra_lo, ra_hi, n)
    sin_lo, sin_hi = math.sin(math.radians(dec_lo)), math.sin(math.radians(dec_hi))
    dec = np.degrees(np.arcsin(rng.uniform(sin_lo, sin_hi, n)))
    galaxy = rng.random(n) >= STAR_FRACTION
    flux = _flux(_magnitudes(rng, galaxy))
    if counterparts is not None:
        k = len(counterparts[0])
        ra = np.concatenate([ra, np.asarray(counterparts[0], np.float64)])
        dec = np.concatenate([dec, np.asarray(counterparts[1], np.float64)])
        galaxy = np.concatenate([galaxy, np.zeros(k, bool)])
        stars = _magnitudes(np.random.default_rng([seed, _COUNTERPART]), galaxy[n:])
        flux = np.concatenate([flux, _flux(stars)])

    rng = np.random.default_rng([seed, _VARIABLES])
    stars = np.flatnonzero(~galaxy[:n])
    variable = rng.choice(stars, size=round(variable_fraction * len(stars)), replace=False)
    variable.sort()
    total = len(ra)
    amplitude, period, phase = np.zeros(total), np.ones(total), np.zeros(total)
    amplitude[variable] = rng.uniform(0.1, 0.4, len(variable))  # 0.2-0.9 mag peak to peak
    period[variable] = np.exp(rng.uniform(math.log(0.3), math.log(30), len(variable)))
    phase[variable] = rng.uniform(0, 2 * math.pi, len(variable))

    # catalog position: as good as the single-epoch S/N summed over the bands at nominal depth
    snr = np.sqrt(((flux / (_flux(M5) / THRESHOLD)) ** 2).sum(axis=1))
    err = _position_error(snr)
    rng = np.random.default_rng([seed, _OBJECT_POSITION])
    coord_ra = ra + rng.normal(0, err) / np.cos(np.radians(dec))
    coord_dec = dec + rng.normal(0, err)
    return _Sky(ra, dec, coord_ra, coord_dec, err, galaxy, flux, amplitude, period, phase)


def _pairs(sky: _Sky, ccds: _Ccds) -> tuple[np.ndarray, np.ndarray]:
    """(object, ccd) index pairs whose detector box holds the object's catalog position.

    Ordered by CcdVisit, then object.
    """
    order = np.argsort(sky.coord_ra, kind="stable")
    ra = sky.coord_ra[order]
    lo = np.searchsorted(ra, ccds.ra_lo, "left")
    hi = np.searchsorted(ra, ccds.ra_hi, "right")
    parts = []
    for k in range(len(ccds.ident)):
        cand = order[lo[k] : hi[k]]
        dec = sky.coord_dec[cand]
        parts.append(np.sort(cand[(dec >= ccds.dec_lo[k]) & (dec <= ccds.dec_hi[k])]))
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    counts = np.array([len(p) for p in parts])
    return np.concatenate(parts).astype(np.int64), np.repeat(np.arange(len(parts)), counts)


# ---------------------------------------------------------------- measurements


@dataclass(frozen=True)
class _Pairs:
    """(Object, CcdVisit) index pairs with one forced measurement each, science and difference image."""

    obj: np.ndarray
    ccd: np.ndarray
    flux: np.ndarray  # science-image psf flux, nJy
    diff: np.ndarray  # difference-image psf flux: science minus the template's (true mean) flux
    sigma: np.ndarray  # error of both

    def take(self, idx: np.ndarray) -> _Pairs:
        return _Pairs(*(getattr(self, f.name)[idx] for f in fields(self)))


@dataclass(frozen=True)
class _Run:
    seed: int
    origin: int
    sky: _Sky
    ccds: _Ccds
    processed: float  # MJD TAI of the release processing


def _measure(seed: int, sky: _Sky, ccds: _Ccds, obj: np.ndarray, ccd: np.ndarray) -> _Pairs:
    band = ccds.band[ccd]
    sigma = ccds.sigma[ccd]
    noise = np.random.default_rng([seed, _NOISE]).normal(0, 1, len(obj)) * sigma
    flux = sky.true_flux(obj, band, ccds.mjd[ccd]) + noise
    return _Pairs(obj, ccd, flux, flux - sky.flux[obj, band], sigma)


def _ids(origin: int, block: int, local: np.ndarray) -> np.ndarray:
    return make_id(origin, (np.int64(block) << np.int64(_BLOCK_SHIFT)) + local.astype(np.int64))


def _visit_columns(ccds: _Ccds, ccd: np.ndarray) -> dict[str, Any]:
    return {
        "ccdVisitId": ccds.ident[ccd],
        "visit": ccds.visit[ccd],
        "detector": ccds.detector[ccd],
        "band": _BAND_NAMES[ccds.band[ccd]],
    }


def _detection_columns(run: _Run, p: _Pairs, snr: np.ndarray, stream: int) -> dict[str, Any]:
    """Columns of detections at ``snr``: visit, a centroid scattered by its error, and pixel position.

    Pixel x runs along ra, y along dec, from the detector's low corner.
    """
    err = _position_error(snr)
    rng = np.random.default_rng([run.seed, stream])
    dec0 = run.sky.dec[p.obj]
    ra = run.sky.ra[p.obj] + rng.normal(0, err) / np.cos(np.radians(dec0))
    dec = dec0 + rng.normal(0, err)
    scale = run.ccds.pixel_scale[p.ccd] / 3600
    return {
        **_visit_columns(run.ccds, p.ccd),
        "ra": ra,
        "dec": dec,
        "raErr": err,
        "decErr": err,
        "ra_dec_Cov": 0.0,
        "x": (ra - run.ccds.ra_lo[p.ccd]) * np.cos(np.radians(dec)) / scale,
        "y": (dec - run.ccds.dec_lo[p.ccd]) / scale,
        "xErr": err / scale,
        "yErr": err / scale,
        "extendedness": run.sky.galaxy[p.obj].astype(np.float64),
        "flags": 0,
    }


def _band_stats(
    group: np.ndarray, band: np.ndarray, groups: int, flux: np.ndarray, err: np.ndarray, extremes: bool
) -> dict[str, np.ndarray]:
    """Per group and band, arrays of shape (groups, NB); NaN where undefined.

    n: count; mean: inverse-variance weighted mean; mean_err: its error; sigma: sample
    standard deviation; chi2: of the scatter around mean; err_mean: mean error; and, if
    ``extremes``, min and max.
    """
    key = group.astype(np.int64) * NB + band
    size = groups * NB
    n = np.bincount(key, minlength=size)
    w = err.astype(np.float64) ** -2
    sw = np.bincount(key, w, minlength=size)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.bincount(key, w * flux, minlength=size) / sw
        plain = np.bincount(key, flux, minlength=size) / n
        stats = {
            "n": n,
            "mean": mean,
            "mean_err": np.where(n > 0, 1 / np.sqrt(sw), np.nan),
            "sigma": np.where(
                n > 1, np.sqrt(np.bincount(key, (flux - plain[key]) ** 2, minlength=size) / (n - 1)), np.nan
            ),
            "chi2": np.where(n > 0, np.bincount(key, w * (flux - mean[key]) ** 2, minlength=size), np.nan),
            "err_mean": np.bincount(key, err, minlength=size) / n,
        }
    if extremes:
        lo, hi = np.full(size, np.inf), np.full(size, -np.inf)
        np.minimum.at(lo, key, flux)
        np.maximum.at(hi, key, flux)
        stats["min"], stats["max"] = np.where(n > 0, lo, np.nan), np.where(n > 0, hi, np.nan)
    return {k: v.reshape(groups, NB) for k, v in stats.items()}


def _nan_to_null(table: pa.Table) -> pa.Table:
    """NaN in nullable floating-point columns becomes null (as the ETL loads it)."""
    for i, field in enumerate(table.schema):
        if field.nullable and pa.types.is_floating(field.type):
            column = table.column(i)
            nan = pc.is_nan(column)
            if pc.any(nan).as_py():
                table = table.set_column(i, field, pc.if_else(nan, pa.scalar(None, field.type), column))
    return table


# ---------------------------------------------------------------- direct-image tables


def _object_table(run: _Run, p: _Pairs, object_ids: np.ndarray) -> pa.Table:
    """Objects with per-band psf fluxes: the weighted mean of their forced photometry, or a
    measurement at the band's nominal depth where no visit covers them."""
    sky, n = run.sky, len(object_ids)
    stats = _band_stats(p.obj, run.ccds.band[p.ccd], n, p.flux, p.sigma, extremes=False)
    nominal = np.broadcast_to(_flux(M5) / THRESHOLD, (n, NB))
    noise = np.random.default_rng([run.seed, _COADD]).normal(0, 1, (n, NB)) * nominal
    covered = stats["n"] > 0
    flux = np.where(covered, stats["mean"], sky.flux + noise)
    err = np.where(covered, stats["mean_err"], nominal)
    extendedness = sky.galaxy.astype(np.float64)
    values: dict[str, Any] = {
        "objectId": object_ids,
        "coord_ra": sky.coord_ra,
        "coord_dec": sky.coord_dec,
        "coord_raErr": sky.coord_err,
        "coord_decErr": sky.coord_err,
        "coord_ra_dec_Cov": 0.0,
        "refBand": BANDS[_REF_BAND],
        "refExtendedness": extendedness,
        "flags": 0,
    }
    for b, name in enumerate(BANDS):
        values[f"{name}_psfFlux"] = flux[:, b]
        values[f"{name}_psfFluxErr"] = err[:, b]
        values[f"{name}_extendedness"] = extendedness
    return arrow_table("Object", values, n, kind="release")


def _forced_source_table(run: _Run, p: _Pairs, object_ids: np.ndarray) -> pa.Table:
    values = {
        **_visit_columns(run.ccds, p.ccd),
        "objectId": object_ids[p.obj],
        "coord_ra": run.sky.coord_ra[p.obj],
        "coord_dec": run.sky.coord_dec[p.obj],
        "psfFlux": p.flux,
        "psfFluxErr": p.sigma,
        "psfDiffFlux": p.diff,
        "psfDiffFluxErr": p.sigma,
        "flags": 0,
    }
    return arrow_table("ForcedSource", values, len(p.obj), kind="release")


def _source_table(run: _Run, p: _Pairs, object_ids: np.ndarray) -> pa.Table:
    """Detections in the science images: pairs whose measured flux exceeds THRESHOLD sigma."""
    src = p.take(np.flatnonzero(p.flux / p.sigma > THRESHOLD))
    n = len(src.obj)
    values = _detection_columns(run, src, src.flux / src.sigma, _SOURCE_POSITION)
    values |= {
        "sourceId": _ids(run.origin, _SOURCE, np.arange(n)),
        "objectId": object_ids[src.obj],
        "coord_ra": values["ra"],
        "coord_dec": values["dec"],
        "psfFlux": src.flux,
        "psfFluxErr": src.sigma,
    }
    return arrow_table("Source", values, n, kind="release")


# ---------------------------------------------------------------- difference-image tables


def _dia_tables(run: _Run, p: _Pairs) -> dict[str, pa.Table]:
    """DiaObject, DiaSource and DiaForcedSource of the variable stars, all processed at one time.

    DiaSources are the variable stars' pairs whose difference flux exceeds THRESHOLD sigma.
    """
    src = p.take(np.flatnonzero((run.sky.amplitude[p.obj] > 0) & (np.abs(p.diff) / p.sigma > THRESHOLD)))
    dia = np.unique(src.obj)  # object index of each DiaObject
    dia_ids = _ids(run.origin, _DIA_OBJECT, dia)
    n = len(src.obj)
    values = _detection_columns(run, src, np.abs(src.diff) / src.sigma, _DIA_POSITION)
    values |= {
        "diaSourceId": _ids(run.origin, _DIA_SOURCE, np.arange(n)),
        "diaObjectId": dia_ids[np.searchsorted(dia, src.obj)],
        "midpointMjdTai": run.ccds.mjd[src.ccd],
        "exposureTime": run.ccds.exp_time[src.ccd],
        "psfFlux": src.diff,
        "psfFluxErr": src.sigma,
        "snr": np.abs(src.diff) / src.sigma,
        "isNegative": src.diff < 0,
        "scienceFlux": src.flux,
        "scienceFluxErr": src.sigma,
        "timeProcessedMjdTai": run.processed,
    }
    forced = p.take(np.flatnonzero(np.isin(p.obj, dia)))
    dia_object = _dia_object_table(run, dia, dia_ids, src, values, forced)
    return {
        "DiaObject": dia_object,
        "DiaSource": arrow_table("DiaSource", values, n, kind="release"),
        "DiaForcedSource": _dia_forced_source_table(run, dia, dia_object, forced),
    }


def _dia_object_table(
    run: _Run, dia: np.ndarray, dia_ids: np.ndarray, src: _Pairs, values: dict[str, Any], forced: _Pairs
) -> pa.Table:
    """One version per DiaObject, valid from the processing time, aggregating all its DiaSources
    (no 12-month window, DPDD §3.3.5); the position is the weighted mean of theirs."""
    k = len(dia)
    row, frow = np.searchsorted(dia, src.obj), np.searchsorted(dia, forced.obj)
    w = values["raErr"] ** -2
    sw = np.bincount(row, w, minlength=k)
    mjd = values["midpointMjdTai"]
    first, last = np.full(k, np.inf), np.full(k, -np.inf)
    np.minimum.at(first, row, mjd)
    np.maximum.at(last, row, mjd)
    object_values: dict[str, Any] = {
        "diaObjectId": dia_ids,
        "validityStartMjdTai": run.processed,
        "ra": np.bincount(row, w * values["ra"], minlength=k) / sw,
        "dec": np.bincount(row, w * values["dec"], minlength=k) / sw,
        "raErr": 1 / np.sqrt(sw),
        "decErr": 1 / np.sqrt(sw),
        "ra_dec_Cov": 0.0,
        "nDiaSources": np.bincount(row, minlength=k),
        "firstDiaSourceMjdTai": first,
        "lastDiaSourceMjdTai": last,
        "flags": 0,
    }
    band = run.ccds.band[src.ccd]
    psf = _band_stats(row, band, k, src.diff, src.sigma, extremes=True)
    science = _band_stats(row, band, k, src.flux, src.sigma, extremes=False)
    fp = _band_stats(frow, run.ccds.band[forced.ccd], k, forced.diff, forced.sigma, extremes=False)
    for b, name in enumerate(BANDS):
        object_values |= {
            f"{name}_psfFluxMean": psf["mean"][:, b],
            f"{name}_psfFluxMeanErr": psf["mean_err"][:, b],
            f"{name}_psfFluxSigma": psf["sigma"][:, b],
            f"{name}_psfFluxNdata": psf["n"][:, b],
            f"{name}_psfFluxChi2": psf["chi2"][:, b],
            f"{name}_psfFluxMin": psf["min"][:, b],
            f"{name}_psfFluxMax": psf["max"][:, b],
            f"{name}_psfFluxErrMean": psf["err_mean"][:, b],
            f"{name}_scienceFluxMean": science["mean"][:, b],
            f"{name}_scienceFluxMeanErr": science["mean_err"][:, b],
            f"{name}_scienceFluxSigma": science["sigma"][:, b],
            f"{name}_fpFluxMean": fp["mean"][:, b],
            f"{name}_fpFluxMeanErr": fp["mean_err"][:, b],
        }
    return _nan_to_null(arrow_table("DiaObject", object_values, k, kind="release"))


def _dia_forced_source_table(run: _Run, dia: np.ndarray, dia_object: pa.Table, forced: _Pairs) -> pa.Table:
    """Forced difference-image photometry of each DiaObject at its position, in every CcdVisit covering it."""
    row = np.searchsorted(dia, forced.obj)
    n = len(row)
    values = {
        **_visit_columns(run.ccds, forced.ccd),
        "diaForcedSourceId": _ids(run.origin, _DIA_FORCED_SOURCE, np.arange(n)),
        "diaObjectId": dia_object.column("diaObjectId").to_numpy()[row],
        "ra": dia_object.column("ra").to_numpy()[row],
        "dec": dia_object.column("dec").to_numpy()[row],
        "psfFlux": forced.diff,
        "psfFluxErr": forced.sigma,
        "scienceFlux": forced.flux,
        "scienceFluxErr": forced.sigma,
        "midpointMjdTai": run.ccds.mjd[forced.ccd],
        "timeProcessedMjdTai": run.processed,
    }
    return arrow_table("DiaForcedSource", values, n, kind="release")
