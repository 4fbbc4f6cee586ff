"""The ``dpdb`` command line: a root group (``root``) and one module per command group.

Commands are thin: they parse, call the public API (:class:`dpdb.Archive`) and
print. Modules share ``_common`` and never import ``root``, which imports them.
"""

from __future__ import annotations

from .root import cli, main

__all__ = ["cli", "main"]
