"""The tables a query names, without asking the planner: the quick check of what a citation reads.

Citing must know every table a query reads (only the prompt catalog, frozen
releases and the samples are citable; ``dpdb/citations/cite.py``). The planner
says it exactly (``EXPLAIN``), but planning costs as much as the query's own
planning, on a second connection, while the query runs. Most queries name plain
tables and views, and for them a cheaper answer is as safe:

1. the SQL is parsed (sqlglot, PostgreSQL dialect; the query path parses it the
   same way, ``dpdb/pruning.py``) and every table reference is listed, in every
   subquery, CTE and set operation; a reference that is not a plain name
   (a function or ``LATERAL`` call in ``FROM``, a three-part name) or text
   sqlglot cannot parse leaves the check to the planner;
2. PostgreSQL resolves the names (:data:`RESOLVE_SQL`, in the round trip that reads the
   citation's bookkeeping) along the search path the query runs with, expands
   views into the relations they read (recursively; every ``:relid`` of the view's stored
   query tree, which unlike ``pg_depend`` also names system catalogs), adds the children of
   tables with inheritance children, and maps partitions to their partitioned
   table, as the planner check does.

The result holds every table the planner could read for the query (a superset:
the planner may leave out a table a join or a condition makes unnecessary).
When every one of them is citable, so is the query; otherwise (or when a name
does not resolve and is not a CTE's) the planner check decides, with its own
messages. Tables read inside functions are seen by neither check.
"""

from __future__ import annotations

import logging

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

__all__ = ["named_relations", "RESOLVE_SQL", "resolved_tables", "search_path"]

logging.getLogger("sqlglot").setLevel(logging.ERROR)


def _name(identifier: exp.Expression | None) -> str | None:
    """An identifier as PostgreSQL reads it: unquoted folded to lower case."""
    if identifier is None:
        return None
    if not isinstance(identifier, exp.Identifier):
        raise _Unsure()
    return identifier.this if identifier.quoted else identifier.this.lower()


class _Unsure(Exception):
    """The statement holds something only the planner can tell about."""


def named_relations(text: str) -> tuple[list[tuple[str | None, str]], set[str]] | None:
    """(schema or None, name) of every table reference in ``text``, and the names of its CTEs; None
    when only the planner can say what the query reads (not one query, not parsed, a function or
    a ``LATERAL`` call in ``FROM``, a name with a database part)."""
    try:
        trees = sqlglot.parse(text, read="postgres")
    except (SqlglotError, RecursionError, ValueError):
        return None
    if len(trees) != 1 or not isinstance(trees[0], exp.Query | exp.Values):
        return None
    tree = trees[0]
    found: set[tuple[str | None, str]] = set()
    try:
        for node in tree.walk():
            if isinstance(node, exp.Lateral) and not isinstance(node.this, exp.Subquery):
                raise _Unsure()
            if isinstance(node, exp.Table):
                if not isinstance(node.this, exp.Identifier) or node.args.get("catalog"):
                    raise _Unsure()
                name = _name(node.this)
                assert name is not None
                found.add((_name(node.args.get("db")), name))
        ctes = {_name(cte.args["alias"].this) for cte in tree.find_all(exp.CTE) if cte.args.get("alias")}
    except _Unsure:
        return None
    return sorted(found, key=lambda t: (t[0] or "", t[1])), {c for c in ctes if c}


RESOLVE_SQL = r"""
WITH RECURSIVE named AS (
    SELECT t.s, t.n, (
        SELECT c.oid FROM unnest(CASE WHEN t.s IS NULL THEN %(path)s::text[] ELSE ARRAY[t.s] END)
            WITH ORDINALITY AS p(schema, k)
        JOIN pg_namespace ns ON ns.nspname = p.schema JOIN pg_class c ON c.relnamespace = ns.oid
        WHERE c.relname = t.n ORDER BY p.k LIMIT 1
    ) AS oid
    FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS t(s, n)
), rel(oid, kind) AS (
    SELECT n.oid::oid, (SELECT c.relkind FROM pg_class c WHERE c.oid = n.oid) FROM named n
    WHERE n.oid IS NOT NULL
    UNION
    SELECT x.child, (SELECT c.relkind FROM pg_class c WHERE c.oid = x.child) FROM rel
    CROSS JOIN LATERAL (
        SELECT DISTINCT split_part(x.part, ' ', 1)::oid FROM pg_rewrite r
        CROSS JOIN LATERAL string_to_table(r.ev_action::text, ':relid ') WITH ORDINALITY AS x(part, k)
        WHERE rel.kind = 'v' AND r.ev_class = rel.oid AND x.k > 1
            AND split_part(x.part, ' ', 1) ~ '^[0-9]+$' AND split_part(x.part, ' ', 1) <> '0'
        UNION ALL
        SELECT i.inhrelid FROM pg_inherits i WHERE rel.kind = 'r' AND i.inhparent = rel.oid
    ) AS x(child)
)
SELECT NULL::text, NULL::text, n.s, n.n FROM named n WHERE n.oid IS NULL
UNION ALL
SELECT DISTINCT
    (SELECT rn.nspname::text FROM pg_class rc JOIN pg_namespace rn ON rn.oid = rc.relnamespace
     WHERE rc.oid = x.root),
    (SELECT rc.relname::text FROM pg_class rc WHERE rc.oid = x.root), NULL, NULL
FROM rel CROSS JOIN LATERAL (SELECT coalesce(pg_partition_root(rel.oid), rel.oid)::oid) AS x(root)
WHERE rel.kind <> 'v'
"""
"""Parameters: ``schemas`` (NULL: unqualified) and ``names`` of the references, and ``path``: where
an unqualified name is looked for, in order, as PostgreSQL does (:func:`search_path`). A row per
relation read (its partitioned table for a partition; views expanded), and a row (NULL, NULL,
schema, name) per reference that names no relation."""


def search_path(path: list[str]) -> list[str]:
    """The schemas an unqualified name is looked for in with ``search_path`` set to ``path``:
    ``pg_catalog`` first when the path does not name it (a session without temporary tables; the
    query's runs in a read-only transaction, which cannot make any)."""
    return path if "pg_catalog" in path else ["pg_catalog", *path]


def resolved_tables(rows: list[tuple], ctes: set[str]) -> list[tuple[str, str]] | None:
    """The (schema, table) pairs :data:`RESOLVE_SQL` gave; None when a name it could not resolve is
    not one of the query's CTEs (the planner check then says what is wrong)."""
    tables = set()
    for schema, table, unresolved_schema, unresolved in rows:
        if schema is None:
            if unresolved_schema is not None or unresolved not in ctes:
                return None
            continue
        tables.add((schema, table))
    return sorted(tables)
