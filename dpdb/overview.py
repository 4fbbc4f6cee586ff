"""What a database holds, at a glance: the prompt catalog (its size and last visit) and every release.

The portal's home page shows it (``Archive.overview``). Release rows come from
:func:`dpdb.lifecycle.listing.list_releases`; the prompt catalog's figures come
from the visit registry (``dpdb_meta.prompt_visit``: exact counts without a scan)
and from ``prompt.DiaObjectLast`` (one row per DiaObject).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row

from . import __version__
from .config import Settings
from .db import connect

__all__ = ["PromptSummary", "Overview", "overview"]


@dataclass(frozen=True)
class PromptSummary:
    """The living prompt catalog.

    Attributes
    ----------
    rows
        Per table: ``Visit`` (visits ingested), ``DiaSource`` and ``DiaForcedSource``
        (rows the ingests stored), ``DiaObject`` (DiaObjects with a current version)
        and ``SSObject`` (SSObjects with a current version).
    last_visit
        The visit ingested last: ``visit``, ``midpoint_mjd_tai``, ``processing_time_mjd_tai``,
        ``ingested_at`` and its counts; None before the first.
    """

    schema_version: int | None
    created_at: datetime | None
    rows: dict[str, int]
    last_visit: dict[str, Any] | None
    relinks: int


@dataclass(frozen=True)
class Overview:
    """The catalogs of one database (see :func:`overview`)."""

    prompt: PromptSummary | None
    releases: list[Any]  # dpdb.lifecycle.listing.ReleaseRow
    current: str | None
    previous: str | None
    schema_version: int | None
    software_version: str = __version__
    notes: list[str] = field(default_factory=list)


def overview(settings: Settings) -> Overview:
    """The prompt catalog's figures and last visit, every release's state, rows and dates."""
    from .lifecycle.listing import list_releases
    from .registry.activations import active_release, previous_release

    releases = list_releases(settings)
    with connect(settings) as conn:
        conn.rollback()
        conn.read_only = True
        with conn.cursor(row_factory=dict_row) as cur:
            version = cur.execute("SELECT max(version) AS v FROM dpdb_meta.schema_version").fetchone()
            catalog = cur.execute(
                "SELECT schema_version, created_at FROM dpdb_meta.catalog WHERE name = 'prompt'"
            ).fetchone()
            prompt = None
            if catalog is not None:
                sums = cur.execute(
                    "SELECT count(*) AS visits, coalesce(sum(n_diasources), 0) AS dia_sources, "
                    "coalesce(sum(n_forced), 0) AS forced FROM dpdb_meta.prompt_visit"
                ).fetchone()
                objects = cur.execute(
                    "SELECT (SELECT count(*) FROM prompt.diaobjectlast) AS dia, "
                    "(SELECT count(*) FROM prompt.ssobject WHERE validityendmjdtai IS NULL) AS ss, "
                    "(SELECT count(*) FROM dpdb_meta.prompt_relink) AS relinks"
                ).fetchone()
                last = cur.execute(
                    "SELECT visit, midpoint_mjd_tai, processing_time_mjd_tai, ingested_at, n_diasources, "
                    "n_associated, n_new_diaobjects, n_ss_attributed, n_forced, seconds "
                    "FROM dpdb_meta.prompt_visit ORDER BY processing_time_mjd_tai DESC LIMIT 1"
                ).fetchone()
                assert sums is not None and objects is not None
                prompt = PromptSummary(
                    catalog["schema_version"], catalog["created_at"],
                    {"Visit": int(sums["visits"]), "DiaSource": int(sums["dia_sources"]),
                     "DiaForcedSource": int(sums["forced"]), "DiaObject": int(objects["dia"]),
                     "SSObject": int(objects["ss"])},
                    last, int(objects["relinks"]),
                )  # fmt: skip
        current, previous = active_release(conn), previous_release(conn)
        conn.rollback()
    return Overview(prompt, releases, current, previous, version["v"] if version else None)
