"""ADQL translations kept per query shape: the TAP fast path parses and rewrites a shape once.

Translating ADQL (sqlglot: parse, rewrite, print) and adding the partition ranges (parse the
PostgreSQL again, :mod:`dpdb.pruning`) took most of a small query's time in the service, several
milliseconds a query. A client sends queries of one shape over and over (cone after cone: the
same text but for its numbers), and they translate to the same PostgreSQL but for those numbers
and the ranges that follow from them. So, per shape, this module keeps:

- the PostgreSQL the service runs, as a template whose slots are the query's numbers (each slot
  filled with the number's text as the user wrote it), with the run's metadata (tables read,
  xtypes, the row limit and whether MAXREC may cut the result);
- for each q3c region of that statement whose values come from slots, how its ``_healpix_29``
  ranges are worked out (:func:`dpdb.pruning.region_ranges` on the filled values, at the partition
  order the catalog has at that moment).

**The key** is the query's text with every number left out (found by a small scanner that passes
over strings, quoted names and comments; a query whose numbers are not each a whole ADQL token of
their own is never kept) and MAXREC; a kept shape that reads the prompt catalog also records
which as-of views it read through. **A number becomes a slot** only if the translation copies it
into the statement without reading it: numbers under TOP/OFFSET, a number compared with CONTAINS,
or vertices folded into a pg_sphere polygon stay part of the shape (a query with other values
there is another shape). **Checked when made:** the filled template must equal the full
translation of the query it was made from, and of that query with every slot's number changed;
a shape that fails either is translated in full every time.

**Never cached:** queries with uploads (their rows are inlined in the statement: a user's data must
not outlive the request, nor reach another user's query), and ASOF/RELEASE queries (the general
path). A template holds no rows and no login: each query runs as its own login
(docs/architecture.md, decision 12).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import TokenError
from sqlglot.tokens import TokenType

from ..config import Settings
from .adql import ADQL, AdqlError, Translation, parse, translate_tree

__all__ = ["Statement", "Prepared", "lookup", "learn", "clear"]

log = logging.getLogger(__name__)

_SCAN = re.compile(
    r"(?P<skip>'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|[A-Za-z_][A-Za-z0-9_$]*)"
    r"|(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)",
    re.DOTALL,
)
"""The numbers of a query (``number``), passing over strings, quoted names, comments and names."""
_NOT_AFTER = re.compile(r"[A-Za-z0-9_.$'\"]")
"""A number that may fill a slot: digits, a decimal point, an exponent (ADQL's unsigned numeric literal)."""
_SLOT = "dpdbslot{}x"
_SLOT_RE = re.compile(r"dpdbslot(\d+)x")
_SLOT_META = "dpdb_slot"
_MAX_SHAPES = 512
_MAX_VARIANTS = 8
"""Shapes kept (least recently used dropped) and, per key, variants with different fixed numbers."""


@dataclass(frozen=True)
class Statement:
    """What the fast path runs for one query: its translation (``sql`` as recorded in the result), the
    statement sent (as-of views, partition ranges), and whether it reads the prompt catalog."""

    translation: Translation
    text: str
    reads_prompt: bool
    single: bool = False
    """``text`` is one statement and nothing else (:func:`dpdb.tap.engine.one_statement`, checked when
    its shape was made: a slot holds only a number), so it may go in a multi-statement message."""
    prepared: Prepared | None = None
    """``text`` as a prepared statement's text and arguments (:func:`dpdb.tap.engine.run_final_async`
    runs it planned once per connection); None: ``text`` is planned each time."""


@dataclass(frozen=True)
class Prepared:
    """A kept shape's statement with its slots as parameters: ``text`` (``$1``...) is the same for every
    query of the shape and partition ranges, ``types`` are the SQL types of the slots' numbers as
    PostgreSQL reads them in ``Statement.text`` (``integer``, ``bigint``, ``numeric``), so a parameter
    means what its number meant, and ``args`` are the numbers as the user wrote them."""

    text: str
    types: tuple[str, ...]
    args: tuple[str, ...]


@dataclass(frozen=True)
class _Ranges:
    """How the partition ranges of one q3c region of a template are made from the slots' values."""

    kind: str  # cone, polygon
    values: tuple[exp.Expression, ...]  # cone: ra, dec, radius; polygon: the vertex array
    schema: str
    table: str
    qualifier: str | None


_Piece = str | int | tuple[str, int]
"""Template text, a slot (its index), or ("(", k) / (")", k): where region k's ranges go."""


@dataclass(frozen=True)
class _Shape:
    fixed: tuple[tuple[int, str], ...]
    """(index among the query's numbers, text) of the numbers that are part of the shape."""
    slots: tuple[int, ...]
    """Index among the query's numbers of each slot's number."""
    sql: tuple[_Piece, ...]
    text: tuple[_Piece, ...]
    ranges: tuple[_Ranges, ...]
    translation: Translation  # its sql and adql are the first query's
    reads_prompt: bool
    views: frozenset[str] | None
    single: bool = False
    preparable: bool = False
    """``single``, and no slot is a position (ORDER BY 2): it may run prepared (:class:`Prepared`)."""

    def matches(self, numbers: Sequence[str]) -> bool:
        return all(numbers[i] == text for i, text in self.fixed)

    def fill(self, texts: Sequence[str], query: str, settings: Settings) -> Statement:
        from ..query import cached_partition_orders

        conditions: list[str | None] = []
        if self.ranges:
            order_of = cached_partition_orders(settings, [_as_of_schema()] if self.reads_prompt else [])
            conditions = [_condition(r, texts, order_of) for r in self.ranges]
        translation = dataclasses.replace(
            self.translation, adql=query, sql=_fill(self.sql, texts, conditions),
            tables=list(self.translation.tables), xtypes=dict(self.translation.xtypes),
        )  # fmt: skip
        prepared = None
        if self.preparable and self.slots and not self.reads_prompt:
            prepared = _prepared(self.text, texts, conditions)
        return Statement(translation, _fill(self.text, texts, conditions), self.reads_prompt, self.single,
                         prepared)  # fmt: skip


@dataclass(frozen=True)
class _Refused:
    """A shape that did not pass its checks: translated in full every time."""

    fixed: tuple[tuple[int, str], ...]

    def matches(self, numbers: Sequence[str]) -> bool:
        return all(numbers[i] == text for i, text in self.fixed)


_cache: OrderedDict[tuple[Any, ...], list[_Shape | _Refused]] = OrderedDict()
_lock = threading.Lock()


def clear() -> None:
    """Forget every shape (tests; after a code or schema change in a running process)."""
    with _lock:
        _cache.clear()


def _as_of_schema() -> str:
    from ..as_of_rewrite import AS_OF_SCHEMA

    return AS_OF_SCHEMA


def _numbers(query: str) -> tuple[tuple[Any, ...], list[tuple[int, int]]] | None:
    """The query's key text (the stripped query without its numbers) and where its numbers are;
    None: never kept (the slot marker, ``$`` or ``\\`` in it, or a number run into other text)."""
    text = _stripped(query)
    if "dpdbslot" in text.lower() or "$" in text or "\\" in text:
        return None
    pieces: list[str] = []
    spans: list[tuple[int, int]] = []
    last = 0
    for m in _SCAN.finditer(text):
        if m.lastgroup != "number":
            continue
        begin, end = m.span()
        if (begin and _NOT_AFTER.match(text, begin - 1)) or _NOT_AFTER.match(text, end):
            return None  # e.g. 1e5x or 1.2.3: not a number token of its own
        pieces.append(text[last:begin])
        spans.append((begin, end))
        last = end
    pieces.append(text[last:])
    return tuple(pieces), spans


def _stripped(query: str) -> str:
    return query.strip().rstrip(";").strip()  # as adql.parse reads it


def lookup(settings: Settings, query: str, maxrec: int) -> Statement | None:
    """The statement of ``query`` from a kept shape; None if its shape is not kept (or refused)."""
    found_numbers = _numbers(query)
    if found_numbers is None:
        return None
    key_text, spans = found_numbers
    text = _stripped(query)
    numbers = [text[b:e] for b, e in spans]
    key = (maxrec, key_text)
    with _lock:
        variants = _cache.get(key)
        if variants is None:
            return None
        _cache.move_to_end(key)
        found = next((v for v in variants if v.matches(numbers)), None)
    if not isinstance(found, _Shape):
        return None
    if found.reads_prompt:
        from .engine import as_of_views

        if as_of_views(settings) != found.views:
            return None
    return found.fill([numbers[i] for i in found.slots], query, settings)


Finish = Callable[[Translation], bool]
"""Completes a translation as the service runs it (MAXREC=0 ...) and says whether it reads prompt."""
Full = Callable[[str], Statement]
"""The statement of a query translated in full (what :func:`lookup` must reproduce)."""


def learn(
    settings: Settings, query: str, maxrec: int, finish: Finish, full: Full, known_names: frozenset[str]
) -> Statement:
    """The statement of ``query``, translated in full, its shape kept for the next queries like it.
    ``known_names``: as :func:`dpdb.tap.adql.translate` takes them.

    Raises what the translation raises (:class:`dpdb.tap.adql.AdqlError`, ``CannotRunFast``)."""
    found_numbers = _numbers(query)
    if found_numbers is None:
        return full(query)
    key_text, spans = found_numbers
    stripped = _stripped(query)
    numbers = [stripped[b:e] for b, e in spans]
    tree = parse(stripped)
    try:
        tokens = list(ADQL().tokenize(stripped))
    except (TokenError, ValueError):
        return full(query)
    if [(t.start, t.end + 1) for t in tokens if t.token_type == TokenType.NUMBER] != spans:
        return full(query)  # the scanner and sqlglot disagree on where the numbers are: never kept
    starts = {b: i for i, (b, _) in enumerate(spans)}
    slots: list[int] = []
    for literal in tree.find_all(exp.Literal):
        index = starts.get((literal.meta or {}).get("start", -1))
        if literal.is_string or index is None or literal.find_ancestor(exp.Limit, exp.Offset, exp.Fetch):
            continue
        literal.meta[_SLOT_META] = len(slots)
        slots.append(index)
    translation, out = translate_tree(tree, query, maxrec=maxrec if maxrec > 0 else None,
                                      known_names=known_names)  # fmt: skip
    # a number that is a whole ORDER BY / GROUP BY item is a column's position: never a parameter
    items = [o.this for o in out.find_all(exp.Ordered)]
    items += [e for g in out.find_all(exp.Group) for e in g.expressions]
    preparable = not any(isinstance(e, exp.Literal) and _SLOT_META in (e.meta or {}) for e in items)
    marked = out.copy()
    for literal in list(marked.find_all(exp.Literal)):
        slot = (literal.meta or {}).get(_SLOT_META)
        if slot is not None:
            literal.set("this", _SLOT.format(slot))  # in place: keeps a comment attached to it
    sql = marked.sql(dialect=Postgres)
    template = dataclasses.replace(translation, sql=sql, tables=list(translation.tables),
                                   xtypes=dict(translation.xtypes))  # fmt: skip
    reads_prompt = finish(translation)
    finish(template)
    from .engine import as_of_text, as_of_views, final_text, one_statement

    text = final_text(settings, translation.sql, reads_prompt=reads_prompt)
    statement = Statement(translation, text, reads_prompt, one_statement(text))
    texts = [numbers[i] for i in slots]
    shape: _Shape | _Refused
    try:
        marked_text, _ = as_of_text(settings, template.sql, reads_prompt=reads_prompt)
        shape = _shape(numbers, slots, texts, template, marked_text, reads_prompt,
                       as_of_views(settings) if reads_prompt else None)  # fmt: skip
        shape = _checked(shape, numbers, spans, query, statement, settings, full)
        if isinstance(shape, _Shape) and statement.single:
            # its statements differ from this one only in numbers (slots, partition ranges)
            shape = dataclasses.replace(shape, single=True, preparable=preparable)
    except Exception as e:  # noqa: BLE001 - a shape that cannot be made is translated in full each time
        log.info("TAP query shape not kept (%s): %s", e, query)
        shape = _Refused(())  # every query of this key
    key = (maxrec, key_text)
    with _lock:
        variants = _cache.setdefault(key, [])
        _cache.move_to_end(key)
        variants[:] = [v for v in variants if v.fixed != shape.fixed]  # one made before (other as-of views)
        if len(variants) < _MAX_VARIANTS:
            variants.append(shape)
        while len(_cache) > _MAX_SHAPES:
            _cache.popitem(last=False)
    return statement


def _shape(
    numbers: Sequence[str],
    slots: list[int],
    texts: list[str],
    template: Translation,
    marked_text: str,
    reads_prompt: bool,
    views: frozenset[str] | None,
) -> _Shape:
    from .. import pruning

    used = {int(m.group(1)) for m in _SLOT_RE.finditer(template.sql)}
    kept = [i for i in range(len(slots)) if i in used]  # a number not copied into the statement: shape
    renumber = {old: new for new, old in enumerate(kept)}

    def pieces(text: str) -> list[_Piece]:
        out: list[_Piece] = []
        last = 0
        for m in _SLOT_RE.finditer(text):
            out += [text[last : m.start()], renumber[int(m.group(1))]]
            last = m.end()
        return [p for p in [*out, text[last:]] if p != ""]

    regions: list[_Ranges] = []
    edits: list[tuple[int, int, int]] = []
    for begin, end, call in pruning.q3c_calls(marked_text):
        for column in list(call.find_all(exp.Column)):  # the slots parsed as names: back to numbers
            m = _SLOT_RE.fullmatch(column.name)
            if m and not column.table:
                number = exp.Literal.number(texts[int(m.group(1))])
                number.meta[_SLOT_META] = renumber[int(m.group(1))]
                column.replace(number)
        ranges = _ranges_of(call)
        if ranges is not None:
            edits.append((begin, end, len(regions)))
            regions.append(ranges)
    text: list[_Piece] = []
    last = 0
    for begin, end, k in sorted(edits):
        if begin < last:
            raise ValueError("nested q3c calls")
        text += [*pieces(marked_text[last:begin]), ("(", k), *pieces(marked_text[begin:end]), (")", k)]
        last = end
    text += pieces(marked_text[last:])
    fixed = tuple((i, text) for i, text in enumerate(numbers) if i not in {slots[k] for k in kept})
    return _Shape(fixed, tuple(slots[k] for k in kept), tuple(pieces(template.sql)), tuple(text),
                  tuple(regions), template, reads_prompt, views)  # fmt: skip


def _ranges_of(call: exp.Anonymous) -> _Ranges | None:
    """The recipe of a call's ranges, as :func:`dpdb.pruning._ranges_condition` finds them."""
    from .. import pruning

    region = pruning._region(call)
    if region is None:
        return None
    found = pruning._source(call, region.point)
    if found is None:
        return None
    table, qualifier = found
    name = pruning._table_name(table)
    if not name:
        return None
    args = list(call.expressions)
    if region.kind == "polygon":
        values: list[exp.Expression] = [args[2]]
    elif str(call.name).lower() == "q3c_radial_query":
        values = args[2:5]
    else:  # q3c_join: the centre is the pair that is not the point
        centre = args[:2] if region.point[0] is args[2] else args[2:4]
        values = [*centre, args[4]]
    return _Ranges(region.kind, tuple(v.copy() for v in values), (table.db or "").lower(), name, qualifier)


def _number(node: exp.Expression, texts: Sequence[str]) -> float | None:
    """The value of a region's number as :func:`dpdb.pruning._const` reads it."""
    from .. import pruning

    slot = (node.meta or {}).get(_SLOT_META) if isinstance(node, exp.Literal) else None
    if slot is not None:  # a slot alone: its number (what _const reads from a number literal)
        return float(texts[slot])
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal):  # -slot (a negative Dec)
        slot = (node.this.meta or {}).get(_SLOT_META)
        if slot is not None:
            return -float(texts[slot])
    return pruning._const(_value(node, texts))


def _value(node: exp.Expression, texts: Sequence[str]) -> exp.Expression:
    copy = node.copy()
    for literal in list(copy.find_all(exp.Literal)):
        slot = (literal.meta or {}).get(_SLOT_META)
        if slot is not None:
            literal.set("this", texts[slot])
    return copy


def _condition(recipe: _Ranges, texts: Sequence[str], order_of: Any) -> str | None:
    """The ranges' SQL for the slots' values, or None, exactly as :func:`dpdb.pruning.prune_sql`."""
    from .. import pruning

    try:
        order = order_of(recipe.schema, recipe.table)
        if order is None:
            return None
        if recipe.kind == "polygon":
            vertices = pruning._array_values(_value(recipe.values[0], texts))
            if vertices is None or len(vertices) < 6 or len(vertices) % 2:
                return None
            values: list[float] = vertices
        else:
            found = [_number(v, texts) for v in recipe.values]
            if any(v is None for v in found):
                return None
            values = [float(v) for v in found if v is not None]
        ranges = pruning.region_ranges(recipe.kind, values, order)
        if ranges is None:
            return None
        return pruning.ranges_text(ranges, recipe.qualifier)
    except Exception:  # noqa: BLE001 - as pruning._condition: the query runs unpruned, still right
        return None


def _fill(pieces: Sequence[_Piece], texts: Sequence[str], conditions: Sequence[str | None]) -> str:
    out: list[str] = []
    for p in pieces:
        if isinstance(p, str):
            out.append(p)
        elif isinstance(p, int):
            out.append(texts[p])
        elif conditions[p[1]] is not None:
            out.append("(" if p[0] == "(" else f" AND {conditions[p[1]]})")
    return "".join(out)


def _prepared(pieces: Sequence[_Piece], texts: Sequence[str], conditions: Sequence[str | None]) -> Prepared:
    """:func:`_fill` with each slot as a parameter (``$k``) typed as PostgreSQL types its number."""
    out: list[str] = []
    for p in pieces:
        if isinstance(p, int):
            out.append(f"${p + 1}")
        elif isinstance(p, str):
            out.append(p)
        elif conditions[p[1]] is not None:
            out.append("(" if p[0] == "(" else f" AND {conditions[p[1]]})")
    return Prepared("".join(out), tuple(_sql_type(t) for t in texts), tuple(texts))


def _sql_type(number: str) -> str:
    """The type PostgreSQL gives the numeric constant ``number`` (an unsigned literal)."""
    if not number.isdigit():
        return "numeric"
    value = int(number)
    return "integer" if value <= 2**31 - 1 else "bigint" if value <= 2**63 - 1 else "numeric"


def _checked(
    shape: _Shape,
    numbers: Sequence[str],
    spans: Sequence[tuple[int, int]],
    query: str,
    statement: Statement,
    settings: Settings,
    full: Full,
) -> _Shape | _Refused:
    """``shape`` if it reproduces the full translation of ``query`` and of ``query`` with every slot's
    number changed; else refused."""
    slot_texts = [numbers[i] for i in shape.slots]
    other = [_other_number(t) for t in slot_texts]
    changed = _stripped(query)
    for i, text in sorted(zip(shape.slots, other, strict=True), key=lambda x: -spans[x[0]][0]):
        begin, end = spans[i]
        changed = changed[:begin] + text + changed[end:]
    for values, want in ((slot_texts, statement), (other, None)):
        if want is None:
            try:
                want = full(changed)
            except (AdqlError, ValueError) as e:
                return _refuse(shape, f"the query with other numbers does not translate ({e})")
        got = shape.fill(values, want.translation.adql, settings)
        same = (got.text == want.text and got.translation.sql == want.translation.sql
                and got.reads_prompt == want.reads_prompt
                and got.translation.tables == want.translation.tables
                and got.translation.xtypes == want.translation.xtypes
                and got.translation.row_limit == want.translation.row_limit
                and got.translation.overflow_possible == want.translation.overflow_possible)  # fmt: skip
        if not same:
            return _refuse(shape, f"the template does not reproduce {want.translation.sql!r}")
    return shape


def _refuse(shape: _Shape, why: str) -> _Refused:
    log.info("TAP query shape not kept: %s", why)
    return _Refused(shape.fixed)


def _other_number(text: str) -> str:
    """Another number in the same form (the check that a slot's value is not read)."""
    if text.isdigit():
        return str(int(text) + 7)
    return repr(float(text) * 0.999 + 0.000137)
