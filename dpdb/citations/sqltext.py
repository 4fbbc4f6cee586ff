"""The SQL text of a citation: normalized, its release aliases pinned, its cones and volatile calls found.

A small PostgreSQL lexer (string constants of every kind, quoted identifiers,
comments, dollar quotes, numbers, words, operators) as far as citations need
it. Nothing here executes SQL: what a query reads is asked of PostgreSQL's
planner (``dpdb/citations/cite.py``); this module only rewrites text.

Normalization (the query text a citation stores and re-runs):

- comments are dropped; tokens are separated by one space, except none before
  ``, ) ] . :``, none after ``( [ . :`` and none between a name and the ``(``
  after it; trailing ``;`` are dropped;
- string constants and quoted identifiers are kept byte for byte;
- unqualified references to the schemas ``current`` and ``previous`` are
  replaced by the release they name (so the text reads the same rows forever).

The identifier key additionally lower-cases every unquoted word (PostgreSQL
folds them), so ``SELECT objectId`` and ``select OBJECTID`` are one query.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from dpdb.as_of_rewrite import skip_block_comment, skip_quoted

__all__ = [
    "Token",
    "tokens",
    "normalize",
    "identity_text",
    "first_word",
    "schema_references",
    "replace_schemas",
    "volatile_calls",
    "has_unordered_limit",
    "radial_cones",
    "replace_tables",
]

_LETTER = "A-Za-z_\u0080-\U0010ffff"
_WORD = re.compile(f"[{_LETTER}][{_LETTER}0-9$]*")
_DOLLAR_TAG = re.compile(f"\\$(?:[{_LETTER}][{_LETTER}0-9]*)?\\$")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_OPERATOR_CHARS = set("+-*/<>=~!@#%^&|`?")


@dataclass(frozen=True)
class Token:
    """One lexical token: ``kind`` is ws, comment, string, qident, word, number, param, op or punct."""

    kind: str
    text: str


def tokens(text: str) -> Iterator[Token]:
    """The tokens of SQL text, in order; concatenating their texts gives ``text`` back."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            j = i
            while j < n and text[j].isspace():
                j += 1
            yield Token("ws", text[i:j])
            i = j
        elif text.startswith("--", i):
            end = text.find("\n", i)
            j = n if end < 0 else end
            yield Token("comment", text[i:j])
            i = j
        elif text.startswith("/*", i):
            j = skip_block_comment(text, i)
            yield Token("comment", text[i:j])
            i = j
        elif c == "'":
            j = skip_quoted(text, i, "'", backslash=False)
            yield Token("string", text[i:j])
            i = j
        elif c == '"':
            j = skip_quoted(text, i, '"', backslash=False)
            yield Token("qident", text[i:j])
            i = j
        elif c == "$":
            tag = _DOLLAR_TAG.match(text, i)
            if tag is None:
                m = re.compile(r"\$\d*").match(text, i)
                j = m.end() if m else i + 1
                yield Token("param", text[i:j])
                i = j
            else:
                end = text.find(tag.group(0), tag.end())
                j = n if end < 0 else end + len(tag.group(0))
                yield Token("string", text[i:j])
                i = j
        elif c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            m = _NUMBER.match(text, i)
            j = m.end() if m else i + 1
            yield Token("number", text[i:j])
            i = j
        elif (word := _WORD.match(text, i)) is not None:
            j = word.end()
            w = word.group(0)
            if j < n and text[j] == "'" and w.lower() in ("e", "b", "x", "n"):  # E'..', B'..', X'..', N'..'
                end = skip_quoted(text, j, "'", backslash=w.lower() == "e")
                yield Token("string", text[i:end])
                i = end
            elif w.lower() == "u" and text.startswith(("&'", '&"'), j):
                quote = text[j + 1]
                end = skip_quoted(text, j + 1, quote, backslash=False)
                yield Token("string" if quote == "'" else "qident", text[i:end])
                i = end
            else:
                yield Token("word", w)
                i = j
        elif c in _OPERATOR_CHARS:
            j = i
            while j < n and text[j] in _OPERATOR_CHARS and not text.startswith(("--", "/*"), j):
                j += 1
            yield Token("op", text[i : max(j, i + 1)])
            i = max(j, i + 1)
        else:
            yield Token("punct", c)
            i += 1


def _significant(text: str) -> list[Token]:
    return list(_lexed(text))


@functools.lru_cache(maxsize=64)
def _lexed(text: str) -> tuple[Token, ...]:
    """The tokens that are neither whitespace nor comments; a citation looks at its text several times."""
    return tuple(t for t in tokens(text) if t.kind not in ("ws", "comment"))


def has_semicolon(text: str) -> bool:
    """Whether the SQL text holds a ``;`` outside strings and comments (several statements)."""
    return any(t.kind == "punct" and t.text == ";" for t in _lexed(text))


_NO_SPACE_BEFORE = {",", ")", "]", ".", ":"}
_NO_SPACE_AFTER = {"(", "[", ".", ":"}


def _join(toks: list[Token], fold: bool) -> str:
    """Tokens as text with canonical spacing: one space between tokens, except none before ``, ) ] . :``,
    none after ``( [ . :``, and none between a name (or a closing bracket) and the ``(`` or ``[`` after it."""
    out: list[str] = []
    previous: Token | None = None
    for t in toks:
        piece = t.text.lower() if fold and t.kind == "word" else t.text
        if previous is not None and not (
            t.text in _NO_SPACE_BEFORE
            or previous.text in _NO_SPACE_AFTER
            or (t.text in ("(", "[") and (previous.kind in ("word", "qident") or previous.text in (")", "]")))
        ):
            out.append(" ")
        out.append(piece)
        previous = t
    return "".join(out)


def _strip_semicolons(toks: list[Token]) -> list[Token]:
    while toks and toks[-1].text == ";":
        toks = toks[:-1]
    return toks


def normalize(text: str) -> str:
    """The normalized form of SQL text: comments and redundant whitespace gone, case kept."""
    return _join(_strip_semicolons(_significant(text)), fold=False)


def identity_text(text: str) -> str:
    """The form a citation's identifier is derived from: :func:`normalize` with unquoted words folded."""
    return _join(_strip_semicolons(_significant(text)), fold=True)


def first_word(text: str) -> str:
    """The first keyword of a statement, lower case (``""`` for none)."""
    for t in _significant(text):
        return t.text.lower() if t.kind == "word" else t.text
    return ""


def _unquote(t: Token) -> str:
    if t.kind == "qident":
        return t.text[1:-1].replace('""', '"')
    return t.text.lower()


def _qualifiers(toks: list[Token]) -> Iterator[tuple[int, str, str]]:
    """(index of the schema token, schema, name) of each ``schema.name`` pair of words."""
    for k in range(len(toks) - 2):
        a, dot, b = toks[k], toks[k + 1], toks[k + 2]
        if a.kind in ("word", "qident") and dot.text == "." and b.kind in ("word", "qident"):
            if k > 0 and toks[k - 1].text == ".":
                continue  # the middle of a.b.c: b is no schema here
            yield k, _unquote(a), _unquote(b)


def schema_references(text: str) -> set[str]:
    """Lower-case names written as qualifiers (``x`` of ``x.y``): schemas, and table aliases."""
    return {schema for _, schema, _ in _qualifiers(_significant(text))}


def replace_schemas(text: str, mapping: Mapping[str, str]) -> str:
    """``text`` normalized, with qualifiers in ``mapping`` (lower case) replaced by its values."""
    toks = _strip_semicolons(_significant(text))
    for k, schema, _ in list(_qualifiers(toks)):
        if schema in mapping:
            toks[k] = Token("word", mapping[schema])
    return _join(toks, fold=False)


def replace_tables(text: str, mapping: Mapping[tuple[str | None, str], str]) -> str:
    """``text`` normalized, with table references replaced: ``(schema, table) -> new qualified name``.

    A key with schema ``None`` matches an unqualified word that is not followed
    by ``(`` (a function) nor preceded by ``.``.
    """
    toks = _strip_semicolons(_significant(text))
    out: list[Token] = []
    k = 0
    while k < len(toks):
        t = toks[k]
        if (
            t.kind in ("word", "qident")
            and k + 2 < len(toks)
            and toks[k + 1].text == "."
            and toks[k + 2].kind in ("word", "qident")
            and (k == 0 or toks[k - 1].text != ".")
            and (_unquote(t), _unquote(toks[k + 2])) in mapping
        ):
            out.append(Token("word", mapping[(_unquote(t), _unquote(toks[k + 2]))]))
            k += 3
            continue
        if (
            t.kind == "word"
            and (None, t.text.lower()) in mapping
            and (k == 0 or toks[k - 1].text != ".")
            and (k + 1 >= len(toks) or toks[k + 1].text not in (".", "("))
        ):
            out.append(Token("word", mapping[(None, t.text.lower())]))
            k += 1
            continue
        out.append(t)
        k += 1
    return _join(out, fold=False)


VOLATILE = (
    "now", "random", "clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday",
    "current_timestamp", "current_date", "current_time", "localtime", "localtimestamp", "gen_random_uuid",
    "setseed", "txid_current", "pg_current_xact_id", "nextval", "currval",
)  # fmt: skip
"""Functions whose value changes from one run to the next: a query calling one cannot be cited."""

_VALUE_KEYWORDS = {"current_timestamp", "current_date", "current_time", "localtime", "localtimestamp"}


def volatile_calls(text: str) -> list[str]:
    """Names of the volatile functions the query calls (``now()``, ``random()``, ``current_date`` ...)."""
    toks = _significant(text)
    found = []
    for k, t in enumerate(toks):
        if t.kind != "word":
            continue
        w = t.text.lower()
        if w in VOLATILE and (k == 0 or toks[k - 1].text != "."):
            called = k + 1 < len(toks) and toks[k + 1].text == "("
            if called or w in _VALUE_KEYWORDS:
                found.append(w)
    return sorted(set(found))


def has_unordered_limit(text: str) -> bool:
    """True when the query takes a LIMIT/FETCH/OFFSET subset without any ORDER BY (rows may change)."""
    words = [t.text.lower() for t in _significant(text) if t.kind == "word"]
    limited = any(w in ("limit", "fetch", "offset") for w in words)
    ordered = any(a == "order" and b == "by" for a, b in zip(words, words[1:], strict=False))
    return limited and not ordered


_OPS: dict[type, Callable[..., float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.USub: operator.neg, ast.UAdd: operator.pos,
}  # fmt: skip


def _constant(expr: str) -> float | None:
    """The value of a constant arithmetic expression (numbers, + - * /, parentheses), else None."""
    try:
        node = ast.parse(expr.replace("::float8", "").replace("::double precision", ""), mode="eval").body
    except SyntaxError:
        return None

    def value(n: ast.AST) -> float:
        if isinstance(n, ast.Constant) and isinstance(n.value, int | float) and not isinstance(n.value, bool):
            return float(n.value)
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](value(n.left), value(n.right))
        if isinstance(n, ast.UnaryOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](value(n.operand))
        raise ValueError(n)

    try:
        result = value(node)
    except (ValueError, ZeroDivisionError):
        return None
    return result if math.isfinite(result) else None


def radial_cones(text: str) -> list[tuple[float, float, float] | None]:
    """(ra, dec, radius) of each ``q3c_radial_query(ra, dec, ra0, dec0, r)`` call; None when not constant."""
    toks = _significant(text)
    cones: list[tuple[float, float, float] | None] = []
    for k, t in enumerate(toks):
        if not (t.kind == "word" and t.text.lower() == "q3c_radial_query"):
            continue
        if k + 1 >= len(toks) or toks[k + 1].text != "(":
            continue
        args: list[list[Token]] = [[]]
        depth = 0
        for u in toks[k + 2 :]:
            if u.text == "(":
                depth += 1
            elif u.text == ")":
                if depth == 0:
                    break
                depth -= 1
            elif u.text == "," and depth == 0:
                args.append([])
                continue
            args[-1].append(u)
        if len(args) != 5:
            cones.append(None)
            continue
        values = [_constant(_join(a, fold=True)) for a in args[2:]]
        cones.append(None if any(v is None for v in values) else tuple(values))  # type: ignore[arg-type]
    return cones
