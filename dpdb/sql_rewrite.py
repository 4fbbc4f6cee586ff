"""Deprecated alias of :mod:`dpdb.as_of_rewrite` (renamed: it rewrites for ``--as-of``). Nothing in dpdb
imports it; delete it once no branch in flight does."""

from __future__ import annotations

from dpdb.as_of_rewrite import AS_OF_SCHEMA, prompt_references, rewrite_as_of

__all__ = ["AS_OF_SCHEMA", "prompt_references", "rewrite_as_of"]
