"""Aggregates over a sharded table: one aggregate per shard, combined on the coordinator.

PostgreSQL 15's postgres_fdw pushes an aggregate down to *one* foreign table,
but never a partial aggregate through a partitioned table: ``SELECT count(*)
FROM current.ForcedSource`` over foreign partitions fetches every row to the
coordinator and counts there, and so does a count grouped by anything but the
partition key itself (``GROUP BY _healpix_29 >> 56``, a count per sky
region). The query path (dpdb/query.py) rewrites such a statement::

    SELECT _healpix_29 >> 56 AS region, count(*) AS n, avg(psfFlux) FROM current.ForcedSource
    WHERE psfFlux > 0 GROUP BY 1 ORDER BY 1

into one branch per shard on the per-shard foreign tables
(``current."forcedsource@shard1"``, dpdb/shards/placement.py), each a single
foreign table, so postgres_fdw ships the aggregate, the GROUP BY and the WHERE
clause to the shard, and the branches run at once (async Append); the
coordinator combines the partial results, one row per group and shard::

    SELECT g0 AS region, CAST(COALESCE(SUM(p0), 0) AS BIGINT) AS n, SUM(p1) / NULLIF(SUM(p2), 0) AS avg
    FROM (SELECT _healpix_29 >> 56 AS g0, COUNT(*) AS p0, SUM(psfflux) AS p1, COUNT(psfflux) AS p2
          FROM current."forcedsource@shard1" AS forcedsource WHERE psfflux > 0 GROUP BY 1
          UNION ALL SELECT ... FROM current."forcedsource@shard2" ...) AS dpdb_partial
    GROUP BY g0 ORDER BY 1

Only one shape is rewritten, every other statement runs unchanged: one
SELECT on one sharded table (``current``/``previous`` or a release schema, or
unqualified under ``release=``), no join, HAVING, DISTINCT, window, subquery,
OFFSET, FILTER or grouping sets; GROUP BY items that are expressions of the
table's columns or output positions; ORDER BY items that are output
positions, output names or GROUP BY expressions; a positive LIMIT (as TAP's
MAXREC adds) is applied to the combined result; projections that are
GROUP BY expressions and expressions of ``count``, ``sum``, ``min``, ``max``
and ``avg`` (no DISTINCT inside). The answers equal a single node's, to the
same types; floating-point ``sum`` and ``avg`` add the shards' partial sums in
another order, so they can differ in the last bits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
import sqlglot
from sqlglot import exp

from dpdb.pg import fetch_value

__all__ = ["rewrite_aggregate", "aggregate_shape", "Shape"]

log = logging.getLogger(__name__)

_COMBINABLE = (exp.Count, exp.Sum, exp.Min, exp.Max, exp.Avg)
_REFUSED_ARGS = ("joins", "having", "distinct", "offset", "with", "with_",
                 "laterals", "windows", "qualify", "into", "locks", "connect", "prewhere", "sample",
                 "pivots", "kind", "settings", "options")  # fmt: skip
_INT8 = 20
_FLOATS = {700, 701}  # float4, float8


@dataclass(frozen=True)
class Shape:
    """An aggregate statement on one table: what the rewrite needs."""

    tree: exp.Select
    schema: str | None  # as written (None: unqualified)
    table: str  # lower-case, as PostgreSQL folds it
    alias: str  # what the WHERE clause calls the table
    group: list[exp.Expression]  # the GROUP BY expressions (output positions resolved)


def aggregate_shape(text: str) -> Shape | None:
    """The statement if it is an aggregate on one table that can run per shard, else None."""
    try:
        trees = sqlglot.parse(text, read="postgres")
    except sqlglot.errors.SqlglotError:
        return None
    if len(trees) != 1 or not isinstance(trees[0], exp.Select):
        return None
    tree = trees[0]
    if any(tree.args.get(k) for k in _REFUSED_ARGS):
        return None
    limit = tree.args.get("limit")  # TAP's MAXREC: applied to the combined result, if a positive number
    if limit is not None:
        value = limit.expression
        if not (isinstance(value, exp.Literal) and value.is_int and int(value.this) >= 1):
            return None
    source = tree.args.get("from_") or tree.args.get("from")
    table = source.this if source is not None else None
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier) or table.catalog:
        return None
    if table.args.get("joins") or table.args.get("laterals") or table.args.get("pivots"):
        return None
    # nothing but the one SELECT: no subquery, window, FILTER, set operation or star anywhere
    for node in tree.walk():
        if node is not tree and isinstance(node, (exp.Select, exp.Subquery, exp.Window, exp.Filter,
                                                  exp.Union, exp.Distinct, exp.Star)):  # fmt: skip
            if isinstance(node, exp.Star) and isinstance(node.parent, exp.Count):
                continue
            return None
        if isinstance(node, exp.Column) and (node.args.get("db") or node.args.get("catalog")):
            return None  # schema-qualified column: it names the table being replaced
    group = _group_expressions(tree)
    if group is None:
        return None
    found = bool(group)
    for projection in tree.expressions:
        expression = projection.this if isinstance(projection, exp.Alias) else projection
        aggregates = [a for a in expression.find_all(exp.AggFunc)]
        if any(not isinstance(a, _COMBINABLE) for a in aggregates):
            return None
        if any(inner is not a for a in aggregates for inner in a.find_all(exp.AggFunc)):
            return None  # an aggregate inside an aggregate
        if _outside(expression.copy(), group):
            return None  # a column neither aggregated nor grouped by
        found = found or bool(aggregates)
    if not found or not _orderable(tree, group):
        return None
    name = table.this.this if table.this.quoted else table.this.this.lower()
    schema = None
    if table.args.get("db") is not None:
        db = table.args["db"]
        schema = db.this if db.quoted else db.this.lower()
    alias = table.alias or name
    return Shape(tree, schema, name, alias, group)


def _group_expressions(tree: exp.Select) -> list[exp.Expression] | None:
    """The GROUP BY items as expressions (an output position replaced by its expression), or None when
    one cannot be grouped per shard (grouping sets, an aggregate, a name that may be an output column)."""
    clause = tree.args.get("group")
    if clause is None:
        return []
    if any(v for k, v in clause.args.items() if k != "expressions"):
        return None  # ROLLUP, CUBE, GROUPING SETS, ALL
    outputs = {_output_name(p): p.this if isinstance(p, exp.Alias) else p for p in tree.expressions}
    group = []
    for item in clause.expressions:
        if isinstance(item, exp.Literal) and item.is_int:
            k = int(item.this)
            if not 1 <= k <= len(tree.expressions):
                return None
            projection = tree.expressions[k - 1]
            item = projection.this if isinstance(projection, exp.Alias) else projection
        elif isinstance(item, exp.Column) and not item.table and _name(item.this) in outputs:
            if outputs[_name(item.this)] != item:
                return None  # an output name, or a column of the table: PostgreSQL decides, not this module
        if item.find(exp.AggFunc) or isinstance(item, exp.Literal):
            return None
        group.append(item)
    return group


def _replace_groups(expression: exp.Expression, group: list[exp.Expression]) -> exp.Expression:
    """``expression`` with each occurrence of a GROUP BY expression (outside aggregates) as column g<i>."""

    def swap(node: exp.Expression) -> exp.Expression:
        if node.find_ancestor(exp.AggFunc) is None and not isinstance(node, exp.AggFunc):
            for i, g in enumerate(group):
                if node == g:
                    return exp.column(f"g{i}")
        return node

    return expression.transform(swap, copy=False) if group else expression


def _outside(expression: exp.Expression, group: list[exp.Expression]) -> bool:
    """Does ``expression`` read a column outside the aggregates and the GROUP BY expressions?"""
    expression = _replace_groups(expression, group)
    return any(
        not c.find_ancestor(exp.AggFunc) and not (len(c.parts) == 1 and c.name in _group_names(group))
        for c in expression.find_all(exp.Column)
    )


def _group_names(group: list[exp.Expression]) -> set[str]:
    return {f"g{i}" for i in range(len(group))}


def _orderable(tree: exp.Select, group: list[exp.Expression]) -> bool:
    """Can the ORDER BY run on the combined result: output positions, output names, GROUP BY expressions."""
    order = tree.args.get("order")
    if order is None:
        return True
    outputs = {_output_name(p) for p in tree.expressions}
    for ordered in order.expressions:
        key = ordered.this
        if isinstance(key, exp.Literal) and key.is_int and 1 <= int(key.this) <= len(tree.expressions):
            continue
        if isinstance(key, exp.Column) and not key.table and _name(key.this) in outputs:
            continue
        if any(key == g for g in group):
            continue
        return False
    return True


def _name(identifier: exp.Expression) -> str:
    """An identifier's name as PostgreSQL folds it."""
    return identifier.this if getattr(identifier, "quoted", False) else str(identifier.this).lower()


def _output_name(projection: exp.Expression) -> str:
    """The column name PostgreSQL gives a projection (its alias, a function's name, or ?column?)."""
    if isinstance(projection, exp.Alias):
        return _name(projection.args["alias"])
    node = projection
    while isinstance(node, exp.Cast):
        node = node.this
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    if isinstance(node, exp.Column):
        return node.name
    return "?column?"


def rewrite_aggregate(conn: psycopg.Connection, text: str, search_path: list[str]) -> str | None:
    """``text`` as a UNION ALL of per-shard aggregates, or None when it is not such a statement.

    ``conn`` is the connection the statement will run as (a reader login): the
    per-shard relations must be readable by it, and it describes the partial
    aggregates' types. ``search_path`` is where an unqualified table resolves.
    """
    shape = aggregate_shape(text)
    if shape is None:
        return None
    schemas = [shape.schema] if shape.schema is not None else search_path
    shards: list[str] = []
    schema = None
    for candidate in schemas:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = to_regnamespace(quote_ident(%s)) "
            "AND c.relkind IN ('v', 'f') AND NOT c.relispartition AND c.relname LIKE %s "
            "AND has_table_privilege(c.oid, 'SELECT') ORDER BY 1",
            (candidate, shape.table.replace("_", r"\_") + "@%"),
        ).fetchall()
        here = conn.execute(
            "SELECT to_regclass(quote_ident(%s) || '.' || quote_ident(%s))", (candidate, shape.table)
        ).fetchone()
        if here and here[0] is not None:
            shards, schema = [r[0] for r in rows], candidate
            break
    if not shards or schema is None:
        return None
    scanned = _shards_scanned(conn, text, search_path)
    shards = [r for r in shards if r.rpartition("@")[2] in scanned]
    if not shards:
        return None
    partials: list[exp.Expression] = []
    tree = shape.tree.copy()
    combine: list[tuple[exp.Expression, str, list[int]]] = []  # aggregate node, kind, partial columns
    for projection in tree.expressions:
        for node in list(
            (projection.this if isinstance(projection, exp.Alias) else projection).find_all(exp.AggFunc)
        ):
            kind = type(node).__name__.lower()
            if kind == "avg":
                cols = [len(partials), len(partials) + 1]
                partials += [exp.Sum(this=node.this.copy()), exp.Count(this=node.this.copy())]
            else:
                cols = [len(partials)]
                partials.append(node.copy())
            combine.append((node, kind, cols))
    names = [_output_name(p) for p in tree.expressions]
    group = shape.group
    union = _branches(tree, partials, group, schema, shards, shape.alias)
    types = _partial_types(conn, union.sql(dialect="postgres"))
    if types is None:
        return None
    widened = False
    for _node, kind, cols in combine:
        if kind == "avg" and types[cols[0]] == 700:  # avg(real) adds in double precision
            partials[cols[0]] = exp.Sum(this=exp.cast(partials[cols[0]].this, "DOUBLE PRECISION"))
            widened = True
    if widened:
        union = _branches(tree, partials, group, schema, shards, shape.alias)
    for node, kind, cols in combine:
        column = [exp.column(f"p{c}") for c in cols]
        if kind == "count":
            counted = exp.func("COALESCE", exp.Sum(this=column[0]), exp.Literal.number(0))
            new: exp.Expression = exp.cast(counted, "BIGINT")
        elif kind == "sum":
            new = exp.Sum(this=column[0])
            if types[cols[0]] == _INT8:  # sum(int4/int2) is bigint; the sum of bigints would be numeric
                new = exp.cast(new, "BIGINT")
        elif kind in ("min", "max"):
            new = (exp.Min if kind == "min" else exp.Max)(this=column[0])
        else:  # avg: the shards' sums over their counts, typed as avg would be
            total: exp.Expression = exp.Sum(this=column[0])
            target = "DOUBLE PRECISION" if types[cols[0]] in _FLOATS else "NUMERIC"
            total = exp.cast(total, target)
            count = exp.func("NULLIF", exp.Sum(this=column[1]), exp.Literal.number(0))
            new = exp.Div(this=total, expression=exp.cast(count, target))
        node.replace(new)
    outer = exp.select(
        *[
            exp.alias_(_replace_groups(p.this if isinstance(p, exp.Alias) else p, group), name, quoted=True)
            for p, name in zip(tree.expressions, names, strict=True)
        ]
    ).from_(exp.Subquery(this=union, alias=exp.TableAlias(this=exp.to_identifier("dpdb_partial"))))
    if group:
        outer = outer.group_by(*[exp.column(f"g{i}") for i in range(len(group))])
    if tree.args.get("order") is not None:  # output positions and names are the same outside
        outer.set("order", _replace_groups(tree.args["order"].copy(), group))
    if tree.args.get("limit") is not None:
        outer.set("limit", tree.args["limit"].copy())
    rewritten = outer.sql(dialect="postgres")
    log.info("aggregate on %s.%s: one per shard (%s)", schema, shape.table, ", ".join(shards))
    return rewritten


def _shards_scanned(conn: psycopg.Connection, text: str, search_path: list[str]) -> set[str]:
    """The shards the statement as written reads after partition pruning (planned, not run): a
    branch per shard would otherwise reach a shard whose partitions the WHERE clause excludes."""
    import json

    from psycopg import sql

    path = sql.SQL(", ").join(map(sql.Identifier, search_path)).as_string(conn)
    try:
        conn.execute("SELECT set_config('search_path', %s, true)", (path,))  # this transaction only
        plan = fetch_value(conn, f"EXPLAIN (VERBOSE, FORMAT JSON) {text}")
    except psycopg.Error:
        if conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        return set()
    if isinstance(plan, str):
        plan = json.loads(plan)
    relations = set()
    stack = [plan[0]["Plan"]]
    while stack:
        node = stack.pop()
        if node.get("Node Type") == "Foreign Scan" and "Relation Name" in node:
            relations.add((node.get("Schema", ""), node["Relation Name"]))
        stack += node.get("Plans", [])
    if not relations:
        return set()
    rows = conn.execute(
        "SELECT DISTINCT s.srvname FROM pg_foreign_table ft JOIN pg_foreign_server s ON s.oid = ft.ftserver "
        "JOIN pg_class c ON c.oid = ft.ftrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        ([r[0] for r in relations], [r[1] for r in relations]),
    ).fetchall()
    from .registry import SERVER_PREFIX

    return {r[0][len(SERVER_PREFIX) :] for r in rows if r[0].startswith(SERVER_PREFIX)}


def _branches(
    tree: exp.Select,
    partials: list[exp.Expression],
    group: list[exp.Expression],
    schema: str,
    shards: list[str],
    alias: str,
) -> exp.Expression:
    """One SELECT of the partial aggregates (p<i>, then the GROUP BY expressions g<i>, grouped by them)
    per per-shard relation, as a UNION ALL."""
    where = tree.args.get("where")
    union: exp.Expression | None = None
    columns = [exp.alias_(p.copy(), f"p{i}") for i, p in enumerate(partials)]
    columns += [exp.alias_(g.copy(), f"g{i}") for i, g in enumerate(group)]
    for rollup in shards:
        branch = exp.select(*[c.copy() for c in columns]).from_(
            exp.Table(
                this=exp.to_identifier(rollup, quoted=True),
                db=exp.to_identifier(schema, quoted=True),
                alias=exp.TableAlias(this=exp.to_identifier(alias)),
            )  # fmt: skip
        )
        if where is not None:
            branch.set("where", where.copy())
        if group:
            branch = branch.group_by(*[g.copy() for g in group])
        union = branch if union is None else exp.union(union, branch, distinct=False)
    assert union is not None
    return union


def _partial_types(conn: psycopg.Connection, text: str) -> list[int] | None:
    """Type OIDs of the partial aggregates (described, not run), or None if PostgreSQL refuses them."""
    pgconn = conn.pgconn
    ok = psycopg.pq.ExecStatus.COMMAND_OK
    result = pgconn.prepare(b"", text.encode())
    described = pgconn.describe_prepared(b"") if result.status == ok else result
    if described.status != ok:
        log.info(
            "no per-shard rewrite: %s", (described.error_message or b"").decode(errors="replace").strip()
        )
        if pgconn.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        return None
    return [described.ftype(i) for i in range(described.nfields)]
