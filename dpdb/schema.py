"""Deprecated alias of :mod:`dpdb.model.felis` and :mod:`dpdb.model.ddl` for branches written before the
rename ("schema" meant a felis file, a PostgreSQL namespace and a version at once). Nothing in dpdb
imports it; delete it once no branch in flight does."""

from __future__ import annotations

from dpdb.model.ddl import (
    VALIDITY_END,
    TableSpec,
    added_columns_ddl,
    catalog_ddl,
    column_type,
    meta_ddl,
    q3c_index_ddl,
    table_specs,
)
from dpdb.model.felis import (
    CATALOG_FELIS as CATALOG_SCHEMA,
)
from dpdb.model.felis import (
    META_FELIS as META_SCHEMA,
)
from dpdb.model.felis import (
    check_version,
    latest_version,
    load_felis_file,
    position_columns,
    versions,
)
from dpdb.model.felis import (
    load_felis as load_schema,
)
from dpdb.model.table import canonical_names

__all__ = [
    "CATALOG_SCHEMA",
    "META_SCHEMA",
    "VALIDITY_END",
    "TableSpec",
    "added_columns_ddl",
    "canonical_names",
    "catalog_ddl",
    "check_version",
    "column_type",
    "latest_version",
    "load_felis_file",
    "load_schema",
    "meta_ddl",
    "position_columns",
    "q3c_index_ddl",
    "table_specs",
    "versions",
]
