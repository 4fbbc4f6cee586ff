"""The version of this code, from git (docs/architecture.md, decision 13).

An installed copy takes the version setuptools-scm computed when it was built
(``0.1.devN+gHASH``: the commit). A source checkout (editable install) asks git
at import, because the installed metadata goes stale with every new commit.
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["code_version"]


@functools.cache
def code_version() -> str:
    """The version string that names this code's commit (``+dirty`` marks uncommitted changes)."""
    root = Path(__file__).resolve().parent.parent
    if (root / ".git").exists() and (root / "pyproject.toml").exists():
        try:
            from setuptools_scm import get_version

            return str(get_version(root=str(root)))
        except Exception:  # noqa: BLE001 - git missing or unusable: fall back to the installed metadata
            pass
    try:
        return version("dpdb")
    except PackageNotFoundError:
        return "0+unknown"
