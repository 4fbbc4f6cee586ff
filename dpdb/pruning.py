"""HEALPix partition pruning for spatial predicates: the one place that turns a cone or a polygon into
the ``_healpix_29`` ranges of the partitions it overlaps (docs/architecture.md, decisions 1 and 6).

A q3c predicate (``q3c_radial_query``, ``q3c_poly_query``, ``q3c_join`` with a constant centre) says
nothing about the partition key, so PostgreSQL plans it on every partition: planning, not execution,
was most of a cone's time (benchmarks/README.md, bench_asof). Every query path therefore adds, next to
each such predicate on a partitioned catalog table, the ranges of the partitions the region touches,
computed with healpy at the catalog's partition order::

    q3c_radial_query(ra, dec, 150, 2, 0.1)
    -> (q3c_radial_query(ra, dec, 150, 2, 0.1) AND (_healpix_29 BETWEEN lo1 AND hi1 OR ...))

The ranges are constants, so the planner prunes the other partitions before planning them. The
predicate implies the ranges, so the rewrite never changes an answer wherever the predicate stands
(under ``OR`` or ``NOT`` too). Regions are widened by :data:`MARGIN_DEG`: a row's pixel is its object's
pixel at first detection (a DiaObject's later versions and its measurements keep it), and positions
move by less than an association radius.

A light curve asked for by identifier alone (``WHERE diaObjectId = 123`` on ``DiaSource``,
``DiaForcedSource`` or ``DiaObject`` of the prompt catalog, as a conjunct of the WHERE clause) is
pruned the same way: a DiaObject's versions and measurements sit in the partition of its pixel at
first detection, so the partitions within :data:`MARGIN_DEG` of the DiaObject's position (read from
``DiaObjectLast``, one index probe) hold every row the equality can match. Unknown identifiers are
left as written.

Users of this module: :func:`dpdb.query.run_query` (``dpdb query``, ``Archive.query``/``cone``, and the
TAP service, whose ADQL translation emits the q3c predicates). ``sql/cones.sql`` offers the same to
hand-written SQL as functions (``prompt.diaobject_cone`` ...), whose ranges are checked against
:func:`cone_ranges` by the tests.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import sqlglot
from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from .healpix import PIXEL_ORDER
from .model.layout import PIXEL_COLUMN

# The query path parses user SQL only to inspect it (this module, dpdb/shards/aggregate.py); sqlglot's
# warnings about forms it does not model ("falling back to parsing as a Command") would reach the
# user's stderr beside PostgreSQL's own answer, so only its errors are let through.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

__all__ = [
    "MARGIN_DEG",
    "ObjectPosition",
    "OrderOf",
    "cone_ranges",
    "polygon_ranges",
    "ranges_sql",
    "ranges_text",
    "prune_tree",
    "prune_sql",
    "q3c_calls",
    "region_ranges",
    "splice",
]

MARGIN_DEG = 1 / 60
"""Regions are widened by this much before choosing partitions (see the module docstring)."""

OrderOf = Callable[[str, str], int | None]
"""(schema as written, lower case, '' when unqualified; table, lower case) -> partition order of that
catalog table, or None when it is not a partitioned catalog table (nothing to prune)."""


ObjectPosition = Callable[[str, str, int], tuple[float, float] | None]
"""(schema as written, lower case, '' when unqualified; table, lower case; a diaObjectId) -> that
DiaObject's position (degrees) when the table is one of the prompt catalog's, else None."""

BY_OBJECT = ("diaobject", "diasource", "diaforcedsource")
"""The prompt tables whose rows sit in their DiaObject's partition, found by ``diaObjectId``."""


def _disc_ranges(vector: Sequence[float], radius_deg: float, order: int) -> list[tuple[int, int]]:
    import healpy  # here, not at the top: it imports matplotlib
    import numpy as np

    radius = math.radians(min(180.0, radius_deg))
    # healpy's inclusive test is loose for pixels much larger than the disc (it takes a neighbour more
    # about half the time for a 10' cone at order 1), so the disc is covered at a finer order whose
    # pixels are about its size, and those pixels' partitions kept: still every one it overlaps.
    fine = max(order, min(order + 6, _auto_order(radius_deg)))
    found = healpy.query_disc(1 << fine, np.asarray(vector), radius, inclusive=True, nest=True)
    found = np.unique(found >> (2 * (fine - order)))
    shift = 2 * (PIXEL_ORDER - order)
    out: list[tuple[int, int]] = []
    for p in found.tolist():
        lo, hi = p << shift, (p + 1) << shift
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _auto_order(radius: float) -> int:
    """The order whose pixels are about ``radius`` across (a few pixels cover the cone)."""
    return int(min(max(math.floor(math.log2(58.6 / max(radius, 1e-9))), 0), 16))


def cone_ranges(
    ra: float, dec: float, radius: float, order: int | None = None, margin_deg: float = 0.0
) -> list[tuple[int, int]]:
    """Order-29 nested pixel ranges ``[first, end)`` covering a cone (degrees), merged.

    Parameters
    ----------
    ra, dec, radius
        The cone in degrees.
    order
        HEALPix order of the cover: a catalog's partition order gives exactly the partitions the cone
        overlaps (healpy ``query_disc``, inclusive: every pixel that overlaps, maybe a neighbour more).
        ``None``: the order whose pixels are about the cone's size.
    margin_deg
        Widen the cone by this much first.
    """
    import healpy

    if order is None:
        order = _auto_order(radius)
    return _disc_ranges(healpy.ang2vec(ra, dec, lonlat=True), radius + margin_deg, order)


def polygon_ranges(vertices: Sequence[float], order: int, margin_deg: float = 0.0) -> list[tuple[int, int]]:
    """Ranges covering a polygon ``[ra1, dec1, ra2, dec2, ...]`` (degrees) through its bounding cap,
    which is right whether or not the polygon is convex (healpy's ``query_polygon`` needs convex)."""
    import healpy
    import numpy as np

    if len(vertices) < 6 or len(vertices) % 2:
        raise ValueError("a polygon needs at least 3 (ra, dec) vertices")
    vectors = np.array([healpy.ang2vec(vertices[i], vertices[i + 1], lonlat=True)
                        for i in range(0, len(vertices), 2)])  # fmt: skip
    centre = vectors.sum(axis=0)
    norm = float(np.linalg.norm(centre))
    if norm < 1e-9:  # a polygon around a whole great circle: every partition
        return [(0, 12 << (2 * PIXEL_ORDER))]
    centre /= norm
    radius = float(np.degrees(np.max(np.arccos(np.clip(vectors @ centre, -1, 1)))))
    return _disc_ranges(centre, radius + margin_deg, order)


def ranges_sql(ranges: Sequence[tuple[int, int]], qualifier: str | None = None) -> exp.Expression:
    """``(_healpix_29 BETWEEN lo AND hi - 1 OR ...)`` for ranges ``[lo, hi)``; FALSE when empty."""
    if not ranges:
        return exp.false()
    terms = []
    for lo, hi in ranges:
        column = exp.Column(this=exp.to_identifier(PIXEL_COLUMN),
                            table=exp.to_identifier(qualifier) if qualifier else None)  # fmt: skip
        terms.append(exp.Between(this=column, low=exp.Literal.number(lo), high=exp.Literal.number(hi - 1)))
    return exp.Paren(this=exp.or_(*terms)) if len(terms) > 1 else terms[0]


def ranges_text(ranges: Sequence[tuple[int, int]], qualifier: str | None = None) -> str:
    """:func:`ranges_sql` as PostgreSQL text, written without sqlglot where that gives the same text
    (for the TAP service, which fills it in per query)."""
    if not ranges or not _plain_qualifier(qualifier):
        return ranges_sql(ranges, qualifier).sql(dialect=Postgres())
    column = f"{qualifier}.{PIXEL_COLUMN}" if qualifier else PIXEL_COLUMN
    terms = [f"{column} BETWEEN {lo} AND {hi - 1}" for lo, hi in ranges]
    return f"({' OR '.join(terms)})" if len(terms) > 1 else terms[0]


@functools.lru_cache(maxsize=1024)
def _plain_qualifier(qualifier: str | None) -> bool:
    """Whether sqlglot writes the ranges of ``qualifier`` as :func:`ranges_text` does."""
    sample = [(8, 16), (32, 48)]
    column = f"{qualifier}.{PIXEL_COLUMN}" if qualifier else PIXEL_COLUMN
    for ranges in (sample[:1], sample):
        terms = [f"{column} BETWEEN {lo} AND {hi - 1}" for lo, hi in ranges]
        text = f"({' OR '.join(terms)})" if len(terms) > 1 else terms[0]
        if ranges_sql(ranges, qualifier).sql(dialect=Postgres()) != text:
            return False
    return True


# -- finding the q3c predicates ---------------------------------------------------------------------


@dataclass
class _Region:
    point: list[exp.Expression]  # the table's (ra, dec) column expressions
    kind: str  # cone, polygon
    values: list[float]  # (ra, dec, radius) or vertices, degrees


def _const(node: exp.Expression) -> float | None:
    """The value of a constant numeric expression (sqlglot's simplifier folds it), or None."""
    from sqlglot.optimizer.simplify import simplify

    if node.find(exp.Column, exp.Anonymous, exp.Subquery, exp.Placeholder, exp.Parameter):
        return None
    folded = simplify(node.copy())
    while isinstance(folded, exp.Paren | exp.Cast):
        folded = folded.this
    sign = 1.0
    if isinstance(folded, exp.Neg):
        sign, folded = -1.0, folded.this
    if isinstance(folded, exp.Literal) and not folded.is_string:
        try:
            return sign * float(folded.this)
        except ValueError:
            return None
    return None


def _array_values(node: exp.Expression) -> list[float] | None:
    while isinstance(node, exp.Cast | exp.Paren):
        node = node.this
    if isinstance(node, exp.Array):
        values = [_const(v) for v in node.expressions]
    elif isinstance(node, exp.Literal) and node.is_string:  # '{1, 2, 3}'
        text = str(node.this).strip()
        if not (text.startswith("{") and text.endswith("}")):
            return None
        try:
            values = [float(v) for v in text[1:-1].split(",")]
        except ValueError:
            return None
    else:
        return None
    if any(v is None for v in values):
        return None
    return [float(v) for v in values if v is not None]


def _is_point(args: Sequence[exp.Expression]) -> bool:
    return all(isinstance(a, exp.Column) for a in args)


def _region(call: exp.Anonymous) -> _Region | None:
    name = str(call.name).lower()
    args = list(call.expressions)
    if name == "q3c_radial_query" and len(args) == 5:
        values = [_const(a) for a in args[2:]]
        if _is_point(args[:2]) and all(v is not None for v in values):
            return _Region(args[:2], "cone", [float(v) for v in values if v is not None])
    elif name == "q3c_join" and len(args) == 5:
        for point, centre in ((args[2:4], args[:2]), (args[:2], args[2:4])):
            values = [_const(a) for a in [*centre, args[4]]]
            if _is_point(point) and all(v is not None for v in values):
                return _Region(point, "cone", [float(v) for v in values if v is not None])
    elif name == "q3c_poly_query" and len(args) == 3:
        vertices = _array_values(args[2])
        if _is_point(args[:2]) and vertices is not None and len(vertices) >= 6 and len(vertices) % 2 == 0:
            return _Region(args[:2], "polygon", vertices)
    return None


def _source(call: exp.Expression, point: list[exp.Expression]) -> tuple[exp.Table, str | None] | None:
    """The table (and the qualifier its columns use) that the point's columns belong to."""
    columns = [c for c in point if isinstance(c, exp.Column)]
    qualifiers = {c.table.lower() for c in columns}
    if len(qualifiers) != 1:
        return None
    (qualifier,) = qualifiers
    select = call.find_ancestor(exp.Select)
    if select is None:
        return None
    from_ = select.args.get("from") or select.args.get("from_")
    items = ([from_.this] if from_ is not None else []) + [j.this for j in select.args.get("joins") or []]
    if qualifier:
        found = [t for t in items if (t.alias_or_name or "").lower() == qualifier]
    else:
        found = items if len(items) == 1 else []
    if len(found) != 1 or not isinstance(found[0], exp.Table):
        return None
    table = found[0]
    root = call.root()
    if not table.db and any(c.alias_or_name.lower() == table.name.lower() for c in root.find_all(exp.CTE)):
        return None  # a CTE of that name, not the table
    return table, qualifier or None


def _table_name(table: exp.Table) -> str | None:
    """Lower-case table name of a FROM item: a table, or a prompt ``<table>_as_of(t)`` function."""
    if isinstance(table.this, exp.Anonymous):
        name = str(table.this.name).lower()
        return name.removesuffix("_as_of") if name.endswith("_as_of") else None
    if not table.name:
        return None
    return table.name if table.this.quoted else table.name.lower()


def _condition(call: exp.Anonymous, order_of: OrderOf) -> exp.Expression | None:
    """The ranges to AND with ``call``, or None. Pruning only ever speeds a query up: whatever goes
    wrong while working them out (an odd constant healpy refuses ...) leaves the call as written."""
    try:
        return _ranges_condition(call, order_of)
    except Exception:  # noqa: BLE001 - see the docstring: the query runs unpruned, still right
        return None


def _ranges_condition(call: exp.Anonymous, order_of: OrderOf) -> exp.Expression | None:
    region = _region(call)
    if region is None:
        return None
    found = _source(call, region.point)
    if found is None:
        return None
    table, qualifier = found
    name = _table_name(table)
    order = order_of((table.db or "").lower(), name) if name else None
    if order is None:
        return None
    ranges = region_ranges(region.kind, region.values, order)
    return None if ranges is None else ranges_sql(ranges, qualifier)


def region_ranges(kind: str, values: Sequence[float], order: int) -> list[tuple[int, int]] | None:
    """The ranges a region (``cone``: ra, dec, radius; ``polygon``: vertices; degrees) adds at
    partition order ``order``, or None: nothing to add (not a valid region, or the whole sky)."""
    if not all(math.isfinite(v) for v in values):
        return None
    try:
        if kind == "cone":
            ra, dec, radius = values
            if not (math.isfinite(ra) and -90 <= dec <= 90 and 0 <= radius <= 180):
                return None
            ranges = cone_ranges(ra, dec, radius, order, MARGIN_DEG)
        else:
            ranges = polygon_ranges(values, order, MARGIN_DEG)
    except ValueError:
        return None
    if sum(hi - lo for lo, hi in ranges) >= 12 << (2 * PIXEL_ORDER):  # the whole sky: nothing to prune
        return None
    return ranges


def _calls(tree: exp.Expression) -> list[exp.Anonymous]:
    return [
        c for c in tree.find_all(exp.Anonymous)
        if str(c.name).lower() in ("q3c_radial_query", "q3c_join", "q3c_poly_query")
    ]  # fmt: skip


def prune_tree(tree: exp.Expression, order_of: OrderOf) -> exp.Expression:
    """``tree`` with each prunable q3c predicate ANDed with its partitions' ``_healpix_29`` ranges."""
    for call in _calls(tree):
        condition = _condition(call, order_of)
        if condition is not None:
            call.replace(exp.Paren(this=exp.And(this=call.copy(), expression=condition)))
    return tree


def prune_sql(text: str, order_of: OrderOf, position_of: ObjectPosition | None = None) -> str:
    """SQL text with each prunable q3c predicate ANDed with its partitions' ``_healpix_29`` ranges.

    The statement is parsed with sqlglot (PostgreSQL dialect) to find the predicates, their tables
    and constant regions; the ranges are spliced into the text around each call, so the rest of the
    statement runs exactly as written. ``EXPLAIN [ANALYZE ...]`` in front is kept. Text that sqlglot
    cannot parse runs unchanged (unpruned, still right). With ``position_of``, a ``diaObjectId =
    constant`` conjunct on a prompt table gets the ranges of its DiaObject's partitions too.
    """
    dialect = Postgres()
    parsed = _parse(text)
    if parsed is None:
        return text
    edits: list[tuple[int, int, str]] = []
    for begin, end, call in _q3c_in(*parsed):
        condition = _condition(call, order_of)
        if condition is not None:
            edits.append((begin, end, condition.sql(dialect=dialect)))
    if position_of is not None:
        for begin, end, condition in _object_conditions(*parsed, order_of, position_of):
            edits.append((begin, end, condition.sql(dialect=dialect)))
    return splice(text, edits)


def _object_conditions(
    offset: int, tokens: list, tree: exp.Expression, order_of: OrderOf, position_of: ObjectPosition
) -> list[tuple[int, int, exp.Expression]]:
    """``(begin, end, ranges)`` for each ``diaObjectId = constant`` conjunct of a WHERE clause on a
    prompt table of :data:`BY_OBJECT` whose DiaObject is known (see the module docstring)."""
    found = []
    for where in tree.find_all(exp.Where):
        top = where.this
        for term in top.flatten() if isinstance(top, exp.And) else [top]:
            try:
                edit = _object_condition(term, order_of, position_of)
            except Exception:  # noqa: BLE001 - as _condition: the query runs unpruned, still right
                edit = None
            if edit is not None:
                found.append((offset + edit[0], offset + edit[1], edit[2]))
    return found


def _object_condition(
    term: object, order_of: OrderOf, position_of: ObjectPosition
) -> tuple[int, int, exp.Expression] | None:
    if not isinstance(term, exp.EQ):
        return None
    column, value = term.this, term.expression
    if isinstance(value, exp.Column):
        column, value = value, column
    if not (isinstance(column, exp.Column) and isinstance(value, exp.Literal)) or value.is_string:
        return None
    if column.name.lower() != "diaobjectid" or (column.this.quoted and column.name != "diaobjectid"):
        return None
    try:
        key = int(str(value.this))
    except ValueError:
        return None
    found = _source(term, [column])
    if found is None:
        return None
    table, qualifier = found
    name = _table_name(table)
    if name not in BY_OBJECT:
        return None
    schema = (table.db or "").lower()
    order = order_of(schema, name)
    position = position_of(schema, name, key) if order is not None else None
    if order is None or position is None:
        return None
    ranges = region_ranges("cone", [position[0], position[1], 0.0], order)
    if ranges is None:
        return None
    parts = [n for n in (column.this, column.args.get("table"), value) if n is not None]
    starts = [n.meta.get("start") for n in parts]
    ends = [n.meta.get("end") for n in parts]
    if not all(isinstance(v, int) for v in [*starts, *ends]):
        return None
    return min(cast(list[int], starts)), max(cast(list[int], ends)) + 1, ranges_sql(ranges, qualifier)


def splice(text: str, edits: Sequence[tuple[int, int, str]]) -> str:
    """``text`` with each call at ``[begin, end)`` replaced by ``(call AND ranges)``."""
    for begin, end, ranges in sorted(edits, reverse=True):
        text = f"{text[:begin]}({text[begin:end]} AND {ranges}){text[end:]}"
    return text


def q3c_calls(text: str) -> list[tuple[int, int, exp.Anonymous]]:
    """The q3c calls of SQL text that pruning may extend: ``(begin, end, call)``, the call's place in
    the text and its node in the statement's tree (sqlglot, PostgreSQL dialect); none if sqlglot
    cannot parse it. ``EXPLAIN [ANALYZE ...]`` in front is passed over."""
    parsed = _parse(text)
    return [] if parsed is None else _q3c_in(*parsed)


def _parse(text: str) -> tuple[int, list, exp.Expression] | None:
    """(where the query starts in ``text``, its tokens, its tree), past ``EXPLAIN [(...)]``; None when
    sqlglot cannot parse it."""
    dialect = Postgres()
    offset = 0  # where the query starts: after EXPLAIN and its options
    try:
        tokens = dialect.tokenize(text)
        if tokens and tokens[0].token_type == TokenType.COMMAND and tokens[0].text.upper() == "EXPLAIN":
            offset = tokens[0].end + 1
            tokens = dialect.tokenize(text[offset:])
            i = 0
            query_start = (TokenType.SELECT, TokenType.WITH, TokenType.L_PAREN, TokenType.VALUES)
            while i < len(tokens) and tokens[i].token_type not in query_start:
                i += 1
            if i < len(tokens) and tokens[i].token_type == TokenType.L_PAREN:  # EXPLAIN (options) query
                depth = 0
                for j in range(i, len(tokens)):
                    depth += {TokenType.L_PAREN: 1, TokenType.R_PAREN: -1}.get(tokens[j].token_type, 0)
                    if depth == 0:
                        i = j + 1
                        break
            if i >= len(tokens):
                return None
            offset += tokens[i].start
            tokens = dialect.tokenize(text[offset:])
    except (TokenError, ValueError):
        return None
    try:
        tree = cast(exp.Expression, sqlglot.parse_one(text[offset:], read=dialect))
    except (ParseError, TokenError, ValueError, RecursionError):
        return None  # PostgreSQL will say what is wrong, if anything; sqlglot does not know every form
    return offset, tokens, tree


def _q3c_in(offset: int, tokens: list, tree: exp.Expression) -> list[tuple[int, int, exp.Anonymous]]:
    starts = {t.start: n for n, t in enumerate(tokens)}
    found: list[tuple[int, int, exp.Anonymous]] = []
    for call in _calls(tree):
        begin = (call.meta or {}).get("start")
        if begin is None or (n := starts.get(begin)) is None:
            continue
        if n + 1 >= len(tokens) or tokens[n + 1].token_type != TokenType.L_PAREN:
            continue
        depth, end = 0, None
        for tok in tokens[n + 1 :]:
            depth += {TokenType.L_PAREN: 1, TokenType.R_PAREN: -1}.get(tok.token_type, 0)
            if depth == 0:
                end = tok.end + 1
                break
        if end is None:
            continue
        found.append((offset + begin, offset + end, call))
    return found
