"""Where ``dpdb serve`` is running: its base URL, kept in a small file in ``DPDB_HOME`` while it runs.

A citation's landing page is ``<portal>/cite/<id>``. The portal's base URL is
``DPDB_PORTAL_URL`` when the operator sets it (the public address behind a
proxy); otherwise, while ``dpdb serve`` runs on this database, the address it
listens on, so that ``dpdb cite show`` names the landing page of the running
portal. The file names the server's process; a file left by a server that was
killed is ignored (its process is gone).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path

from .atomic import atomic_file
from .config import Settings

__all__ = ["serving_file", "record_serving", "clear_serving", "running_url", "portal_base"]


def serving_file(settings: Settings) -> Path:
    """The file ``dpdb serve`` writes for this database."""
    return settings.home / f"serve-{settings.database}.json"


def base_url(host: str, port: int) -> str:
    """The URL clients reach a server listening on ``host:port`` at (a wildcard: this host's name)."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - naming the address, not binding it
        host = socket.getfqdn()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def record_serving(settings: Settings, url: str) -> Path:
    """Record that this process serves the portal at ``url``."""
    out = serving_file(settings)
    with atomic_file(out, binary=False) as f:
        json.dump({"pid": os.getpid(), "url": url.rstrip("/")}, f)
    return out


def clear_serving(settings: Settings) -> None:
    """Forget this process's record (when the server stops)."""
    path = serving_file(settings)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is a ``dpdb serve``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc: at least the process exists
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return b"serve" in cmdline


def running_url(settings: Settings) -> str | None:
    """The base URL of the ``dpdb serve`` running on this database, if one runs."""
    try:
        state = json.loads(serving_file(settings).read_text())
        pid, url = int(state["pid"]), str(state["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return url if _running(pid) else None


def portal_base(settings: Settings) -> str | None:
    """The portal's base URL: ``DPDB_PORTAL_URL`` if set, else the running ``dpdb serve``'s, else None."""
    return settings.portal_url.rstrip("/") if settings.portal_url else running_url(settings)
