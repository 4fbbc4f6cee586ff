"""Where a sharded release's partitions live: assignment, creation on the shards, foreign partitions.

When shards are registered, ``dpdb release create`` distributes the release's
HEALPix partitions (docs/architecture.md, decisions 6 and 9):

- the partitions are cut into one contiguous pixel range per shard, balanced
  by weight (the rows of the release's files when known, else sky area), so a
  cone touches few shards and an object's measurements share its shard;
- each shard gets a schema of the release's name holding the partitioned
  tables with only its partitions, as ordinary tables with their primary keys
  and q3c and key indexes;
- on the coordinator every partitioned table keeps its name and partition
  bounds, but each partition is a postgres_fdw foreign table on the leaf table
  of its shard. The planner prunes partitions on ``_healpix_29`` as before,
  and ships WHERE clauses, q3c calls and (partition-wise) aggregates to the
  shards. The coordinator's partitioned tables have no primary key: PostgreSQL
  cannot enforce a unique index over foreign partitions; each shard enforces it
  on its own partitions, and validation checks keys across the release.

Small tables (Visit, CcdVisit, SSObject, SSSource) stay on the coordinator.
The placement itself is PostgreSQL's catalog: the foreign partitions and the
servers they name (:func:`routes`, :func:`placement`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from dpdb.errors import ShardError
from dpdb.healpix import partition_bounds
from dpdb.model.ddl import catalog_ddl, partition_name, table_specs

from . import registry

__all__ = [
    "assign",
    "is_sharded",
    "weights_from",
    "create_sharded_catalog",
    "drop_on_shards",
    "Route",
    "routes",
    "placement",
    "shards_of",
    "rollup_name",
    "create_rollups",
    "upgrade_sharded_ddl",
]

log = logging.getLogger(__name__)


def assign(shards: Sequence[str], order: int, weights: Sequence[float] | None = None) -> dict[str, range]:
    """Contiguous partition ranges per shard at ``order``, balanced by ``weights`` (default: equal).

    The cut after shard *k* is where the cumulative weight first reaches
    (k+1)/n of the total; every shard gets at least one partition while there
    are enough partitions.
    """
    if not shards:
        raise ShardError("no shards registered")
    count = 12 * 4**order
    w = np.ones(count) if weights is None else np.asarray(weights, dtype=float)
    if w.sum() <= 0:
        w = np.ones(count)
    n = min(len(shards), count)
    cumulative = np.cumsum(w) / w.sum()
    cuts = [0]
    for k in range(1, n):
        cut = int(np.searchsorted(cumulative, k / n, side="left")) + 1
        cut = max(cut, cuts[-1] + 1)  # at least one partition each
        cut = min(cut, count - (n - k))  # and leave one for each shard still to come
        cuts.append(cut)
    cuts.append(count)
    return {shards[k]: range(cuts[k], cuts[k + 1]) for k in range(n)}


_NPIX = re.compile(r"Norder=(\d+)/Dir=\d+/Npix=(\d+)\.parquet$")


def weights_from(entries: Iterable[tuple[str, int]], order: int) -> list[float]:
    """Rows per partition at ``order`` from (path, rows) of a release directory's files.

    Files of a partitioned table are named by their HEALPix pixel (HATS layout:
    ``Norder=K/Dir=D/Npix=N``); a file at a coarser order than the partitions
    spreads its rows evenly over the partitions it covers. Other files (one per
    unpartitioned table) stay on the coordinator and weigh nothing.
    """
    weights = np.zeros(12 * 4**order)
    for path, rows in entries:
        m = _NPIX.search(path)
        if m is None:
            continue
        k, npix = int(m.group(1)), int(m.group(2))
        if k >= order:
            weights[npix >> (2 * (k - order))] += rows
        else:
            span = 4 ** (order - k)
            weights[npix * span : (npix + 1) * span] += rows / span
    return weights.tolist()


def is_sharded(conn: psycopg.Connection) -> bool:
    """New releases are sharded: at least one shard is registered."""
    return bool(registry.list_shards(conn))


def create_sharded_catalog(
    conn: psycopg.Connection, name: str, version: int, order: int, weights: Sequence[float] | None = None
) -> dict[str, range]:
    """Create release ``name``'s tables over the registered shards; the partitions each shard got.

    The shards' schemas are committed first (a schema left by an earlier attempt
    whose coordinator transaction did not commit is replaced); the coordinator's
    tables and foreign partitions are created in ``conn``'s transaction.
    """
    shards = [s.name for s in registry.list_shards(conn)]
    ranges = assign(shards, order, weights)
    for shard, parts in ranges.items():
        info = registry.shard_conninfo(conn, shard)
        with registry.connect_shard(info, shard) as remote:
            remote.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
            statements = catalog_ddl(name, version, "release", order, partitions=parts, only_partitioned=True)
            remote.execute(";\n".join(statements).encode())
        log.info("release %s: partitions %d-%d on shard %s", name, parts.start, parts.stop - 1, shard)
    statements = catalog_ddl(name, version, "release", order, partitions=())
    conn.execute(";\n".join(statements).encode())
    for spec in table_specs(name, version, "release"):
        if not spec.partitioned:
            continue
        table = spec.table.name
        conn.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.Identifier(name, table), sql.Identifier(f"{table}_pkey")
            )
        )
        _foreign_partitions(conn, name, table, order, ranges)
    create_rollups(conn, name)
    return ranges


def _foreign_partitions(
    conn: psycopg.Connection, name: str, table: str, order: int, ranges: dict[str, range]
) -> None:
    """Attach ``name``.``table``'s partitions as foreign tables on the shards that hold them."""
    bounds = partition_bounds(order)
    for shard, parts in ranges.items():
        for n in parts:
            _, lo, hi = bounds[n]
            part = partition_name(table, order, n)
            conn.execute(
                sql.SQL(
                    "CREATE FOREIGN TABLE {part} PARTITION OF {parent} FOR VALUES FROM ({lo}) TO ({hi}) "
                    "SERVER {server} OPTIONS (schema_name {schema}, table_name {table})"
                ).format(
                    part=sql.Identifier(name, part), parent=sql.Identifier(name, table),
                    lo=sql.Literal(lo), hi=sql.Literal(hi),
                    server=sql.Identifier(registry.server_name(shard)),
                    schema=sql.Literal(name), table=sql.Literal(part),
                )  # fmt: skip
            )


ROLLUP_SEPARATOR = "@"


def rollup_name(table: str, shard: str) -> str:
    """Name of the foreign table that reads all of ``table`` on ``shard`` at once: ``object@shard1``."""
    return f"{table.lower()}{ROLLUP_SEPARATOR}{shard}"


def create_rollups(conn: psycopg.Connection, name: str) -> list[str]:
    """Create the missing per-shard foreign tables of release ``name``; their names.

    ``name."object@shard1"`` is a foreign table on the shard's own partitioned
    ``name.object`` (all of its partitions there). PostgreSQL 15's postgres_fdw
    pushes an aggregate down to a single foreign table, never a partial
    aggregate through a partitioned table, so an aggregate over a
    sharded table is run as one aggregate per shard on these tables and combined
    on the coordinator (dpdb/shards/aggregate.py). Activation gives each one a
    view in ``current``/``previous`` like the release's tables.
    """
    made = []
    for table, shards in _sharded_tables(conn, name).items():
        columns = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (sql.Identifier(name, table).as_string(conn),),
        ).fetchall()
        for shard in shards:
            rollup = rollup_name(table, shard)
            exists = conn.execute("SELECT to_regclass(%s)", (sql.Identifier(name, rollup).as_string(conn),))
            if exists.fetchone() != (None,):
                continue
            create = sql.SQL("CREATE FOREIGN TABLE {} ({}) SERVER {} OPTIONS (schema_name {}, table_name {})")
            conn.execute(
                create.format(
                    sql.Identifier(name, rollup),
                    sql.SQL(", ").join(
                        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in columns
                    ),
                    sql.Identifier(registry.server_name(shard)), sql.Literal(name), sql.Literal(table),
                )  # fmt: skip
            )
            conn.execute(
                sql.SQL("COMMENT ON FOREIGN TABLE {} IS {}").format(
                    sql.Identifier(name, rollup), sql.Literal(f"all of {name}.{table} on shard {shard}")
                )
            )
            made.append(rollup)
    return made


def _sharded_tables(conn: psycopg.Connection, name: str) -> dict[str, list[str]]:
    """Partitioned table of release ``name`` -> the shards holding its partitions (sorted)."""
    out: dict[str, list[str]] = {}
    for table, server in conn.execute(
        "SELECT DISTINCT p.relname, s.srvname FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
        "JOIN pg_foreign_table ft ON ft.ftrelid = i.inhrelid JOIN pg_foreign_server s ON s.oid = ft.ftserver "
        "WHERE p.relnamespace = to_regnamespace(%s) ORDER BY 1, 2",
        (sql.Identifier(name).as_string(conn),),
    ):
        out.setdefault(table, []).append(registry.shard_of_server(server))
    return out


def _ranges_of(conn: psycopg.Connection, name: str, order: int) -> dict[str, range]:
    """Shard -> partition numbers of release ``name`` (read from its foreign partitions)."""
    number = {lo: n for n, lo, _ in partition_bounds(order)}
    out: dict[str, list[int]] = {}
    for shard, ranges in placement(conn, name).items():
        for lo, hi in ranges:
            first = number[lo]
            last = number.get(hi, len(number))
            out.setdefault(shard, []).extend(range(first, last))
    return {shard: range(min(parts), max(parts) + 1) for shard, parts in out.items()}


def upgrade_sharded_ddl(
    conn: psycopg.Connection, name: str, old: int, new: int, order: int
) -> tuple[list[str], Callable[[psycopg.Connection], None]] | None:
    """Bring sharded release ``name`` from schema ``old`` to ``new`` on its shards; the coordinator's DDL.

    None: the release is not sharded (the caller runs the ordinary DDL). Else
    every shard gets the new columns of its partitioned tables (``ADD COLUMN IF
    NOT EXISTS``, committed there first, so a rerun after a failure goes through)
    and the tables new in ``new``; the statements returned alter the
    coordinator's tables (the foreign partitions follow their parent) and the
    per-shard foreign tables and create the new partitioned tables, in the
    caller's transaction; the callable returned then attaches their foreign
    partitions and foreign tables per shard.
    """
    from dpdb.model.ddl import added_columns_ddl, table_ddl

    shards = shards_of(conn, name)
    if not shards:
        return None
    ranges = _ranges_of(conn, name, order)
    old_specs = {s.name: s for s in table_specs(name, old, "release")}
    coordinator: list[str] = []
    remote: dict[str, list[str]] = {shard: [] for shard in shards}
    new_tables = []
    for spec in table_specs(name, new, "release"):
        if spec.name in old_specs or not spec.partitioned:
            continue
        new_tables.append(spec)
        for shard, parts in ranges.items():
            remote[shard] += [_if_not_exists(s) for s in table_ddl(spec, order, parts)]
    added = [s for s in added_columns_ddl(name, "release", old, new, order)
             if s.startswith(("ALTER TABLE", "COMMENT ON COLUMN"))]  # fmt: skip
    partitioned = {s.table.name.lower() for s in table_specs(name, new, "release") if s.partitioned}
    sharded = _sharded_tables(conn, name)
    for statement in added:
        coordinator.append(statement)
        m = _ALTER.match(statement)
        if m is None or m.group(2) != name or m.group(4).lower() not in partitioned:
            continue
        table, rest = m.group(4).lower(), statement[m.end() :]
        for shard in shards:
            remote[shard].append(statement.replace(" ADD COLUMN ", " ADD COLUMN IF NOT EXISTS ", 1))
        for shard in sharded.get(table, []):
            rollup = sql.Identifier(name, rollup_name(table, shard)).as_string(conn)
            coordinator.append(f"ALTER FOREIGN TABLE {rollup} {rest}")
    for shard, statements in remote.items():
        if not statements:
            continue
        info = registry.shard_conninfo(conn, shard)
        with registry.connect_shard(info, shard) as link:
            link.execute(";\n".join(statements).encode())
        log.info("release %s: schema v%d -> v%d on shard %s", name, old, new, shard)
    for spec in new_tables:
        coordinator += table_ddl(spec, order, ())
        coordinator.append(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.Identifier(name, spec.table.name), sql.Identifier(f"{spec.table.name}_pkey")
            ).as_string(conn)
        )

    def attach(link: psycopg.Connection) -> None:
        for spec in new_tables:
            _foreign_partitions(link, name, spec.table.name, order, ranges)
        create_rollups(link, name)

    return coordinator, attach


_ALTER = re.compile(r'^ALTER TABLE ("?)([^". ]+)\1\.("?)([^". ]+)\3 (?=ADD COLUMN )')


def shards_of(conn: psycopg.Connection, name: str) -> list[str]:
    """The shards holding partitions of release ``name`` (none: the release is not sharded)."""
    return [
        registry.shard_of_server(r[0])
        for r in conn.execute(
            "SELECT DISTINCT s.srvname FROM pg_foreign_table ft "
            "JOIN pg_foreign_server s ON s.oid = ft.ftserver JOIN pg_class c ON c.oid = ft.ftrelid "
            "WHERE c.relnamespace = to_regnamespace(%s) ORDER BY 1",
            (sql.Identifier(name).as_string(conn),),
        )
    ]


def drop_on_shards(conn: psycopg.Connection, name: str, shards: Sequence[str]) -> None:
    """Drop release ``name``'s schema on ``shards`` (after the coordinator dropped its own)."""
    for shard in shards:
        info = registry.shard_conninfo(conn, shard)
        try:
            with registry.connect_shard(info, shard) as remote:
                remote.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        except ShardError as e:
            raise ShardError(
                f"{e}; release {name} is gone from the coordinator, drop schema {name} there"
            ) from e


@dataclass(frozen=True)
class Route:
    """The foreign partitions of one table: pixel ranges and the shard that holds each."""

    lows: np.ndarray  # first pixel of each partition, ascending
    highs: np.ndarray  # end pixel (exclusive)
    shards: list[str]  # shard of each partition

    def shard_index(self, pixels: np.ndarray) -> np.ndarray:
        """Index into :attr:`shards` of each pixel's partition (pixels outside every partition: -1)."""
        i = np.searchsorted(self.lows, pixels, side="right") - 1
        inside = (i >= 0) & (pixels < self.highs[np.clip(i, 0, None)])
        return np.where(inside, i, -1)


_BOUND = re.compile(r"FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")


def routes(conn: psycopg.Connection, schema: str, table: str) -> Route | None:
    """Where the partitions of ``schema``.``table`` live, or None if the table is not sharded."""
    rows = conn.execute(
        "SELECT pg_get_expr(c.relpartbound, c.oid), s.srvname FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_foreign_table ft ON ft.ftrelid = c.oid "
        "JOIN pg_foreign_server s ON s.oid = ft.ftserver WHERE i.inhparent = to_regclass(%s)",
        (sql.Identifier(schema, table).as_string(conn),),
    ).fetchall()
    if not rows:
        return None
    parsed = []
    for bound, server in rows:
        m = _BOUND.search(bound)
        if m is None:
            raise ShardError(f"{schema}.{table}: unexpected partition bound {bound}")
        parsed.append((int(m.group(1)), int(m.group(2)), registry.shard_of_server(server)))
    parsed.sort()
    return Route(
        np.array([p[0] for p in parsed], dtype=np.int64),
        np.array([p[1] for p in parsed], dtype=np.int64),
        [p[2] for p in parsed],
    )


def placement(conn: psycopg.Connection, schema: str) -> dict[str, list[tuple[int, int]]]:
    """Shard -> sorted (first, end) order-29 pixel ranges of release ``schema``, merged where contiguous."""
    route = None
    for spec in table_specs(schema, 1, "release"):
        if spec.partitioned:
            route = routes(conn, schema, spec.table.name)
            if route is not None:
                break
    if route is None:
        return {}
    out: dict[str, list[tuple[int, int]]] = {}
    for lo, hi, shard in zip(route.lows.tolist(), route.highs.tolist(), route.shards, strict=True):
        ranges = out.setdefault(shard, [])
        if ranges and ranges[-1][1] == lo:
            ranges[-1] = (ranges[-1][0], hi)
        else:
            ranges.append((lo, hi))
    return out



def _if_not_exists(statement: str) -> str:
    """A CREATE TABLE/INDEX that a rerun skips where it already went through."""
    for head in ("CREATE TABLE ", "CREATE INDEX "):
        if statement.startswith(head):
            return head + "IF NOT EXISTS " + statement[len(head) :]
    return statement
