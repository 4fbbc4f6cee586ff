"""Deprecated alias of :mod:`dpdb.named_sql` (renamed: it reads named blocks of sql/*.sql). Nothing in
dpdb imports it; delete it once no branch in flight does."""

from __future__ import annotations

from dpdb.named_sql import named_blocks, statements

__all__ = ["named_blocks", "statements"]
