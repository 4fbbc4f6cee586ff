"""ADQL 2.1 -> PostgreSQL with q3c and pg_sphere, on a real SQL parser (sqlglot).

ADQL is parsed into a syntax tree by sqlglot with an ADQL dialect (``TOP``, ``OFFSET``,
ADQL's ``LOG`` = natural logarithm, identifiers in any case), the tree is rewritten and
printed as PostgreSQL. queryparser-python3's ADQL translator was evaluated first: its grammar
rejects ``current`` as a schema name and ``UPPER``, ``CASE``, ``COALESCE`` or ``LOWER(column)``,
it evaluates parts of the query text with Python's ``eval``, and it only targets pg_sphere, whose
operators do not use the q3c indexes.

Geometry goes onto q3c wherever a point is tested against a region, so that cone and polygon
searches use the ``q3c_ang2ipix(ra, dec)`` index of every partition they touch; the query path the
service runs the SQL through adds the ``_healpix_29`` ranges of those partitions, as for any SQL
(:mod:`dpdb.pruning`; docs/architecture.md, decisions 1 and 6):

- ``1=CONTAINS(POINT(ra, dec), CIRCLE(ra0, dec0, r))``: ``q3c_radial_query(ra, dec, ra0, dec0, r)``,
  or ``q3c_join(ra0, dec0, ra, dec, r)`` when the centre comes from another table (upload joins);
- ``1=CONTAINS(POINT(...), POLYGON(...))`` / ``BOX(...)``: ``q3c_poly_query(ra, dec, ARRAY[...])``;
- ``INTERSECTS`` with a point is ``CONTAINS``; ``DISTANCE(p, q) < r`` in a condition adds the
  indexed ``q3c_join`` to the exact ``q3c_dist``; ``DISTANCE`` elsewhere is ``q3c_dist``;
- region against region falls back to pg_sphere operators (``@``, ``&&``);
- ``POINT``/``CIRCLE``/``POLYGON`` selected as values become DALI arrays (xtype point, circle,
  polygon), ``COORD1``/``COORD2``/``AREA`` their numbers.

Only queries (``SELECT``, set operations) pass, and only the functions of ADQL 2.1, q3c and a few
of pg_sphere, so that nothing but reading can be smuggled in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

import pyarrow as pa
import sqlglot
from sqlglot import exp, parser, tokens
from sqlglot.dialects.dialect import Dialect
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError, TokenError

from ..errors import QueryError

__all__ = ["AdqlError", "Translation", "translate", "translate_tree", "parse", "UPLOAD_SCHEMA"]

UPLOAD_SCHEMA = "tap_upload"


class AdqlError(QueryError):
    """ADQL that cannot be run: a syntax error (with line and column), or a construct not allowed."""


class ADQL(Dialect):
    """sqlglot dialect of ADQL 2.1: SQL-92 with ``TOP`` and ADQL's function names."""

    NULL_ORDERING = "nulls_are_large"  # as PostgreSQL: no NULLS FIRST/LAST added

    class Tokenizer(tokens.Tokenizer):
        KEYWORDS = {**tokens.Tokenizer.KEYWORDS, "TOP": tokens.TokenType.TOP}

    class Parser(parser.Parser):
        LOG_DEFAULTS_TO_LN = True  # ADQL LOG(x) is the natural logarithm


_GEOMETRY = {"POINT", "CIRCLE", "POLYGON", "BOX"}

_ALLOWED = {
    # ADQL 2.1 math and trigonometry
    "ABS", "ACOS", "ASIN", "ATAN", "ATAN2", "CEIL", "CEILING", "COS", "COT", "DEGREES", "EXP", "FLOOR",
    "LN", "LOG", "LOG10", "MOD", "PI", "POW", "POWER", "RADIANS", "RAND", "RANDOM", "ROUND", "SIGN", "SIN",
    "SQRT", "TAN", "TRUNC", "TRUNCATE",
    # strings, conditionals, casts, aggregates
    "LOWER", "UPPER", "LENGTH", "CHAR_LENGTH", "SUBSTRING", "TRIM", "CONCAT", "DPIPE", "COALESCE",
    "NULLIF", "GREATEST", "LEAST", "CAST", "TRY_CAST", "IF", "COUNT", "AVG", "SUM", "MIN", "MAX",
    "STDDEV", "STDDEV_SAMP", "STDDEV_POP", "VARIANCE", "VAR_SAMP", "VAR_POP", "ARRAY", "CASE", "EXISTS",
    "EXTRACT", "STR_POSITION", "OCTET_LENGTH",
    # what the geometry becomes
    "Q3C_DIST", "Q3C_JOIN", "Q3C_RADIAL_QUERY", "Q3C_POLY_QUERY", "Q3C_ANG2IPIX", "SPOINT", "SCIRCLE",
    "AREA",
}  # fmt: skip


@dataclass
class Translation:
    """An ADQL query as PostgreSQL, with what the service needs to know about its result."""

    adql: str
    sql: str
    tables: list[tuple[str, str]] = field(default_factory=list)
    """(schema, table) of every table read, lower case, after current/previous were resolved."""
    xtypes: dict[str, str] = field(default_factory=dict)
    """Output column (lower case) -> DALI xtype, for geometry selected as a value."""
    row_limit: int | None = None
    """LIMIT put on the outer query: MAXREC + 1 (one more row tells overflow) or the query's TOP."""
    overflow_possible: bool = False
    """True if the result may be cut by MAXREC (the query asks for more rows than MAXREC)."""


def translate(
    adql: str,
    *,
    maxrec: int | None = None,
    schemas: Mapping[str, str] | None = None,
    uploads: Mapping[str, pa.Table] | None = None,
    known_names: set[str] | frozenset[str] = frozenset(),
) -> Translation:
    """Translate one ADQL query to PostgreSQL.

    Parameters
    ----------
    adql
        The query text.
    maxrec
        At most this many rows are wanted; the outer query gets ``LIMIT maxrec + 1`` (unless its
        own ``TOP`` is smaller) so that the service can tell an overflow.
    schemas
        Schema names to replace (``{"current": "dr1"}`` for a query as of an instant).
    uploads
        ``TAP_UPLOAD.<name>`` tables, inlined as ``VALUES`` (they live only for this query).
    known_names
        Lower-case table and column names of the catalogs: a delimited identifier that matches
        one of them in another case (``"objectId"``) reads it.

    Raises
    ------
    AdqlError
        Syntax error (what and where), not a query, an unknown function or upload, bad geometry.
    """
    return translate_tree(_parse(adql), adql, maxrec=maxrec, schemas=schemas, uploads=uploads,
                          known_names=known_names)[0]  # fmt: skip


def translate_tree(
    tree: exp.Expression,
    adql: str,
    *,
    maxrec: int | None = None,
    schemas: Mapping[str, str] | None = None,
    uploads: Mapping[str, pa.Table] | None = None,
    known_names: set[str] | frozenset[str] = frozenset(),
) -> tuple[Translation, exp.Expression]:
    """:func:`translate` of an already parsed query (``parse(adql)``, rewritten in place); also the
    PostgreSQL tree it printed (:mod:`dpdb.tap.shapes` reads where each literal went)."""
    translator = _Translator(schemas or {}, uploads or {}, known_names)
    tree = translator.rewrite(tree)
    row_limit, overflow = _limit(tree, maxrec)
    sql = tree.sql(dialect=Postgres)
    return Translation(adql, sql, translator.tables, translator.xtypes, row_limit, overflow), tree


def parse(adql: str) -> exp.Expression:
    """The syntax tree of one ADQL query (what :func:`translate` parses); :class:`AdqlError` if none."""
    return _parse(adql)


def _parse(adql: str) -> exp.Expression:
    text = adql.strip().rstrip(";").strip()
    if not text:
        raise AdqlError("QUERY is empty: give an ADQL SELECT statement")
    try:
        statements = [s for s in sqlglot.parse(text, read=ADQL) if s is not None]
    except ParseError as e:
        raise AdqlError(_syntax_message(e)) from e
    except TokenError as e:
        raise AdqlError(f"ADQL syntax error: {e}") from e
    if len(statements) != 1:
        raise AdqlError(f"QUERY holds {len(statements)} statements; give exactly one ADQL SELECT")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        kind = tree.key.upper()
        if not isinstance(tree, exp.Command | exp.Delete | exp.Insert | exp.Update | exp.Create | exp.Drop):
            first = text.split(None, 1)[0]
            raise AdqlError(
                f"ADQL syntax error at line 1, column 1 near '{first}': a query starts with SELECT"
            )
        raise AdqlError(f"only ADQL SELECT queries run here, not {kind}: this service reads, never writes")
    return cast(exp.Expression, tree)


def _syntax_message(e: ParseError) -> str:
    if not e.errors:
        return f"ADQL syntax error: {e}"
    first = e.errors[0]
    near = (first.get("highlight") or "").strip()
    where = f"line {first.get('line')}, column {first.get('col')}"
    what = first.get("description") or "invalid syntax"
    before = (first.get("start_context") or "")[-40:]
    context = f" (after '{before.strip()}')" if before.strip() else ""
    return f"ADQL syntax error at {where} near '{near}'{context}: {what}"


def _limit(tree: exp.Expression, maxrec: int | None) -> tuple[int | None, bool]:
    """Cap the outer query at MAXREC + 1 rows; whether MAXREC may cut the result."""
    current = tree.args.get("limit")
    asked: int | None = None
    if isinstance(current, exp.Limit) and isinstance(current.expression, exp.Literal):
        try:
            asked = int(current.expression.this)
        except ValueError:
            asked = None
    if maxrec is None:
        return asked, False
    if asked is not None and asked <= maxrec:
        return asked, False
    tree.set("limit", exp.Limit(expression=exp.Literal.number(maxrec + 1)))
    return maxrec + 1, True


# -- the rewrite ------------------------------------------------------------------------------------


@dataclass
class _Geom:
    kind: str  # point, circle, polygon, box
    args: list[exp.Expression]  # degrees: (ra, dec), (ra, dec, r), (ra1, dec1, ...), (ra, dec, w, h)

    def constant(self) -> bool:
        return not any(a.find(exp.Column) for a in self.args)


def _fname(node: exp.Expression) -> str | None:
    if isinstance(node, exp.Anonymous):
        return str(node.name).upper()
    if isinstance(node, exp.Contains):
        return "CONTAINS"
    return None


def _call_args(node: exp.Expression) -> list[exp.Expression]:
    if isinstance(node, exp.Anonymous):
        return list(node.expressions)
    return [a for a in (node.args.get("this"), node.args.get("expression")) if a is not None]


def _num(value: float) -> exp.Expression:
    return exp.Literal.number(repr(float(value)))


def _fn(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


class _Translator:
    def __init__(
        self,
        schemas: Mapping[str, str],
        uploads: Mapping[str, pa.Table],
        known: set[str] | frozenset[str],
    ) -> None:
        self.aliases: dict[str, tuple[str, str]] = {}
        self.schemas = {k.lower(): v for k, v in schemas.items()}
        self.uploads = {k.lower(): v for k, v in uploads.items()}
        self.known = known
        self.tables: list[tuple[str, str]] = []
        self.xtypes: dict[str, str] = {}

    def rewrite(self, tree: exp.Expression) -> exp.Expression:
        tree = tree.transform(self._identifiers, copy=False)
        tree = tree.transform(self._tables, copy=False)
        tree = tree.transform(self._predicates, copy=False)
        self._select_values(tree)
        tree = tree.transform(self._functions, copy=False)
        tree = tree.transform(self._regions, copy=False)
        self._check_functions(tree)
        return tree

    # identifiers: delimited names of catalog objects in the case the database has them
    def _identifiers(self, node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Identifier) and node.quoted:
            text = str(node.this)
            if text != text.lower() and text.lower() in self.known:
                return exp.Identifier(this=text.lower(), quoted=False)
        return node

    def _tables(self, node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Table) or not node.name:
            return node
        schema = node.db.lower() if node.db else ""
        name = node.name.lower() if not node.this.quoted else node.name
        if schema == UPLOAD_SCHEMA:
            return self._upload(node, name)
        if schema in self.schemas:
            node.set("db", exp.Identifier(this=self.schemas[schema], quoted=False))
            schema = self.schemas[schema]
        if node.args.get("catalog"):
            raise AdqlError(f"table {node.sql()}: give schema.table, not a catalog-qualified name")
        self.tables.append((schema, name))
        self.aliases[(node.alias or name).lower()] = (schema, name)
        return node

    def _upload(self, node: exp.Table, name: str) -> exp.Expression:
        table = self.uploads.get(name)
        if table is None:
            known = ", ".join(sorted(self.uploads)) or "none"
            raise AdqlError(f"TAP_UPLOAD.{name} was not uploaded with this query (uploads: {known})")
        alias = node.alias or name
        values = _values_sql(table)
        sub = sqlglot.parse_one(f"SELECT * FROM {values}", read=Postgres)
        return exp.Subquery(this=sub, alias=exp.TableAlias(this=exp.to_identifier(alias)))

    # CONTAINS / INTERSECTS compared with 1 or 0, DISTANCE(...) < r in conditions
    def _predicates(self, node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.EQ | exp.NEQ):
            left, right = node.this, node.expression
            for call, value in ((left, right), (right, left)):
                fname = _fname(call)
                is_number = isinstance(value, exp.Literal) and not value.is_string
                if fname in ("CONTAINS", "INTERSECTS") and is_number:
                    truth = float(value.this)
                    if truth not in (0.0, 1.0):
                        raise AdqlError(f"{fname}(...) can only be compared with 1 or 0, not {value.this}")
                    positive = (truth == 1.0) == isinstance(node, exp.EQ)
                    predicate = self._region_predicate(fname, call)
                    return predicate if positive else exp.Not(this=exp.Paren(this=predicate))
        if isinstance(node, exp.LT | exp.LTE | exp.GT | exp.GTE):
            flipped = isinstance(node, exp.GT | exp.GTE)
            call, bound = (node.expression, node.this) if flipped else (node.this, node.expression)
            if _fname(call) == "DISTANCE" and not bound.find(exp.Anonymous):
                p, q = self._distance_points(call)
                dist = _fn("q3c_dist", p.args[0], p.args[1], q.args[0], q.args[1])
                inclusive = isinstance(node, exp.LTE | exp.GTE)
                exact_node = (exp.LTE if inclusive else exp.LT)(this=dist, expression=bound.copy())
                return exp.And(this=self._within(p, q, bound), expression=exact_node)
        return node

    def _region_predicate(self, fname: str, call: exp.Expression) -> exp.Expression:
        args = _call_args(call)
        if len(args) != 2:
            raise AdqlError(f"{fname} takes two geometries, got {len(args)} arguments")
        a, b = (self._geometry(x, fname) for x in args)
        if fname == "INTERSECTS" and b.kind == "point" and a.kind != "point":
            a, b = b, a
        if a.kind == "point" and b.kind == "circle":
            return self._within(a, _Geom("point", b.args[:2]), b.args[2])
        if a.kind == "point" and b.kind in ("polygon", "box"):
            corners = b.args if b.kind == "polygon" else _box_corners(b)
            vertices = exp.Cast(this=exp.Array(expressions=corners), to=exp.DataType.build("DOUBLE[]"))
            return _fn("q3c_poly_query", a.args[0], a.args[1], vertices)
        if a.kind == "point" and b.kind == "point":
            return exp.EQ(this=_fn("q3c_dist", *a.args, *b.args), expression=exp.Literal.number(0))
        if fname == "CONTAINS":  # pg_sphere: a <@ b, a is contained by b
            return exp.Paren(this=exp.ArrayContainedBy(this=_spg(a), expression=_spg(b)))
        return exp.Paren(this=exp.ArrayOverlaps(this=_spg(a), expression=_spg(b)))

    def _within(self, point: _Geom, centre: _Geom, radius: exp.Expression) -> exp.Expression:
        if centre.constant():
            return _fn("q3c_radial_query", *point.args, *centre.args, radius.copy())
        if point.constant():
            return _fn("q3c_radial_query", *centre.args, *point.args, radius.copy())
        return _fn("q3c_join", *centre.args, *point.args, radius.copy())

    def _distance_points(self, call: exp.Expression) -> tuple[_Geom, _Geom]:
        args = _call_args(call)
        if len(args) == 4:
            return _Geom("point", args[:2]), _Geom("point", args[2:])
        if len(args) != 2:
            raise AdqlError("DISTANCE takes two points (or ra1, dec1, ra2, dec2)")
        p, q = (self._geometry(x, "DISTANCE") for x in args)
        if p.kind != "point" or q.kind != "point":
            raise AdqlError("DISTANCE is defined between two points")
        return p, q

    def _geometry(self, node: exp.Expression, where: str) -> _Geom:
        name = _fname(node)
        if name not in _GEOMETRY:
            raise AdqlError(
                f"{where}: expected POINT, CIRCLE, POLYGON or BOX, got {node.sql(dialect=ADQL)[:60]} "
                "(this service has no geometry-valued columns; build them from ra/dec)"
            )
        args = _call_args(node)
        if args and isinstance(args[0], exp.Literal) and args[0].is_string:
            args = args[1:]  # the coordinate system: ICRS is the only frame of these catalogs
        if name == "CIRCLE" and len(args) == 2:
            centre = self._geometry(args[0], "CIRCLE")
            args = [*centre.args, args[1]]
        if name == "POLYGON" and args and _fname(args[0]) == "POINT":
            args = [c for a in args for c in self._geometry(a, "POLYGON").args]
        want = {"POINT": (2,), "CIRCLE": (3,), "BOX": (4,)}.get(name)
        if (want and len(args) not in want) or (name == "POLYGON" and (len(args) < 6 or len(args) % 2)):
            raise AdqlError(f"{name} has {len(args)} coordinates; see ADQL 2.1 §4.2 for its arguments")
        return _Geom(name.lower(), [a.copy() for a in args])

    # geometry as selected values: DALI arrays with an xtype
    def _select_values(self, tree: exp.Expression) -> None:
        for select in tree.find_all(exp.Select):
            new = []
            for item in select.expressions:
                inner = item.this if isinstance(item, exp.Alias) else item
                name = _fname(inner)
                if name in _GEOMETRY:
                    geom = self._geometry(inner, name)
                    xtype = "polygon" if geom.kind == "box" else geom.kind
                    values = _box_corners(geom) if geom.kind == "box" else geom.args
                    alias = item.alias if isinstance(item, exp.Alias) else geom.kind
                    self.xtypes[alias.lower()] = xtype
                    array = exp.Cast(this=exp.Array(expressions=values), to=exp.DataType.build("DOUBLE[]"))
                    item = exp.Alias(this=array, alias=exp.to_identifier(alias))
                new.append(item)
            select.set("expressions", new)

    def _functions(self, node: exp.Expression) -> exp.Expression:
        name = _fname(node)
        if name == "DISTANCE":
            p, q = self._distance_points(node)
            return _fn("q3c_dist", *p.args, *q.args)
        if name in ("COORD1", "COORD2"):
            args = _call_args(node)
            if len(args) != 1:
                raise AdqlError(f"{name} takes one point")
            arg = args[0]
            geom = self._geometry(arg, name)
            return geom.args[0 if name == "COORD1" else 1]
        if name == "COORDSYS":
            return exp.Literal.string("ICRS")
        if name == "AREA":
            (arg,) = _call_args(node)
            geom = self._geometry(arg, "AREA")
            square_degrees = (180.0 / math.pi) ** 2
            return exp.Mul(this=_fn("area", _spg(geom)), expression=_num(square_degrees))
        if name in ("CONTAINS", "INTERSECTS"):
            return exp.Cast(this=self._region_predicate(name, node), to=exp.DataType.build("INT"))
        if isinstance(node, exp.Round) and node.args.get("decimals") is not None:
            numeric = exp.Cast(this=node.this, to=exp.DataType.build("NUMERIC"))
            node.set("this", numeric)
            return exp.Cast(this=node, to=exp.DataType.build("DOUBLE"))
        return node

    def _regions(self, node: exp.Expression) -> exp.Expression:
        name = _fname(node)
        if name in _GEOMETRY:
            return _spg(self._geometry(node, name))
        return node

    def _check_functions(self, tree: exp.Expression) -> None:
        for node in tree.find_all(exp.Func):
            if isinstance(node, exp.Binary | exp.Unary | exp.Connector):
                continue  # operators, not functions
            if isinstance(node, exp.Anonymous):
                name = str(node.name).upper()
            else:
                name = node.sql_name().upper()
            if name not in _ALLOWED:
                raise AdqlError(
                    f"function {name} is not available: ADQL 2.1 functions (math, LOWER/UPPER, geometry) "
                    "and q3c_* only"
                )


def _box_corners(box: _Geom) -> list[exp.Expression]:
    ra, dec, width, height = box.args
    half_w = exp.Div(this=exp.Paren(this=width.copy()), expression=exp.Literal.number(2))
    half_h = exp.Div(this=exp.Paren(this=height.copy()), expression=exp.Literal.number(2))
    out: list[exp.Expression] = []
    for sw, sh in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        for sign, centre, half in ((sw, ra, half_w), (sh, dec, half_h)):
            op = exp.Add if sign > 0 else exp.Sub
            out.append(op(this=centre.copy(), expression=half.copy()))
    return out


def _spg(geom: _Geom) -> exp.Expression:
    """The pg_sphere value of a geometry (degrees in, radians for pg_sphere)."""

    def point(ra: exp.Expression, dec: exp.Expression) -> exp.Expression:
        return _fn("spoint", exp.Anonymous(this="RADIANS", expressions=[ra.copy()]),
                   exp.Anonymous(this="RADIANS", expressions=[dec.copy()]))  # fmt: skip

    if geom.kind == "point":
        return point(*geom.args)
    if geom.kind == "circle":
        radius = exp.Anonymous(this="RADIANS", expressions=[geom.args[2]])
        return _fn("scircle", point(*geom.args[:2]), radius)
    corners = geom.args if geom.kind == "polygon" else _box_corners(geom)
    if any(c.find(exp.Column) for c in corners):
        raise AdqlError("a POLYGON or BOX compared with another region must have constant vertices")
    pairs = []
    for i in range(0, len(corners), 2):
        ra, dec = _const(corners[i]), _const(corners[i + 1])
        pairs.append(f"({ra!r}d,{dec!r}d)")
    text = exp.Literal.string("{" + ",".join(pairs) + "}")
    return exp.Cast(this=text, to=exp.DataType.build("spoly", udt=True))


def _const(node: exp.Expression) -> float:
    """The value of a constant numeric expression (sqlglot's simplifier folds it)."""
    from sqlglot.optimizer.simplify import simplify

    folded = simplify(node.copy())
    if isinstance(folded, exp.Neg) and isinstance(folded.this, exp.Literal):
        return -float(folded.this.this)
    if isinstance(folded, exp.Literal) and not folded.is_string:
        return float(folded.this)
    raise AdqlError(f"vertex {node.sql(dialect=ADQL)} is not a constant number")


_ARROW_SQL = {
    "int8": "SMALLINT", "int16": "SMALLINT", "int32": "INTEGER", "int64": "BIGINT", "uint8": "SMALLINT",
    "uint16": "INTEGER", "uint32": "BIGINT", "float": "REAL", "double": "DOUBLE PRECISION",
    "halffloat": "REAL", "bool": "BOOLEAN", "string": "TEXT", "large_string": "TEXT",
}  # fmt: skip


def _values_sql(table: pa.Table) -> str:
    """An upload as a VALUES list with typed columns (every value a literal sqlglot quotes)."""
    from psycopg import sql as psql

    names = []
    types = []
    for f in table.schema:
        sql_type = _ARROW_SQL.get(str(f.type))
        if sql_type is None:
            raise AdqlError(f"upload column {f.name!r} has type {f.type}, which uploads do not support")
        names.append(psql.Identifier(f.name.lower()).as_string(None))
        types.append(sql_type)
    if not names:
        raise AdqlError("the upload has no columns")
    rows = table.to_pylist()
    if not rows:
        nulls = ", ".join(f"CAST(NULL AS {t}) AS {n}" for n, t in zip(names, types, strict=True))
        return f"(SELECT {nulls} WHERE false) AS _upload"
    lines = []
    for row in rows:
        cells = []
        for f, t in zip(table.schema, types, strict=True):
            value = row[f.name]
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            literal = exp.convert(value).sql(dialect=Postgres) if value is not None else "NULL"
            cells.append(f"CAST({literal} AS {t})")
        lines.append("(" + ", ".join(cells) + ")")
    return f"(VALUES {', '.join(lines)}) AS _upload({', '.join(names)})"
