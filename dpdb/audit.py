"""Deprecated alias of :mod:`dpdb.registry.audit` for branches written before the registry. Nothing in
dpdb imports it; delete it once no branch in flight does."""

from __future__ import annotations

from dpdb.registry.audit import Audit, audited

__all__ = ["Audit", "audited"]
