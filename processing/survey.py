"""Deterministic simulator of a small LSST-like survey that writes Parquet files per visit.

The sky (stars, transients, asteroids) is drawn from the configuration alone,
so every run sees the same sky whatever nights it simulates; the noise of a
visit comes from an RNG seeded with (seed, visit). Simulating nights 0-1 and
then 2-3 therefore writes the same files as nights 0-3 in one run, and a
rerun rewrites identical files (each written to a temporary name, then
renamed into place).

Geometry is flat: positions are kept as ``x = (ra - ra_c) cos(dec_c)``,
``y = dec - dec_c`` in degrees around the survey centre. The survey is the
square ``|x|, |y| <= L/2`` (``L = sqrt(area)``); a field is an axis-aligned
square of side ``sqrt(field_area)`` split into 3x3 detectors (0 at low x and
low y, row-major in y). Field centres form a grid spanning the survey square
(spacing at most 0.8 field side) so that, dither included, fields stay inside
it whenever the survey is larger than a field. Asteroids move on a torus:
their positions wrap modulo the survey square, so the number of asteroids in a
field is the same at every epoch.

Layout of an output directory::

    survey.json                   config and the nights written so far
    SSObject.parquet              known asteroids (orbits are nominal)
    truth_objects.parquet         every sky object
    night_NNNNN/visit_VVVVVVVV/   Visit, CcdVisit, DiaSource, DiaForcedSource,
                                  SSEphemeris and truth .parquet (Visit written last)
    night_NNNNN/linkage/          the night's daytime orbit linkage, SSSource and
                                  SSObject .parquet (processing/linkage.py), if any
"""

from __future__ import annotations

import datetime
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dpdb.errors import ConfigError
from dpdb.etl.validate import TargetTable, target_table
from dpdb.ids import PROMPT_ORIGIN, make_id, visit_source_ids
from dpdb.prompt.staging import ASSIGNED_COLUMNS
from dpdb.schema import latest_version

__all__ = ["SurveyConfig", "simulate", "arrow_table", "night_dir", "write_parquet"]

BANDS = "ugrizy"
M5 = np.array([23.9, 25.0, 24.7, 24.0, 23.3, 22.1])  # 5-sigma depth per band, in BANDS order
ZERO_POINT = 31.4  # AB magnitude of 1 nJy
PIXEL_SCALE = 0.2  # arcsec
EXPOSURE = 30.0  # s
VISIT_GAP = 33 / 1440  # d, between the visits of a pair
DITHER = 0.2  # deg
THRESHOLD = 5.0  # detection S/N
ISOLATION = 3 / 3600  # deg
EPHEMERIS_MARGIN = 0.05  # deg
EPHEMERIS_ERROR = 0.05 / 3600  # deg

KINDS = ("star", "transient", "asteroid", "noise")
STAR, TRANSIENT, ASTEROID, NOISE = range(4)
MIX = (0.55, 0.15, 0.08, 0.22)  # share of a visit's detections, by kind

# RNG streams: every draw comes from default_rng([seed, stream, ...]).
_SKY, _KNOWN, _ORBITS, _EFFICIENCY, _DITHER, _NOISE = range(6)


@dataclass(frozen=True)
class SurveyConfig:
    seed: int = 1
    visits_per_night: int = 10
    sources_per_visit: int = 1000  # about this many DiaSources per visit
    area_deg2: float = 30.0  # survey region: a square in (ra cos(dec0), dec) around center
    center: tuple[float, float] = (150.0, 2.0)  # ra, dec in deg
    field_area_deg2: float = 9.6  # one visit's footprint, split in 3x3 detectors
    first_mjd: float = 61000.0  # MJD TAI of night 0's start
    known_asteroid_fraction: float = 0.7

    def __post_init__(self) -> None:
        if not 1 <= self.visits_per_night < 1000:
            raise ConfigError(f"visits_per_night {self.visits_per_night} outside 1..999")
        if self.sources_per_visit <= 0 or self.area_deg2 <= 0 or self.field_area_deg2 <= 0:
            raise ConfigError("sources_per_visit, area_deg2 and field_area_deg2 must be positive")
        if not 0 <= self.known_asteroid_fraction <= 1:
            raise ConfigError("known_asteroid_fraction outside 0..1")


def simulate(out: Path, nights: int, config: SurveyConfig, first_night: int = 0) -> list[Path]:
    """Write nights first_night .. first_night+nights-1; return the visit directories written, in time order.

    Sky-level files (survey.json, SSObject.parquet, truth_objects.parquet) are rewritten on every call.
    """
    from .linkage import write_linkage  # linkage reads this module's files

    if nights < 0 or first_night < 0:
        raise ConfigError("nights and first_night must not be negative")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = _survey_nights(out, config)
    geo = _Geometry.of(config)
    sky = _build_sky(config, geo)
    write_parquet(_ssobject_table(config, sky), out / "SSObject.parquet")
    write_parquet(_truth_objects_table(geo, sky), out / "truth_objects.parquet")
    dirs = []
    for night in range(first_night, first_night + nights):
        for j in range(config.visits_per_night):
            visit = _plan_visit(config, geo, night, j)
            path = night_dir(out, night) / f"visit_{visit.visit:08d}"
            path.mkdir(parents=True, exist_ok=True)
            for name, table in _simulate_visit(config, geo, sky, visit).items():
                write_parquet(table, path / f"{name}.parquet")
            dirs.append(path)
        written.add(night)
        write_linkage(out, night, config)
    doc = {"config": asdict(config), "nights": sorted(written)}
    _write_text(json.dumps(doc, indent=2) + "\n", out / "survey.json")
    return dirs


def night_dir(out: Path, night: int) -> Path:
    """Directory of night ``night``'s visits (and of its daytime linkage)."""
    return out / f"night_{night:05d}"


def _survey_nights(out: Path, config: SurveyConfig) -> set[int]:
    """Nights already written to ``out``; refuses output of a different configuration."""
    path = out / "survey.json"
    if not path.exists():
        return set()
    doc = json.loads(path.read_text())
    if doc["config"] != json.loads(json.dumps(asdict(config))):
        raise ConfigError(f"{out} holds a survey simulated with another configuration: {doc['config']}")
    return set(doc["nights"])


# ---------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Geometry:
    ra0: float
    dec0: float
    side: float  # of the survey square, deg
    field: float  # side of a field, deg
    centres: np.ndarray  # (nfields, 2) field centres (x, y)

    @classmethod
    def of(cls, config: SurveyConfig) -> _Geometry:
        side, field = math.sqrt(config.area_deg2), math.sqrt(config.field_area_deg2)
        span = max(side - field, 0.0)  # centres range over [-span/2, span/2]
        n = math.ceil(span / (0.8 * field)) + 1
        axis = np.linspace(-span / 2, span / 2, n)
        cx, cy = np.meshgrid(axis, axis)
        return cls(*config.center, side, field, np.column_stack([cx.ravel(), cy.ravel()]))

    @property
    def span(self) -> float:
        return max(self.side - self.field, 0.0)

    def radec(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (self.ra0 + x / math.cos(math.radians(self.dec0))) % 360.0, self.dec0 + y

    def wrap(self, v: np.ndarray) -> np.ndarray:
        """Coordinates moved onto the survey square, seen as a torus."""
        return (v + self.side / 2) % self.side - self.side / 2


@dataclass(frozen=True)
class _Visit:
    night: int
    index: int  # within the night
    visit: int
    mjd: float  # exposure midpoint
    band: int  # index in BANDS
    x: float  # field centre
    y: float

    @property
    def sigma(self) -> float:
        """Flux error (nJy) of a point source, science and difference image alike."""
        return float(_flux(M5[self.band])) / 5


def _plan_visit(config: SurveyConfig, geo: _Geometry, night: int, j: int) -> _Visit:
    visit = (night + 1) * 1000 + j
    nfields = len(geo.centres)
    field = (night * math.ceil(config.visits_per_night / 2) + j // 2) % nfields
    rng = np.random.default_rng([config.seed, _DITHER, visit])
    r, angle = DITHER * math.sqrt(rng.random()), 2 * math.pi * rng.random()
    x, y = np.clip(
        geo.centres[field] + [r * math.cos(angle), r * math.sin(angle)], -geo.span / 2, geo.span / 2
    )
    mjd = config.first_mjd + night + 0.1 + j * VISIT_GAP
    return _Visit(night, j, visit, mjd, (night + j) % len(BANDS), float(x), float(y))


def _detectors(geo: _Geometry, v: _Visit, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Detector, and its lower-left corner (x, y), of positions inside visit ``v``'s field."""
    size = geo.field / 3
    x0, y0 = v.x - geo.field / 2, v.y - geo.field / 2
    col = np.clip((x - x0) // size, 0, 2)
    row = np.clip((y - y0) // size, 0, 2)
    return (row * 3 + col).astype(np.int16), x0 + col * size, y0 + row * size


def _in_field(geo: _Geometry, v: _Visit, x: np.ndarray, y: np.ndarray, margin: float = 0.0) -> np.ndarray:
    half = geo.field / 2 + margin
    return (np.abs(x - v.x) < half) & (np.abs(y - v.y) < half)


def _has_neighbour(
    qx: np.ndarray, qy: np.ndarray, px: np.ndarray, py: np.ndarray, self_match: bool
) -> np.ndarray:
    """Whether a point of (px, py) lies within ISOLATION of each query (not counting itself if self_match).

    Points are hashed into cells of side ISOLATION; each query looks at the 3x3
    cells around it, one point per cell at a time.
    """
    found = np.zeros(len(qx), dtype=bool)
    if not len(px) or not len(qx):
        return found
    shift = np.int64(1 << 32)
    pkey = np.floor(px / ISOLATION).astype(np.int64) * shift + np.floor(py / ISOLATION).astype(np.int64)
    order = np.argsort(pkey, kind="stable")
    keys = pkey[order]
    qcx, qcy = np.floor(qx / ISOLATION).astype(np.int64), np.floor(qy / ISOLATION).astype(np.int64)
    queries = np.arange(len(qx))
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            key = (qcx + dx) * shift + qcy + dy
            lo, hi = np.searchsorted(keys, key, "left"), np.searchsorted(keys, key, "right")
            for m in range(int((hi - lo).max())):
                q = queries[lo + m < hi]
                p = order[lo[q] + m]
                near = (px[p] - qx[q]) ** 2 + (py[p] - qy[q]) ** 2 <= ISOLATION**2
                if self_match:
                    near &= p != q
                found[q[near]] = True
    return found


# ---------------------------------------------------------------- sky


@dataclass(frozen=True)
class _Sky:
    """Sky objects, one array element each; the index is the truthId."""

    kind: np.ndarray  # int8: STAR, TRANSIENT or ASTEROID
    x: np.ndarray  # position (asteroids: at first_mjd), deg
    y: np.ndarray
    mag: np.ndarray  # mean (star), peak (transient) or constant (asteroid) AB magnitude
    flux: np.ndarray  # the same as a flux, nJy
    amplitude: np.ndarray  # star: nJy
    period: np.ndarray  # star: d
    phase: np.ndarray  # star: rad
    peak_mjd: np.ndarray  # transient
    rate_x: np.ndarray  # asteroid: deg/d on the sky
    rate_y: np.ndarray
    ss_id: np.ndarray  # int64 ssObjectId of known asteroids, -1 otherwise
    isolated: np.ndarray  # bool: no other static object within ISOLATION (asteroids: true)

    def take(self, idx: np.ndarray) -> _Sky:
        return _Sky(*(getattr(self, f.name)[idx] for f in fields(self)))

    @staticmethod
    def concat(parts: list[_Sky]) -> _Sky:
        return _Sky(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(_Sky)))

    def position(self, mjd: float, first_mjd: float, geo: _Geometry) -> tuple[np.ndarray, np.ndarray]:
        """Positions at ``mjd`` (asteroids move on the survey torus; others have rate NaN and stay)."""
        moving = self.kind == ASTEROID
        dt = mjd - first_mjd
        x = np.where(moving, geo.wrap(self.x + np.nan_to_num(self.rate_x) * dt), self.x)
        y = np.where(moving, geo.wrap(self.y + np.nan_to_num(self.rate_y) * dt), self.y)
        return x, y


def _flux(mag: np.ndarray | float) -> np.ndarray:
    return 10 ** (-0.4 * (np.asarray(mag) - ZERO_POINT))


def _draw(kind: int, n: int, rng: np.random.Generator, half: float, first_mjd: float) -> _Sky:
    """``n`` objects of ``kind`` uniform over the square |x|, |y| <= half."""
    nan = np.full(n, np.nan)
    cols = {f.name: nan for f in fields(_Sky)}
    cols.update(kind=np.full(n, kind, np.int8), ss_id=np.full(n, -1, np.int64), isolated=np.ones(n, bool))
    cols.update(x=rng.uniform(-half, half, n), y=rng.uniform(-half, half, n))
    if kind == STAR:
        cols["mag"] = rng.uniform(17, 21, n)
        cols["amplitude"] = rng.uniform(0.2, 0.6, n) * _flux(cols["mag"])
        cols["period"] = np.exp(rng.uniform(math.log(0.2), math.log(20), n))
        cols["phase"] = rng.uniform(0, 2 * math.pi, n)
    elif kind == TRANSIENT:
        cols["mag"] = rng.uniform(19, 22, n)
        cols["peak_mjd"] = first_mjd + rng.uniform(-30, 1000, n)
    else:
        cols["mag"] = rng.uniform(19, 22, n)
        rate, angle = rng.uniform(0.05, 0.5, n), rng.uniform(0, 2 * math.pi, n)
        cols.update(rate_x=rate * np.cos(angle), rate_y=rate * np.sin(angle))
    cols["flux"] = _flux(cols["mag"])
    return _Sky(**cols)


def _fluxes(sky: _Sky, mjd: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """True difference-image and science-image fluxes (nJy) at ``mjd``."""
    t = np.broadcast_to(np.asarray(mjd, dtype=np.float64), sky.kind.shape)
    diff, template = sky.flux.copy(), np.zeros(len(t))  # asteroids: constant, no template flux
    s = sky.kind == STAR
    diff[s] = sky.amplitude[s] * np.sin(2 * math.pi * t[s] / sky.period[s] + sky.phase[s])
    template[s] = sky.flux[s]
    tr = sky.kind == TRANSIENT
    dt = t[tr] - sky.peak_mjd[tr]
    light = np.where(dt < 0, np.exp(-0.5 * (dt / 10) ** 2), np.exp(-np.maximum(dt, 0) / 30))
    diff[tr] = np.where(dt < -60, 0.0, sky.flux[tr] * light)
    return diff, template + diff


def _efficiencies(config: SurveyConfig, samples: int = 20_000) -> dict[int, float]:
    """Chance that an object of each kind is detected in a random visit of the first year (Monte Carlo)."""
    rng = np.random.default_rng([config.seed, _EFFICIENCY])
    mjd = config.first_mjd + rng.uniform(0, 365, samples)
    sigma = _flux(M5[rng.integers(0, len(BANDS), samples)]) / 5
    result = {}
    for kind in (STAR, TRANSIENT, ASTEROID):
        diff, _ = _fluxes(_draw(kind, samples, rng, 0.0, config.first_mjd), mjd)
        result[kind] = float(np.mean(np.abs(diff + rng.normal(0, sigma)) >= THRESHOLD * sigma))
    return result


def _build_sky(config: SurveyConfig, geo: _Geometry) -> _Sky:
    """All sky objects, with densities that give about MIX * sources_per_visit detections of each kind."""
    efficiency = _efficiencies(config)
    field_on_sky = min(geo.field, geo.side) ** 2
    parts = []
    for kind in (STAR, TRANSIENT, ASTEROID):
        count = round(MIX[kind] * config.sources_per_visit / efficiency[kind] * geo.side**2 / field_on_sky)
        rng = np.random.default_rng([config.seed, _SKY, kind])
        parts.append(_draw(kind, count, rng, geo.side / 2, config.first_mjd))
    sky = _Sky.concat(parts)
    asteroids = np.flatnonzero(sky.kind == ASTEROID)
    known = (
        np.random.default_rng([config.seed, _KNOWN]).random(len(asteroids)) < config.known_asteroid_fraction
    )
    number = np.arange(len(asteroids), dtype=np.int64)[known]
    sky.ss_id[asteroids[known]] = make_id(PROMPT_ORIGIN, (1 << 50) + number)
    static = np.flatnonzero(sky.kind != ASTEROID)
    sx, sy = sky.x[static], sky.y[static]
    sky.isolated[static] = ~_has_neighbour(sx, sy, sx, sy, self_match=True)
    return sky


# ---------------------------------------------------------------- one visit


def _simulate_visit(config: SurveyConfig, geo: _Geometry, sky: _Sky, v: _Visit) -> dict[str, pa.Table]:
    """The tables of one visit, by file name (Visit last)."""
    rng = np.random.default_rng([config.seed, _NOISE, v.visit])  # drawn from in a fixed order
    x_now, y_now = sky.position(v.mjd, config.first_mjd, geo)
    inside = np.flatnonzero(_in_field(geo, v, x_now, y_now))
    sources, source_truth = _dia_sources(config, geo, sky, v, rng, inside, x_now, y_now)
    forced, forced_truth = _forced_sources(geo, sky, v, rng, inside)
    rows = {k: np.concatenate([source_truth[k], forced_truth[k]]) for k in source_truth}
    truth = pa.table(
        {
            "id": rows["id"],
            "table": ["DiaSource"] * sources.num_rows + ["DiaForcedSource"] * forced.num_rows,
            "truthId": rows["truthId"].astype(np.int64),
            "kind": np.array(KINDS)[rows["kind"]],
            "isolated": rows["isolated"],
            "ssObjectId": _nullable_ids(rows["ssObjectId"]),
        }
    )
    return {
        "DiaSource": sources,
        "DiaForcedSource": forced,
        "SSEphemeris": _ephemerides(geo, sky, v, rng, x_now, y_now),
        "truth": truth,
        "CcdVisit": _ccd_visit_table(geo, v),
        "Visit": _visit_table(geo, v),
    }


def _dia_sources(
    config: SurveyConfig,
    geo: _Geometry,
    sky: _Sky,
    v: _Visit,
    rng: np.random.Generator,
    inside: np.ndarray,
    x_now: np.ndarray,
    y_now: np.ndarray,
) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """DiaSources (and their truth) of the objects ``inside`` the field and of noise.

    An object is detected when its noisy difference flux reaches THRESHOLD sigma.
    """
    sigma = v.sigma
    diff, science = _fluxes(sky.take(inside), v.mjd)
    noise = rng.normal(0, sigma, len(inside))
    hit = np.abs(diff + noise) >= THRESHOLD * sigma
    real = inside[hit]
    n_noise = rng.poisson(MIX[NOISE] * config.sources_per_visit)
    nx = v.x + rng.uniform(-geo.field / 2, geo.field / 2, n_noise)
    ny = v.y + rng.uniform(-geo.field / 2, geo.field / 2, n_noise)
    noise_flux = rng.uniform(THRESHOLD, THRESHOLD + 0.5, n_noise) * sigma * rng.choice([-1.0, 1.0], n_noise)

    truth_id = np.concatenate([real, np.full(n_noise, -1)])
    kind = np.concatenate([sky.kind[real], np.full(n_noise, NOISE, np.int8)])
    x, y = np.concatenate([x_now[real], nx]), np.concatenate([y_now[real], ny])
    psf_flux = np.concatenate([(diff + noise)[hit], noise_flux])
    science_flux = np.concatenate([(science + noise)[hit], noise_flux])
    detector, x0, y0 = _detectors(geo, v, x, y)
    order = np.argsort(detector, kind="stable")  # rows by detector, as a pipeline writes them
    truth_id, kind, x, y, psf_flux, science_flux, detector, x0, y0 = (
        a[order] for a in (truth_id, kind, x, y, psf_flux, science_flux, detector, x0, y0)
    )

    snr = np.abs(psf_flux) / sigma
    err = 0.7 / 3600 / (2.35 * snr) + 0.01 / 3600
    mx, my = x + rng.normal(0, err), y + rng.normal(0, err)
    is_noise = kind == NOISE
    reliability = np.where(is_noise, rng.uniform(0.5, 0.9, len(kind)), rng.uniform(0.9, 1.0, len(kind)))
    asteroid = kind == ASTEROID
    rate = np.hypot(sky.rate_x[truth_id], sky.rate_y[truth_id])
    # static objects keep their sky isolation; asteroids and noise are judged where they are now
    isolated = sky.isolated[truth_id]
    moving = asteroid | is_noise
    static = sky.kind != ASTEROID
    isolated[moving] = ~_has_neighbour(x[moving], y[moving], sky.x[static], sky.y[static], self_match=False)
    truth = {
        "id": visit_source_ids(v.visit, len(kind)),
        "truthId": truth_id,
        "kind": kind,
        "isolated": isolated,
        "ssObjectId": np.where(asteroid, sky.ss_id[truth_id], -1),
    }

    ra, dec = geo.radec(mx, my)
    values = {
        **_common_columns(v, detector),
        "diaSourceId": truth["id"],
        "exposureTime": EXPOSURE,
        "ra": ra,
        "dec": dec,
        "raErr": err,
        "decErr": err,
        "ra_dec_Cov": 0.0,
        "x": (mx - x0) * 3600 / PIXEL_SCALE,
        "y": (my - y0) * 3600 / PIXEL_SCALE,
        "psfFlux": psf_flux,
        "psfFluxErr": sigma,
        "snr": snr,
        "scienceFlux": science_flux,
        "scienceFluxErr": sigma,
        "apFlux": psf_flux * 1.02,
        "apFluxErr": sigma * 1.02,
        "isNegative": psf_flux < 0,
        "extendedness": np.where(kind == TRANSIENT, 0.3, 0.0),
        "reliability": reliability,
        "trailLength": np.where(asteroid, rate * EXPOSURE / 86400 * 3600, 0.0),  # arcsec
        "flags": 0,
    }
    return arrow_table("DiaSource", values, len(kind)), truth


def _forced_sources(
    geo: _Geometry, sky: _Sky, v: _Visit, rng: np.random.Generator, inside: np.ndarray
) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """Forced photometry (and its truth) at the true position of the stars and transients in the field.

    Transients count from 60 d before their peak on.
    """
    kinds = sky.kind[inside]
    forced = inside[(kinds == STAR) | ((kinds == TRANSIENT) & (v.mjd > sky.peak_mjd[inside] - 60))]
    diff, science = _fluxes(sky.take(forced), v.mjd)
    detector, _, _ = _detectors(geo, v, sky.x[forced], sky.y[forced])
    ra, dec = geo.radec(sky.x[forced], sky.y[forced])
    n = len(forced)
    truth = {
        "id": visit_source_ids(v.visit, n, forced=True),
        "truthId": forced,
        "kind": sky.kind[forced],
        "isolated": sky.isolated[forced],
        "ssObjectId": np.full(n, -1),
    }
    values = {
        **_common_columns(v, detector),
        "diaForcedSourceId": truth["id"],
        "ra": ra,
        "dec": dec,
        "psfFlux": diff + rng.normal(0, v.sigma, n),
        "psfFluxErr": v.sigma,
        "scienceFlux": science + rng.normal(0, v.sigma, n),
        "scienceFluxErr": v.sigma,
    }
    return arrow_table("DiaForcedSource", values, n), truth


def _ephemerides(
    geo: _Geometry, sky: _Sky, v: _Visit, rng: np.random.Generator, x_now: np.ndarray, y_now: np.ndarray
) -> pa.Table:
    """Predicted positions of the known asteroids in (or near) the field."""
    eph = np.flatnonzero((sky.ss_id >= 0) & _in_field(geo, v, x_now, y_now, EPHEMERIS_MARGIN))
    ra, dec = geo.radec(x_now[eph], y_now[eph])
    return pa.table(
        {
            "ssObjectId": pa.array(sky.ss_id[eph], pa.int64()),
            "ra": ra + rng.normal(0, EPHEMERIS_ERROR, len(eph)),
            "dec": dec + rng.normal(0, EPHEMERIS_ERROR, len(eph)),
            "ephRate": np.hypot(sky.rate_x[eph], sky.rate_y[eph]).astype(np.float32),
            "ephRateRa": sky.rate_x[eph].astype(np.float32),
            "ephRateDec": sky.rate_y[eph].astype(np.float32),
            "ephVmag": sky.mag[eph].astype(np.float32),
        }
    )


def _common_columns(v: _Visit, detector: np.ndarray) -> dict[str, Any]:
    return {
        "ccdVisitId": v.visit * 100 + detector.astype(np.int64),
        "visit": v.visit,
        "detector": detector,
        "midpointMjdTai": v.mjd,
        "band": BANDS[v.band],
    }


def _visit_table(geo: _Geometry, v: _Visit) -> pa.Table:
    ra, dec = geo.radec(np.array([v.x]), np.array([v.y]))
    values = {
        "visit": v.visit,
        "physical_filter": f"{BANDS[v.band]}_sim",
        "band": BANDS[v.band],
        "ra": ra,
        "dec": dec,
        "skyRotation": 0.0,
        "expTime": EXPOSURE,
        "expMidptMJD": v.mjd,
        "obsStartMJD": v.mjd - EXPOSURE / 2 / 86400,
    }
    return arrow_table("Visit", values, 1)


def _ccd_visit_table(geo: _Geometry, v: _Visit) -> pa.Table:
    detector = np.arange(9, dtype=np.int16)
    size = geo.field / 3
    x0 = v.x - geo.field / 2 + (detector % 3) * size
    y0 = v.y - geo.field / 2 + (detector // 3) * size
    pixels = round(size * 3600 / PIXEL_SCALE)
    values: dict[str, Any] = {
        "ccdVisitId": v.visit * 100 + detector.astype(np.int64),
        "visitId": v.visit,
        "detector": detector,
        "physical_filter": f"{BANDS[v.band]}_sim",
        "band": BANDS[v.band],
        "pixelScale": PIXEL_SCALE,
        "expTime": EXPOSURE,
        "skyRotation": 0.0,
        "expMidptMJD": v.mjd,
        "obsStartMJD": v.mjd - EXPOSURE / 2 / 86400,
        "xSize": pixels,
        "ySize": pixels,
        "magLim": M5[v.band],
    }
    values["ra"], values["dec"] = geo.radec(x0 + size / 2, y0 + size / 2)
    for corner, (dx, dy) in {"llc": (0, 0), "ulc": (0, 1), "urc": (1, 1), "lrc": (1, 0)}.items():
        values[f"{corner}ra"], values[f"{corner}dec"] = geo.radec(x0 + dx * size, y0 + dy * size)
    return arrow_table("CcdVisit", values, 9)


# ---------------------------------------------------------------- survey-level tables


def _ssobject_table(config: SurveyConfig, sky: _Sky) -> pa.Table:
    """Known asteroids with nominal orbital elements (not consistent with their motion on the sky)."""
    asteroids = np.flatnonzero(sky.kind == ASTEROID)
    known = asteroids[sky.ss_id[asteroids] >= 0]
    number = np.flatnonzero(sky.ss_id[asteroids] >= 0)  # index among all asteroids
    n = len(known)
    rng = np.random.default_rng([config.seed, _ORBITS])
    year = (datetime.datetime(1858, 11, 17) + datetime.timedelta(days=config.first_mjd)).year
    half_month, letter = (
        np.array(list("ABCDEFGHJKLMNOPQRSTUVWXY")),
        np.array(list("ABCDEFGHJKLMNOPQRSTUVWXYZ")),
    )
    designation = [
        f"{year} {a}{b}{c}" if c else f"{year} {a}{b}"
        for a, b, c in zip(half_month[number % 24], letter[number // 24 % 25], number // 600, strict=True)
    ]
    values = {
        "ssObjectId": sky.ss_id[known],
        "designation": np.array(designation, dtype=str),
        "q": rng.uniform(1.8, 3.5, n),
        "e": rng.uniform(0.0, 0.3, n),
        "incl": rng.uniform(0.0, 25.0, n),
        "node": rng.uniform(0.0, 360.0, n),
        "argPeri": rng.uniform(0.0, 360.0, n),
        "meanAnomaly": rng.uniform(0.0, 360.0, n),
        "epochMjdTai": config.first_mjd,
    }
    return arrow_table("SSObject", values, n)


def _truth_objects_table(geo: _Geometry, sky: _Sky) -> pa.Table:
    ra, dec = geo.radec(sky.x, sky.y)
    asteroid = sky.kind == ASTEROID

    def nullable(values: np.ndarray) -> pa.Array:
        return pa.array(values, pa.float64(), from_pandas=True)  # NaN -> null

    return pa.table(
        {
            "truthId": np.arange(len(sky.kind), dtype=np.int64),
            "kind": np.array(KINDS)[sky.kind],
            "ra0": ra,
            "dec0": dec,
            "mag": sky.mag,
            "period": nullable(sky.period),
            "amplitude": nullable(sky.amplitude),
            "peakMjd": nullable(sky.peak_mjd),
            "rateRa": nullable(sky.rate_x),
            "rateDec": nullable(sky.rate_y),
            "ssObjectId": _nullable_ids(sky.ss_id),
            "isolated": pa.array(sky.isolated, pa.bool_(), mask=asteroid),
        }
    )


# ---------------------------------------------------------------- Arrow and files


@cache
def _target(table: str, kind: str) -> TargetTable:
    if kind == "release":
        return target_table("release", latest_version(), "release", table)
    return target_table("prompt", latest_version(), "prompt", table)


def arrow_table(table: str, values: dict[str, Any], rows: int, kind: str = "prompt") -> pa.Table:
    """Every column of ``table`` in a ``kind`` catalog, in table order and with the schema's types.

    Scalars are repeated over the rows; missing columns are null. Prompt input files leave out
    the columns the prompt ingest assigns; a release table has every column.
    """
    target = _target(table, kind)
    skip = ASSIGNED_COLUMNS.get(table, ()) if kind == "prompt" else ()
    unknown = set(values) - {c.canonical for c in target.columns.values()}
    if unknown:
        raise KeyError(f"no columns {sorted(unknown)} in {table}")
    arrays, schema = [], []
    for col in target.columns.values():
        if col.canonical in skip:
            continue
        value = values.get(col.canonical)
        if value is None:
            if not col.nullable:
                raise ValueError(f"{table}.{col.canonical} is required")
            arrays.append(pa.nulls(rows, col.arrow_type))
        else:
            array = np.broadcast_to(np.asarray(value), (rows,))
            if not pa.types.is_string(col.arrow_type):
                array = array.astype(col.arrow_type.to_pandas_dtype())
            arrays.append(pa.array(array, col.arrow_type))
        schema.append(pa.field(col.canonical, col.arrow_type, nullable=col.nullable))
    return pa.Table.from_arrays(arrays, schema=pa.schema(schema))


def _nullable_ids(ids: np.ndarray) -> pa.Array:
    """int64 IDs with -1 as null."""
    return pa.array(ids.astype(np.int64), pa.int64(), mask=ids < 0)


def write_parquet(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _write_text(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def survey_config(out: Path, **given: object) -> SurveyConfig:
    """The configuration of the survey in ``out`` (if one is there) with the values ``given`` on top.

    ``given`` uses the CLI's names (``area`` for ``area_deg2``); ``None`` values are ignored.
    """
    values: dict[str, Any] = {}
    stored = out / "survey.json"
    if stored.is_file():
        known = {f.name for f in fields(SurveyConfig)}
        values = {k: v for k, v in json.loads(stored.read_text())["config"].items() if k in known}
        values["center"] = tuple(values["center"])
    for option, value in given.items():
        if value is not None:
            values["area_deg2" if option == "area" else option] = value
    return SurveyConfig(**values)


def night_after(last_visit: int | None) -> int:
    """The night that follows the one holding visit ``last_visit`` (0 when there is none)."""
    return 0 if last_visit is None else int(last_visit) // 1000  # night n holds visits (n + 1) * 1000 + j
