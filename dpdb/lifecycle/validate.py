"""``dpdb release validate``: checks of a loaded release, each with its figure, in a report.

Checks (one scan per table, plus one join per measurement table):

- rows: every table's row count equals the production manifest's;
- keys: primary keys unique across partitions;
- ids: every ID (keys and references) carries the release's origin, which no
  other release or the prompt catalog holds (DPDD §2.4), loaded or archived;
- references: every Source/ForcedSource (DiaSource/DiaForcedSource) has its
  Object (DiaObject) in the same partition, and its CcdVisit;
- positions: in range, and each object's pixel is its position's;
- coverage: the share of the previous release's well-sampled sky (HEALPix order 6) this one covers;
- nulls: no column's null fraction grows more than a threshold over the previous release's.

The previous release is the active one (the one this release would replace).
The report is stored in the registry (the next release compares with it) and
the release becomes ``validated`` (frozen for loaders) or ``failed``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from dpdb.access import revoke_loader
from dpdb.config import Settings
from dpdb.db import connect
from dpdb.errors import ReleaseStateError
from dpdb.etl.validate import TargetTable, target_table
from dpdb.healpix import PIXEL_ORDER, pixels
from dpdb.ids import ORIGIN_SHIFT, PROMPT_ORIGIN
from dpdb.model.layout import LAYOUTS, PIXEL_COLUMN, RELEASE_TABLES
from dpdb.named_sql import named_blocks
from dpdb.pg import adbc_connection, fetch_row
from dpdb.registry.activations import active_release
from dpdb.registry.catalogs import find_catalog
from dpdb.registry.releases import NOW, Release, get_release, origin_holders, set_state
from dpdb.registry.states import VALIDATABLE, CatalogKind, ReleaseState, names
from dpdb.shards import validate as per_shard

__all__ = ["Check", "Report", "validate_release", "COVERAGE_ORDER"]

COVERAGE_ORDER = 6
"""HEALPix order of the coverage map (0.84 deg² pixels: dense enough in a small simulated release)."""

WELL_SAMPLED = 10
"""Objects a pixel must hold in the previous release for its absence now to count as lost sky."""



@dataclass
class Check:
    name: str
    ok: bool
    figure: str
    detail: str = ""


@dataclass
class Report:
    release: str
    compared_with: str | None
    checks: list[Check] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    coverage: dict[str, int] = field(default_factory=dict)  # objects per pixel at COVERAGE_ORDER
    null_fractions: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, bad: int | float, figure: str, detail: str = "", ok: bool | None = None) -> None:
        self.checks.append(Check(name, bad == 0 if ok is None else ok, figure, detail))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def validate_release(settings: Settings, name: str) -> Report:
    """Run every check on release ``name``; store the report; state ``validated`` or ``failed``."""
    start = time.monotonic()
    with connect(settings) as conn:
        rel = get_release(conn, name)
        if rel.state not in VALIDATABLE:
            raise ReleaseStateError(
                f"release {name} is {rel.state}; only {names(VALIDATABLE)} releases can be validated"
            )
        catalog = find_catalog(conn, name)
        assert catalog is not None  # a loaded release has its catalog
        version = catalog.schema_version
        targets = {t: target_table(name, version, CatalogKind.RELEASE, t) for t in RELEASE_TABLES}
        active = active_release(conn)
        baseline = get_release(conn, active) if active and active != name else None
        report = Report(name, baseline.name if baseline else None)
        _profile(conn, rel, targets, report)
        _references(conn, name, report)
        _pixels(settings, conn, targets, report)
        _coverage(conn, name, baseline, report, settings.coverage_threshold)
        _null_fractions(baseline, report, settings.null_fraction_threshold)
        report.seconds = time.monotonic() - start
        if report.ok:
            revoke_loader(conn, name)
        set_state(
            conn, name, ReleaseState.VALIDATED if report.ok else ReleaseState.FAILED, validated_at=NOW,
            report=report.to_json(),
        )
    return report


def _profile(conn: psycopg.Connection, rel: Release, targets: dict[str, TargetTable], report: Report) -> None:
    """Rows, duplicate keys, foreign-origin IDs, bad positions and null counts: one scan per table."""
    expected = rel.expected_rows or {}
    sharded = per_shard.sharded_tables(conn, rel.name)
    others = origin_holders(conn, rel.origin or 0, besides=rel.name)
    report.add("ids: origin held by no other catalog", others + (rel.origin == PROMPT_ORIGIN),
               f"origin {rel.origin}, {others} other release(s) with it")  # fmt: skip
    for table, target in targets.items():
        id_cols = _id_columns(target)
        exprs: list[sql.Composable] = [sql.SQL("count(*)")]
        exprs.append(
            sql.SQL("count(DISTINCT ({}))").format(
                sql.SQL(", ").join(map(sql.Identifier, target.primary_key))
            )
        )
        wrong = (
            sql.SQL(" OR ").join(
                sql.SQL("{c} >> {s} <> {o}").format(
                    c=sql.Identifier(c), s=sql.Literal(ORIGIN_SHIFT), o=sql.Literal(rel.origin)
                )
                for c in id_cols
            )
            if id_cols
            else sql.SQL("false")
        )
        exprs.append(sql.SQL("count(*) FILTER (WHERE {})").format(wrong))
        if target.position:
            ra, dec = map(sql.Identifier, target.position)
            exprs.append(
                sql.SQL(
                    "count(*) FILTER (WHERE NOT ({ra} >= 0 AND {ra} < 360 AND {dec} BETWEEN -90 AND 90))"
                ).format(ra=ra, dec=dec)
            )
        else:
            exprs.append(sql.SQL("0"))
        columns = list(target.columns.values())
        exprs += [sql.SQL("count({})").format(sql.Identifier(c.name)) for c in columns]
        shards = sharded.get(target.db_name)
        row: Any
        if shards:  # on every shard at once, added up; keys compared across shards (dpdb/shards)
            summable = sql.SQL(", ").join(exprs[:1] + exprs[2:])  # all but count(DISTINCT key)
            row = per_shard.summed(conn, rel.name, target.db_name, shards, summable)
            key = list(target.primary_key)
            row.insert(1, per_shard.distinct_keys(conn, rel.name, target.db_name, shards, key))
        else:
            row = conn.execute(
                sql.SQL("SELECT {} FROM {}").format(
                    sql.SQL(", ").join(exprs), sql.Identifier(rel.name, target.db_name)
                )
            ).fetchone()
        assert row is not None
        n, distinct, foreign, bad_pos, *counts = row
        report.rows[table] = n
        want = expected.get(table, 0)
        report.add(f"rows: {table}", n != want, f"{n} of {want} in the manifest")
        report.add(
            f"keys: {table}", n - distinct, f"{n - distinct} repeated ({', '.join(target.primary_key)})"
        )
        if id_cols:
            report.add(
                f"ids: {table}", foreign, f"{foreign} rows with IDs of another origin ({', '.join(id_cols)})"
            )
        if target.position:
            report.add(f"positions: {table}", bad_pos, f"{bad_pos} out of range")
        report.null_fractions[table] = {
            c.canonical: round(1 - k / n, 6) if n else 0.0 for c, k in zip(columns, counts, strict=True)
        }


def _id_columns(target: TargetTable) -> list[str]:
    """Columns holding IDs minted by the release: its own ID and the IDs it refers to."""
    return [c for c in target.columns if c.endswith(("objectid", "sourceid")) and not c.startswith("parent")]


def _references(conn: psycopg.Connection, release: str, report: Report) -> None:
    template = named_blocks("release_validate.sql")["references"]
    for lay in LAYOUTS.values():
        if lay.name not in RELEASE_TABLES or not lay.parent or not lay.parent_key:
            continue
        query = template.format(
            release=sql.Identifier(release).as_string(conn), child=lay.name.lower(),
            parent=lay.parent.lower(), key=lay.parent_key.lower(),
        )  # fmt: skip
        orphans, misplaced, no_ccd = fetch_row(conn, query.encode())
        report.add(
            f"references: {lay.name} -> {lay.parent}", orphans, f"{orphans} without their {lay.parent}"
        )
        report.add(f"partitions: {lay.name}", misplaced, f"{misplaced} not in their {lay.parent}'s partition")
        report.add(f"references: {lay.name} -> CcdVisit", no_ccd, f"{no_ccd} without their CcdVisit")


def _pixels(
    settings: Settings, conn: psycopg.Connection, targets: dict[str, TargetTable], report: Report
) -> None:
    """Each object's stored pixel (its partition key) against its position's, computed with healpy."""
    sharded = None
    with adbc_connection(settings) as aconn, aconn.cursor() as cur:
        for table, target in targets.items():
            if not target.partitioned or target.parent or not target.position:
                continue
            ra, dec = target.position
            if sharded is None:
                sharded = per_shard.sharded_tables(conn, target.catalog)
            shards = sharded.get(target.db_name)
            if shards:  # read from every shard at once
                parts = per_shard.arrow_per_shard(conn, target.catalog, target.db_name, shards,
                                                  [ra, dec, PIXEL_COLUMN])  # fmt: skip
            else:
                query = sql.SQL("SELECT {}, {}, {} FROM {}").format(
                    sql.Identifier(ra), sql.Identifier(dec), sql.Identifier(PIXEL_COLUMN),
                    sql.Identifier(target.catalog, target.db_name),
                )  # fmt: skip
                cur.execute(query.as_string(conn))
                parts = [cur.fetch_arrow_table()]
            wrong = sum(
                int(np.count_nonzero(
                    pixels(d[ra].to_numpy(), d[dec].to_numpy()) != d[PIXEL_COLUMN].to_numpy()
                ))  # fmt: skip
                for d in parts
            )
            report.add(f"partitions: {table}", wrong, f"{wrong} whose pixel is not their position's")


def _coverage(
    conn: psycopg.Connection, release: str, baseline: Release | None, report: Report, threshold: float
) -> None:
    """Share of the previous release's well-sampled pixels this release still covers."""
    query = named_blocks("release_validate.sql")["coverage"].format(
        release=sql.Identifier(release).as_string(conn), parent="object",
        order=COVERAGE_ORDER, shift=2 * (PIXEL_ORDER - COVERAGE_ORDER),
    )  # fmt: skip
    report.coverage = {str(p): n for p, n in conn.execute(query.encode())}
    area = len(report.coverage) * 41_252.96 / (12 * 4**COVERAGE_ORDER)
    before = (baseline.report or {}).get("coverage", {}) if baseline else {}
    sampled = {p for p, n in before.items() if n >= WELL_SAMPLED}
    if baseline is None or not sampled:
        report.add("coverage", 0, f"{len(report.coverage)} pixels ({area:.1f} deg²); no previous release")
        return
    share = len(sampled & set(report.coverage)) / len(sampled)
    report.add(
        "coverage", 0, f"{share:.1%} of {baseline.name}'s sky covered (threshold {threshold:.0%}), "
        f"{len(report.coverage)} pixels ({area:.1f} deg²)", ok=share >= threshold,
    )  # fmt: skip


def _null_fractions(baseline: Release | None, report: Report, threshold: float) -> None:
    """Columns that got emptier than the baseline by more than ``threshold`` plus 3 sigma of sampling noise.

    A column filling in is progress, one emptying out a regression. The noise
    term keeps small tables (a few hundred DiaObjects) from failing by chance;
    on large tables it vanishes.
    """
    if baseline is None or not baseline.report:
        return
    before, old_rows = baseline.report.get("null_fractions", {}), baseline.report.get("rows", {})
    for table, fractions in report.null_fractions.items():
        old, n_old, n_new = before.get(table), old_rows.get(table, 0), report.rows.get(table, 0)
        if not old or not n_old or not n_new:
            continue
        moved = {}
        for column, f in fractions.items():
            if column not in old:
                continue
            p = (f * n_new + old[column] * n_old) / (n_new + n_old)
            noise = 3 * math.sqrt(p * (1 - p) * (1 / n_new + 1 / n_old))
            if f - old[column] > threshold + noise:
                moved[column] = f - old[column]
        detail = ", ".join(f"{c} {old[c]:.2f}->{fractions[c]:.2f}" for c in sorted(moved)[:5])
        report.add(
            f"nulls: {table}", len(moved),
            f"{len(moved)} of {len(fractions)} columns more than {threshold:.2f} (+3 sigma) emptier than in "
            f"{baseline.name}", detail,
        )  # fmt: skip
