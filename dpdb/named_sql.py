"""Named SQL statements kept in ``sql/*.sql`` files (readable and runnable in psql).

A file holds blocks introduced by ``-- name: NAME``; a block may hold several
statements, each ending with ``;`` at the end of a line.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

__all__ = ["named_blocks", "statements"]

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@functools.cache
def named_blocks(filename: str) -> dict[str, str]:
    """``{name: sql}`` of every block in ``sql/<filename>``."""
    text = (resources.files("dpdb.sql") / filename).read_text()
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def statements(block: str) -> list[str]:
    """The statements of a block, without comment-only lines."""
    lines = [ln for ln in block.splitlines() if not ln.lstrip().startswith("--")]
    return [s.strip() for s in re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE) if s.strip()]
