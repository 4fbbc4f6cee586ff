"""Finding and rewriting ``prompt.<table>`` references in SQL text, outside literals and comments.

``dpdb query --as-of`` reads the prompt tables through the views of schema
``prompt_as_of``; this is the PostgreSQL lexer as far as that needs it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator

__all__ = ["AS_OF_SCHEMA", "prompt_references", "rewrite_as_of"]

AS_OF_SCHEMA = "prompt_as_of"
"""Schema of the views that read the prompt tables as of the instant in setting ``dpdb.as_of``."""


# The PostgreSQL lexer, as far as it matters for finding `prompt.<name>` outside literals and comments.
_LETTER = "A-Za-z_\u0080-\U0010ffff"
_IDENT = re.compile(f"[{_LETTER}][{_LETTER}0-9$]*")
_DOLLAR_TAG = re.compile(f"\\$(?:[{_LETTER}][{_LETTER}0-9]*)?\\$")
_QUALIFIED = re.compile(f'\\s*\\.\\s*(?:"((?:[^"]|"")*)"|([{_LETTER}][{_LETTER}0-9$]*))')


def _scan_prompt(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, table) of each unquoted schema name ``prompt`` that qualifies a name.

    String constants (also E'', dollar-quoted), quoted identifiers and comments
    are skipped; ``table`` is folded to lower case unless it is quoted.
    """
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "-" and text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif c == "/" and text.startswith("/*", i):
            i = skip_block_comment(text, i)
        elif c == "'":
            i = skip_quoted(text, i, "'", backslash=False)
        elif c == '"':
            i = skip_quoted(text, i, '"', backslash=False)
        elif c == "$":
            tag = _DOLLAR_TAG.match(text, i)
            if tag is None:  # a parameter such as $1
                i += 1
            else:
                end = text.find(tag.group(0), tag.end())
                i = n if end < 0 else end + len(tag.group(0))
        elif c.isdigit():  # a number: its letters (1e5) are no identifier
            while i < n and (text[i].isalnum() or text[i] in "._"):
                i += 1
        elif (word := _IDENT.match(text, i)) is not None:
            i = word.end()
            if word.group(0) in ("e", "E") and text.startswith("'", i):
                i = skip_quoted(text, i, "'", backslash=True)
            elif word.group(0).lower() == "prompt" and (ref := _QUALIFIED.match(text, i)) is not None:
                quoted, plain = ref.groups()
                yield (
                    word.start(),
                    word.end(),
                    quoted.replace('""', '"') if quoted is not None else plain.lower(),
                )
        else:
            i += 1


def skip_block_comment(text: str, i: int) -> int:
    """Index just past the (nested) block comment starting at ``i``."""
    depth = 0
    while i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    return len(text)


def skip_quoted(text: str, i: int, quote: str, *, backslash: bool) -> int:
    """Index just past the quoted string or identifier starting at ``i`` (doubled quotes escape)."""
    i += 1
    while i < len(text):
        c = text[i]
        if backslash and c == "\\":
            i += 2
        elif c == quote:
            if text.startswith(quote, i + 1):  # doubled quote
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return len(text)


def prompt_references(text: str) -> list[str]:
    """Lower-case names of the ``prompt.<name>`` references in SQL text."""
    return [name for _, _, name in _scan_prompt(text)]


def rewrite_as_of(sql_text: str, tables: Collection[str]) -> str:
    """Rewrite references ``prompt.<table>`` to ``prompt_as_of.<table>`` for each of ``tables``.

    Parameters
    ----------
    sql_text
        SQL text. Only unquoted ``prompt`` (any case) followed by ``.`` and a
        name is a reference; string constants, quoted identifiers and comments
        are left alone, and so are other schemas (``prompt_as_of.x``,
        ``myprompt.x``) and functions such as ``prompt.DiaObject_as_of(t)``.
    tables
        Lower-case names of the tables that have an as-of view.

    Returns
    -------
    str
        The SQL text reading those tables through schema ``prompt_as_of``.
    """
    out: list[str] = []
    last = 0
    for start, end, name in _scan_prompt(sql_text):
        if name in tables:
            out += [sql_text[last:start], AS_OF_SCHEMA]
            last = end
    return "".join(out) + sql_text[last:]
