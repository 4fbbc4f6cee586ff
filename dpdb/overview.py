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

from ._version import code_version
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
    software_version: str = field(default_factory=code_version)
    notes: list[str] = field(default_factory=list)


def overview(settings: Settings) -> Overview:
    """The prompt catalog's figures and last visit, every release's state, rows and dates."""
    from .lifecycle.listing import list_releases
    from .registry.activations import active_release, previous_release
    from .registry.catalogs import find_catalog
    from .registry.prompt_log import newest_visit, relink_count, visit_totals
    from .registry.versions import database_version

    releases = list_releases(settings)
    with connect(settings) as conn:
        conn.rollback()
        conn.read_only = True
        version = database_version(conn)
        catalog = find_catalog(conn, "prompt")
        prompt = None
        if catalog is not None:
            sums = visit_totals(conn)
            with conn.cursor(row_factory=dict_row) as cur:
                objects = cur.execute(
                    "SELECT (SELECT count(*) FROM prompt.diaobjectlast) AS dia, "
                    "(SELECT count(*) FROM prompt.ssobject WHERE validityendmjdtai IS NULL) AS ss"
                ).fetchone()
            assert objects is not None
            prompt = PromptSummary(
                catalog.schema_version, catalog.created_at,
                {"Visit": sums["visits"], "DiaSource": sums["dia_sources"],
                 "DiaForcedSource": sums["forced"], "DiaObject": int(objects["dia"]),
                 "SSObject": int(objects["ss"])},
                newest_visit(conn), relink_count(conn),
            )  # fmt: skip
        current, previous = active_release(conn), previous_release(conn)
        conn.rollback()
    return Overview(prompt, releases, current, previous, version)
