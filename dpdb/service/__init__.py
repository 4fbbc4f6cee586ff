"""The dpdb web service: one ASGI app (docs/architecture.md, decision 12).

:func:`create_app` builds it around a :class:`dpdb.Archive`; the TAP service is mounted at
``/tap``. Other parts (the portal at ``/``) add their router with ``app.include_router``.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
