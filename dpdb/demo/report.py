"""The demo's report: rows per table, association against truth, example queries and plots.

The example queries run through :func:`dpdb.query.run_query`, the path ``dpdb query``
takes, and each carries the command that reproduces it. Their numbers are written
to ``report.json`` as well as printed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dpdb.model.layout import RELEASE_TABLES

from ..atomic import atomic_file
from ..config import Settings
from ..db import connect
from ..ids import reorigin
from ..pg import fetch_row
from ..query import run_query
from ..registry import prompt_log
from ..registry.activations import active_release
from ..registry.releases import all_releases, get_release
from ..timeutil import iso_utc
from .run import SCALES, DemoRun, Step

__all__ = ["Example", "DemoReport", "build_report", "EXAMPLE_ROWS"]

EXAMPLE_ROWS = 8  # rows of each example kept in the report
PROMPT_TABLES = ("Visit", "CcdVisit", "DiaObject", "DiaSource", "DiaForcedSource", "SSObject", "SSSource")


@dataclass
class Example:
    title: str
    command: str  # reproduces it
    sql: str
    columns: list[str]
    rows: list[list[Any]]  # the first EXAMPLE_ROWS
    row_count: int
    as_of: float | None = None
    note: str = ""


@dataclass
class DemoReport:
    scale: str
    out: str
    steps: list[Step]
    rows: dict[str, dict[str, int]]  # catalog -> table -> rows
    association: dict[str, float | int]
    dia_object_id: int  # the prompt DiaObject the examples follow
    examples: list[Example] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: Path) -> None:
        with atomic_file(path, binary=False) as f:
            f.write(json.dumps(self.to_json(), indent=1, default=_json_value) + "\n")


def build_report(settings: Settings, run: DemoRun, steps: list[Step]) -> DemoReport:
    """Count, compare with truth, run the examples and draw the plots into ``run.out``."""
    from ..processing.simulator import association_quality

    quality = association_quality(settings, run.visit_dirs)
    with connect(settings) as conn:
        loaded = [r.name for r in all_releases(conn) if r.name in run.releases and r.loaded]
        rows = _rows(conn, loaded)
        before = _instant_between_releases(conn, run)
        dia_object_id = _example_object(conn, before)
        current = get_release(conn, active_release(conn) or run.releases[-1])
    report = DemoReport(
        run.scale, str(run.out), steps, rows,
        asdict(quality), dia_object_id,
    )  # fmt: skip
    assert current.origin is not None  # every release has its origin
    copy = int(reorigin(np.array([dia_object_id]), current.origin)[0])
    report.examples = _examples(settings, dia_object_id, (current.name, copy), before)
    report.plots = [str(p) for p in _plots(settings, run.out, dia_object_id)]
    return report


def _rows(conn: Any, releases: list[str]) -> dict[str, dict[str, int]]:
    from psycopg import sql

    rows: dict[str, dict[str, int]] = {"prompt": {}}
    for table in PROMPT_TABLES:
        rows["prompt"][table] = conn.execute(
            sql.SQL("SELECT count(*) FROM prompt.{}").format(sql.Identifier(table.lower()))
        ).fetchone()[0]
    rows["prompt"]["DiaObject (current versions)"] = conn.execute(
        "SELECT count(*) FROM prompt.diaobjectlast"
    ).fetchone()[0]
    for name in releases:
        rows[name] = {}
        for table in RELEASE_TABLES:
            rows[name][table] = conn.execute(
                sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(name), sql.Identifier(table.lower())
                )
            ).fetchone()[0]
    return rows


def _instant_between_releases(conn: Any, run: DemoRun) -> float:
    """The processing time of the last visit before dr1: the prompt catalog as dr1 saw it."""
    from ..processing.simulator import first_visit_of_night

    found = prompt_log.processing_time_before_visit(conn, first_visit_of_night(SCALES[run.scale].nights_dr1))
    assert found is not None  # the demo ingests nights before dr1
    return found


def _example_object(conn: Any, before: float) -> int:
    """The prompt DiaObject the examples follow: of those that existed before dr1 and grew since,
    the one with the most DiaSources (lowest ID on ties)."""
    row = conn.execute(
        """
        SELECT l.diaobjectid
        FROM prompt.diaobjectlast l
        JOIN prompt.DiaObject_as_of(%(t)s::float8) p USING (diaobjectid)
        WHERE l.ndiasources > p.ndiasources
        ORDER BY l.ndiasources DESC, l.diaobjectid
        LIMIT 1
        """,
        {"t": before},
    ).fetchone()
    if row is None:
        from ..errors import DpdbError

        raise DpdbError("the demo survey has no DiaObject that grew after dr1; nothing to show")
    return int(row[0])


def _examples(settings: Settings, prompt_id: int, current: tuple[str, int], before: float) -> list[Example]:
    """The examples, about ``prompt_id`` and its copy in the current release: (name, ID)."""
    release, release_id = current
    with connect(settings) as conn:
        ra, dec = fetch_row(
            conn, "SELECT ra, dec FROM prompt.diaobjectlast WHERE diaobjectid = %s", (prompt_id,)
        )
    # The SQL below is shown to the reader to copy; its numbers are our own floats and IDs, formatted.
    cone = (
        "SELECT objectId, coord_ra, coord_dec, refExtendedness,\n"
        "       nanojanskyToAbMag(r_psfFlux) AS r_mag,\n"
        f"       q3c_dist(coord_ra, coord_dec, {ra:.6f}, {dec:.6f}) * 3600 AS dist_arcsec\n"
        "FROM current.Object\n"
        f"WHERE q3c_radial_query(coord_ra, coord_dec, {ra:.6f}, {dec:.6f}, 60 / 3600.0)\n"
        "ORDER BY dist_arcsec"
    )
    light_curve = (
        "SELECT diaSourceId, midpointMjdTai, band, psfFlux, psfFluxErr,\n"
        "       nanojanskyToAbMag(psfFlux) AS mag\n"
        "FROM prompt.DiaSource\n"
        f"WHERE diaObjectId = {prompt_id} AND timeWithdrawnMjdTai IS NULL\n"
        "ORDER BY midpointMjdTai"
    )
    version = (
        "SELECT diaObjectId, nDiaSources, ra, dec, r_psfFluxMean, validityStartMjdTai\n"
        "FROM prompt.DiaObject\n"
        f"WHERE diaObjectId = {prompt_id} AND validityEndMjdTai IS NULL"
    )
    match = (
        "SELECT s.diaSourceId, s.band, o.diaObjectId, obj.objectId,\n"
        "       q3c_dist(o.ra, o.dec, obj.coord_ra, obj.coord_dec) * 3600 AS sep_arcsec\n"
        "FROM current.DiaSource s\n"
        "JOIN current.DiaObject o USING (diaObjectId)\n"
        "JOIN current.Object obj ON q3c_join(o.ra, o.dec, obj.coord_ra, obj.coord_dec, 1.0 / 3600)\n"
        f"WHERE o.diaObjectId = {release_id}\n"
        "ORDER BY s.midpointMjdTai"
    )
    releases = (
        "SELECT name, state, schema_version, origin, activated_at\n"
        "FROM dpdb_registry.release ORDER BY created_at"
    )
    t = f"{before:.6f}"
    return [
        _example(settings, "cone search: current.Object within 1′ of the example DiaObject", cone),
        _example(settings, f"light curve of DiaObject {prompt_id} (prompt catalog)", light_curve),
        _example(
            settings,
            f"DiaObject {prompt_id} as of MJD TAI {t} ({iso_utc(before)}), before dr1",
            version,
            as_of=before,
            note="the same query without --as-of gives the version of now: see the next line",
        ),  # fmt: skip
        _example(settings, f"DiaObject {prompt_id} now", version),
        _example(
            settings, f"DiaSource -> DiaObject -> Object through current ({release} ID {release_id})", match
        ),
        _example(settings, "data releases", releases),
    ]


def _example(
    settings: Settings, title: str, sql_text: str, *, as_of: float | None = None, note: str = ""
) -> Example:
    table = run_query(settings, sql_text, as_of=as_of)
    command = "dpdb query " + (f"--as-of {as_of:.6f} " if as_of is not None else "") + _shell_quote(sql_text)
    return Example(title, command, sql_text, table.column_names, _head(table), table.num_rows, as_of, note)


def _head(table: pa.Table) -> list[list[Any]]:
    rows = table.slice(0, EXAMPLE_ROWS).to_pylist()
    return [[_json_value(v) for v in r.values()] for r in rows]


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def _shell_quote(text: str) -> str:
    return '"' + " ".join(text.split()) + '"'


def _plots(settings: Settings, out: Path, dia_object_id: int) -> list[Path]:
    from ..plots import plot_history, plot_lightcurve, plot_sky

    return [
        plot_lightcurve(settings, dia_object_id, out / f"lightcurve_{dia_object_id}.png"),
        plot_sky(settings, out / "sky_current_Object.png", release="current", table="Object"),
        plot_history(settings, dia_object_id, out / f"history_{dia_object_id}.png"),
    ]
