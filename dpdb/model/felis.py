"""The felis files under ``schema/vN/``: which schema versions this code ships, and reading them.

Vocabulary used across dpdb: a *felis file* is ``schema/v<N>/<file>.yaml``; the
*schema version* is ``N``; a *catalog* is a PostgreSQL schema (namespace) such as
``prompt`` or ``dr1`` whose tables are generated from the felis file
(:mod:`dpdb.model.ddl`).
"""

from __future__ import annotations

import functools
import logging
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from felis.datamodel import Schema as FelisSchema
from felis.datamodel import Table as FelisTable
from pydantic import ValidationError as PydanticValidationError

from dpdb.errors import SchemaError, first_line

__all__ = [
    "CATALOG_FELIS",
    "META_FELIS",
    "FelisSchema",
    "FelisTable",
    "versions",
    "latest_version",
    "check_version",
    "load_felis",
    "load_felis_file",
    "position_columns",
]

log = logging.getLogger(__name__)

CATALOG_FELIS = "dpdb"
"""felis file (``dpdb.yaml``) with the catalog tables."""
META_FELIS = "meta"
"""felis file (``meta.yaml``) with the ``dpdb_meta`` bookkeeping tables."""


def _felis_root() -> Path:
    return Path(str(resources.files("dpdb.schemas")))


def versions() -> list[int]:
    """Schema versions shipped with this code, ascending."""
    found = []
    for path in _felis_root().glob("v*"):
        if path.is_dir() and path.name[1:].isdigit():
            found.append(int(path.name[1:]))
    return sorted(found)


def latest_version() -> int:
    """The newest schema version this code ships."""
    return versions()[-1]


def check_version(version: int) -> int:
    """Return ``version`` if this code ships it, else raise a SchemaError naming the known ones."""
    known = versions()
    if version not in known:
        raise SchemaError(f"unknown schema version {version} (known: {', '.join(map(str, known))})")
    return version


@functools.cache
def load_felis(version: int, file: str = CATALOG_FELIS) -> FelisSchema[Any]:
    """The validated felis schema ``schema/v<version>/<file>.yaml``."""
    check_version(version)
    return load_felis_file(_felis_root() / f"v{version}" / f"{file}.yaml")


def load_felis_file(path: Path) -> FelisSchema[Any]:
    """Parse and validate one felis file; any problem is a one-line SchemaError naming it."""
    try:
        # libyaml's loader when PyYAML has it: ten times faster on the catalog schema (activations load it)
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except OSError as e:
        raise SchemaError(f"{path}: cannot read ({e.strerror})") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SchemaError(f"{path}:{where} not valid YAML ({getattr(e, 'problem', e)})") from e
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: not a felis schema (top level is not a mapping)")
    try:
        return FelisSchema.model_validate(data)
    except PydanticValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        raise SchemaError(f"{path}: invalid felis schema at {loc or 'top level'}: {err['msg']}") from e
    except (ValueError, TypeError, KeyError) as e:  # felis validators raise these directly
        raise SchemaError(f"{path}: invalid felis schema: {first_line(e)}") from e


def position_columns(table: FelisTable) -> tuple[str, str] | None:
    """Canonical names of the principal (ra, dec) columns, marked by the ``;meta.main`` UCDs."""
    ra = dec = None
    for col in table.columns:
        ucd = (col.ivoa_ucd or "").lower().replace(" ", "")
        if ucd == "pos.eq.ra;meta.main":
            ra = col.name
        elif ucd == "pos.eq.dec;meta.main":
            dec = col.name
    return (ra, dec) if ra and dec else None
