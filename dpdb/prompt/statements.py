"""The statements of sql/prompt_ingest.sql, with their column lists filled in from the schema."""

from __future__ import annotations

from psycopg import sql as pgsql

from dpdb.config import Settings
from dpdb.named_sql import named_blocks, statements

from .staging import OWN_PIXEL, VisitInput

__all__ = ["BANDS", "block", "field_radius", "VERSION_COLUMNS"]

BANDS = "ugrizy"

# Per-band DiaObject columns: (column suffix, aggregate in psf_band / forced_band).
_PSF = (
    ("psffluxmean", "mean"),
    ("psffluxmeanerr", "meanerr"),
    ("psffluxsigma", "sigma"),
    ("psffluxchi2", "chi2"),
    ("psffluxndata", "ndata"),
    ("psffluxmin", "fmin"),
    ("psffluxmax", "fmax"),
    ("psffluxerrmean", "errmean"),
)
_FORCED = (
    ("fpfluxmean", "fpmean"),
    ("fpfluxmeanerr", "fpmeanerr"),
    ("sciencefluxmean", "scimean"),
    ("sciencefluxmeanerr", "scimeanerr"),
    ("sciencefluxsigma", "scisigma"),
)
_NEARBY = tuple(f"nearbyobj{i}" for i in range(1, 7))


def _pivot(spec: tuple[tuple[str, str], ...]) -> str:
    return ",\n       ".join(
        f"max({agg}) FILTER (WHERE band = '{b}') AS {b}_{suffix}" for b in BANDS for suffix, agg in spec
    )


def _band_columns() -> str:
    cols = []
    for b in BANDS:
        for suffix, _ in _PSF:
            name = f"{b}_{suffix}"
            cols.append(f"coalesce(b.{name}, 0) AS {name}" if suffix == "psffluxndata" else f"b.{name}")
        cols += [f"f.{b}_{suffix}" for suffix, _ in _FORCED]
    return ",\n       ".join(cols)


_NEARBY_COLUMNS = ",\n       ".join(f"NULL::bigint AS {n}, NULL::real AS {n}dist" for n in _NEARBY)
_NEARBY_SET = ",\n    ".join(  # nearbyObj1-3: stars, 4-6: galaxies
    f"{n} = n.{kind}_ids[{i % 3 + 1}], {n}dist = n.{kind}_dists[{i % 3 + 1}]"
    for i, n in enumerate(_NEARBY)
    for kind in ["star" if i < 3 else "galaxy"]
)
_PSF_PIVOT = _pivot(_PSF)
_FORCED_PIVOT = _pivot(_FORCED)
_BAND_COLUMNS = _band_columns()

VERSION_COLUMNS: tuple[str, ...] = (
    "diaobjectid", "validitystartmjdtai", "_healpix_29", "ra", "dec", "raerr", "decerr", "radecmjdtai",
    "ndiasources", "firstdiasourcemjdtai", "lastdiasourcemjdtai",
    *(f"{b}_{suffix}" for b in BANDS for suffix, _ in _PSF + _FORCED),
    *(c for n in _NEARBY for c in (n, f"{n}dist")),
)  # fmt: skip
"""Columns of each new DiaObject version (the others stay NULL: no proper motions, periods, ...)."""


_NEARBY_COPY = ",\n    ".join(f"{c} = o.{c}" for n in _NEARBY for c in (n, f"{n}dist"))


def field_radius(visit: VisitInput, settings: Settings) -> float:
    """Radius (deg) of the visit's field: every measurement plus the association radius."""
    return visit.field_radius(settings.association_radius / 3600 + 1e-4)


def block(
    name: str,
    settings: Settings,
    *,
    visit: VisitInput | None = None,
    release: str | None = None,
    file: str = "prompt_ingest.sql",
    **columns: list[str],
) -> list[str]:
    """The statements of block ``name`` of ``sql/<file>``, placeholders filled.

    ``visit`` gives the DiaSource/DiaForcedSource column lists of a visit's
    input, ``release`` the active release, and ``columns`` further column
    lists by placeholder name (``{x}`` is the list, ``{x_prefixed}`` the same
    with the alias ``x``'s first letter, as in ``s.col``).
    """
    text = named_blocks(file)[name]
    if "{" not in text:
        return statements(text)
    lists = dict(columns)
    if visit is not None:
        lists["source_columns"] = [c for c in visit.tables["DiaSource"].column_names if c != OWN_PIXEL]
        lists["forced_columns"] = [c for c in visit.tables["DiaForcedSource"].column_names if c != OWN_PIXEL]
    values = {key: ", ".join(cols) for key, cols in lists.items()}
    values.update(
        {f"{key[0]}_{key}": ", ".join(f"{key[0]}.{c}" for c in cols) for key, cols in lists.items()}
    )
    if visit is not None and "{field_ra}" in text:  # the field's cone as literals (release_objects)
        values.update(
            field_ra=repr(float(visit.center[0])),
            field_dec=repr(float(visit.center[1])),
            field_radius=repr(float(field_radius(visit, settings))),
        )
    values.update(
        psf_pivot=_PSF_PIVOT,
        forced_pivot=_FORCED_PIVOT,
        band_columns=_BAND_COLUMNS,
        nearby_columns=_NEARBY_COLUMNS,
        nearby_set=_NEARBY_SET,
        nearby_copy=_NEARBY_COPY,
        version_columns=", ".join(VERSION_COLUMNS),
        release=pgsql.Identifier(release).as_string(None) if release else "",
        radius=repr(settings.association_radius / 3600),
        ss_radius=repr(settings.ss_radius / 3600),
        nearby_radius=repr(settings.nearby_radius / 3600),
    )
    return statements(text.format_map(values))
